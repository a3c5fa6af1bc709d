#!/usr/bin/env node
// Smoke check of a Kafka broker with kafkajs, the client Switchyard uses:
// create a topic, write one aborted and one committed transaction with a transactional,
// idempotent producer (maxInFlightRequests 1), and read the topic back with a
// read_committed consumer, which must see the committed records and none of the aborted.
//
//   node infra/kafka/smoke.mjs [brokers] [--verbose]
//     brokers: "host:port[,host:port]", default $KAFKA_BROKERS, else 127.0.0.1:9092
//     --verbose: show kafkajs's own log, which reports retried errors (coordinator loading,
//                CONCURRENT_TRANSACTIONS right after an abort) as ERROR lines
// Exits 0 and prints the timings on success, 1 with the reason otherwise.
/* global process, console, performance, setTimeout, clearTimeout */
import { Kafka, Partitioners, logLevel } from 'kafkajs';

const args = process.argv.slice(2);
const verbose = args.includes('--verbose');
const brokers = (args.find((a) => !a.startsWith('--')) ?? process.env.KAFKA_BROKERS ?? '127.0.0.1:9092')
  .split(',').map((b) => b.trim()).filter(Boolean);
const run = `${Date.now().toString(36)}-${process.pid}`;
const topic = `smoke-${run}`;
const COMMITTED = 5;
const DEADLINE_MS = 60_000;

const kafka = new Kafka({ clientId: `smoke-${run}`, brokers, logLevel: verbose ? logLevel.INFO : logLevel.NOTHING });
const t0 = performance.now();
const steps = [];
const step = async (name, fn) => {
  const s = performance.now();
  const r = await fn();
  steps.push(`${name} ${Math.round(performance.now() - s)} ms`);
  return r;
};

const admin = kafka.admin();
const producer = kafka.producer({
  transactionalId: `smoke-tx-${run}`,
  idempotent: true,
  maxInFlightRequests: 1,
  createPartitioner: Partitioners.DefaultPartitioner,
});
const consumer = kafka.consumer({ groupId: `smoke-group-${run}`, readUncommitted: false, maxWaitTimeInMs: 500 });

const timer = setTimeout(() => fail(new Error(`timed out after ${DEADLINE_MS} ms`)), DEADLINE_MS);
async function fail(err) {
  console.error(`SMOKE FAILED against ${brokers.join(',')}: ${err?.stack ?? err}`);
  await Promise.allSettled([consumer.disconnect(), producer.disconnect(), admin.disconnect()]);
  process.exit(1);
}

try {
  await step('admin connect', () => admin.connect());
  const cluster = await admin.describeCluster();
  await step('create topic', () =>
    admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }], waitForLeaders: true }));

  await step('producer connect', () => producer.connect());
  await step('aborted transaction', async () => {
    const tx = await producer.transaction();
    await tx.send({ topic, messages: [{ key: 'aborted', value: 'must not be seen' }] });
    await tx.abort();
  });
  await step('committed transaction', async () => {
    const tx = await producer.transaction();
    await tx.send({
      topic,
      messages: Array.from({ length: COMMITTED }, (_, i) => ({ key: `k${i}`, value: `committed-${i}` })),
    });
    await tx.commit();
  });

  const seen = [];
  await step('consume (read_committed)', async () => {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise((resolve, reject) => {
      consumer.run({
        eachMessage: async ({ message }) => {
          seen.push(message.value.toString());
          if (seen.length >= COMMITTED) resolve();
        },
      }).catch(reject);
    });
  });
  // A moment more, so a wrongly delivered aborted record would show up too.
  await new Promise((r) => setTimeout(r, 500));

  const expected = Array.from({ length: COMMITTED }, (_, i) => `committed-${i}`);
  if (JSON.stringify(seen) !== JSON.stringify(expected)) {
    throw new Error(`read_committed consumer saw ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
  }
  const end = await admin.fetchTopicOffsets(topic);
  await step('disconnect', () => Promise.all([consumer.disconnect(), producer.disconnect()]));
  await step('delete topic', () => admin.deleteTopics({ topics: [topic] }));

  clearTimeout(timer);
  await admin.disconnect();
  console.log(
    `SMOKE OK: ${brokers.join(',')} (${cluster.brokers.length} broker(s), controller ${cluster.controller}); ` +
      `topic ${topic}: ${seen.length} committed records read, aborted one hidden, ` +
      `high watermark ${end[0]?.high} (records + transaction markers)`,
  );
  console.log(`  ${steps.join(' | ')} | total ${Math.round(performance.now() - t0)} ms`);
  process.exit(0);
} catch (err) {
  await fail(err);
}
