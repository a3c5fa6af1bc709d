/**
 * Kafka for tests. The vitest globalSetup test/setup/kafkaGlobalSetup.ts finds or starts a broker
 * once per run and provides its address as `kafkaBrokers` ('' when there is none).
 *
 *   import { describeKafka, requireKafkaBrokers } from '../setup/kafka.js';
 *
 *   describeKafka('Kafka event bus', () => {
 *     const brokers = requireKafkaBrokers().split(',');
 *     ...
 *   });
 *
 * Without a broker the suite is reported as skipped; the globalSetup prints one loud
 * "KAFKA TESTS SKIPPED" line saying why (and under CI=true with Java and Maven present,
 * a broker that fails to start fails the run instead).
 */
import { describe, inject, it } from 'vitest';

declare module 'vitest' {
  export interface ProvidedContext {
    /** "host:port[,host:port]" of the Kafka broker(s) for this run, or '' when there is none. */
    kafkaBrokers: string;
  }
}

/**
 * The brokers of this run ("host:port[,host:port]"), or undefined when there is no Kafka.
 * Falls back to $KAFKA_BROKERS when the globalSetup is not configured.
 */
export function kafkaBrokers(): string | undefined {
  const provided = inject('kafkaBrokers') as string | undefined;
  const brokers = (provided || process.env.KAFKA_BROKERS || '').trim();
  return brokers === '' ? undefined : brokers;
}

/** Like kafkaBrokers(), but throws when there is no Kafka: for use inside describeKafka/itKafka. */
export function requireKafkaBrokers(): string {
  const brokers = kafkaBrokers();
  if (brokers === undefined) throw new Error('no Kafka broker for this run (see the KAFKA TESTS SKIPPED line)');
  return brokers;
}

/** `describe` when this run has a Kafka broker; skipped (reported as such) otherwise. */
export const describeKafka = describe.skipIf(kafkaBrokers() === undefined);

/** `it` when this run has a Kafka broker; skipped (reported as such) otherwise. */
export const itKafka = it.skipIf(kafkaBrokers() === undefined);
