import type { Consumer, KafkaMessage } from 'kafkajs';
import type { Logger } from 'pino';
import { DomainError } from '../../domain/errors.js';
import { AgentMessageSchema, TaskSubmissionSchema, fieldIssues, type FieldIssue } from '../../domain/inputs.js';
import { DispatchError } from '../../runtime/errors.js';
import type { EventLog, InputOffset, OutboxMessage } from '../../runtime/eventLog.js';
import type { CommandSource } from '../../runtime/dispatcherRuntime.js';
import type { DispatchService } from '../../runtime/service.js';
import { unsafeJson } from '../http/app.js';
import { ensureTopics } from './ensureTopics.js';
import { createKafka, type TopicNames } from './topics.js';

/** Options of {@link createKafkaIngress}. */
export interface KafkaIngressOptions {
  brokers: string[];
  topics: TopicNames;
  service: DispatchService;
  log: EventLog;
  logger: Logger;
  /** Consumer group of the ingress. Default `<prefix>.ingress.<shard>`. */
  groupId?: string;
  shard?: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * max.message.bytes of the dead-letter topic when the ingress creates it. A dead letter is its
 * record plus headers, so one of a record near the broker's 1 MB default did not fit a topic with
 * that default, and the dead letters of one batch go out in one produce request (one record batch):
 * on a Kafka log the transaction failed and the dispatcher stopped. The records of one commit are
 * at most two fetches (about 1 MiB each) plus up to ~4 KiB of headers for each of 2000 commands.
 */
export const DEAD_LETTER_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

type Parsed =
  | { ok: true; topic: 'tasks'; value: ReturnType<typeof TaskSubmissionSchema.parse> }
  | { ok: true; topic: 'agents'; value: ReturnType<typeof AgentMessageSchema.parse> }
  | { ok: false; issues: FieldIssue[] };

/** Validate a record with the same schemas as HTTP. */
export function parseRecord(kind: 'tasks' | 'agents', value: Buffer | null): Parsed {
  if (value === null) return { ok: false, issues: [{ path: 'value', message: 'is empty (a tombstone)' }] };
  let text: string;
  try { text = utf8.decode(value); } catch { return { ok: false, issues: [{ path: 'value', message: 'is not valid UTF-8' }] }; }
  let json: unknown;
  try { json = JSON.parse(text); } catch (e) { return { ok: false, issues: [{ path: 'value', message: `is not JSON: ${(e as Error).message}` }] }; }
  // Too deep for the validator (a stack overflow here stopped the ingress for good), or keys HTTP refuses.
  const unsafe = unsafeJson(json);
  if (unsafe) return { ok: false, issues: [unsafe] };
  if (kind === 'tasks') {
    const r = TaskSubmissionSchema.safeParse(json);
    return r.success ? { ok: true, topic: 'tasks', value: r.data } : { ok: false, issues: fieldIssues(r.error) };
  }
  const r = AgentMessageSchema.safeParse(json);
  return r.success ? { ok: true, topic: 'agents', value: r.data } : { ok: false, issues: fieldIssues(r.error) };
}

/** A dead-letter record: the original bytes as value, the reason in headers. */
export function deadLetter(topics: TopicNames, source: { topic: string; partition: number; message: KafkaMessage }, code: string, error: string): OutboxMessage {
  const m = source.message;
  return {
    topic: topics.deadLetter,
    key: m.key?.toString('utf8') ?? '',
    value: m.value ?? Buffer.alloc(0),
    headers: {
      'switchyard-error': error.slice(0, 4000),
      'switchyard-error-code': code,
      'switchyard-source-topic': source.topic,
      'switchyard-source-partition': String(source.partition),
      'switchyard-source-offset': m.offset,
    },
  };
}

/**
 * Ingress from Kafka: submissions on `<prefix>.tasks`, agent reports on `<prefix>.agents`.
 * Each record is validated with the HTTP schemas; an invalid or refused one goes to the
 * dead-letter topic with its reason — never a crash, never a silent drop. A record's offset is
 * committed only once its facts are durable: in the log's own transaction on a Kafka log
 * (exactly once), after the append otherwise (at least once; a submission without an id gets one
 * derived from its topic, partition and offset, so a redelivery is a duplicate, not a new task).
 */
export function createKafkaIngress(o: KafkaIngressOptions) {
  const groupId = o.groupId ?? `${o.topics.prefix}.ingress.${o.shard ?? 'main'}`;
  const kafka = createKafka(o.brokers, 'switchyard-ingress');
  const consumer: Consumer = kafka.consumer({ groupId, readUncommitted: false, sessionTimeout: 10_000, heartbeatInterval: 1000, allowAutoTopicCreation: true });
  const { service, topics } = o;
  let records = 0;
  let stopped = false;
  let restartTimer: NodeJS.Timeout | undefined;
  let deadLettered = 0;

  async function one(topic: string, partition: number, message: KafkaMessage): Promise<void> {
    const input: InputOffset = { groupId, topic, partition, offset: (BigInt(message.offset) + 1n).toString() };
    const parsed = parseRecord(topic === topics.tasks ? 'tasks' : 'agents', message.value);
    const dl = (code: string, error: string) => { deadLettered++; return [deadLetter(topics, { topic, partition, message }, code, error)]; };
    if (!parsed.ok) {
      await service.runtime.passThrough(input, dl('validation', parsed.issues.map((i) => `${i.path}: ${i.message}`).join('; ')));
      return;
    }
    const source: CommandSource = {
      input,
      onRefused: (err) => dl((err as DispatchError | DomainError).code ?? 'refused', err.message),
    };
    try {
      if (parsed.topic === 'tasks') {
        await service.submit(parsed.value, { ...source, defaultId: `${topic}-${partition}-${message.offset}` });
        return;
      }
      const m = parsed.value;
      switch (m.kind) {
        case 'ready': await service.ready(m.agentId, { capabilities: m.capabilities, capacity: m.capacity }, source); return;
        case 'heartbeat': await service.heartbeat(m.agentId, source); return;
        case 'leave': await service.leave(m.agentId, source); return;
        case 'complete': {
          const { kind: _k, taskId, ...c } = m;
          await service.complete(taskId, c, source);
          return;
        }
      }
    } catch (e) {
      // Refusals were dead-lettered in the same commit; only a stopped dispatcher is an error here.
      if (e instanceof DispatchError && e.code === 'unavailable') throw e;
      if (!(e instanceof DispatchError || e instanceof DomainError)) throw e;
    }
  }

  return {
    groupId,
    stats: () => ({ records, deadLettered }),
    async start(): Promise<void> {
      // Room for large dead letters; an existing topic with less is raised.
      await ensureTopics(kafka, [topics.deadLetter], { maxMessageBytes: DEAD_LETTER_MAX_MESSAGE_BYTES, logger: o.logger });
      await ensureTopics(kafka, [topics.tasks, topics.agents]);
      // kafkajs restarts a crashed consumer only after an error it deems retriable. Others, such
      // as KafkaJSGroupCoordinatorNotFound while the broker restarts, leave it stopped for good:
      // the dispatcher served HTTP on but read no submission or agent report again, so agents over
      // Kafka were timed out and Kafka submissions waited forever. Start it again instead.
      consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (payload.restart || stopped) return;
        o.logger.warn({ err: payload.error }, 'the Kafka ingress consumer stopped on an error kafkajs does not retry: starting it again');
        restartSoon(1000);
      });
      await runConsumer();
    },
    async stop(): Promise<void> {
      stopped = true;
      if (restartTimer) clearTimeout(restartTimer);
      await consumer.disconnect();
    },
  };

  function restartSoon(delayMs: number): void {
    if (stopped || restartTimer) return;
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      if (stopped) return;
      runConsumer().catch((err: unknown) => {
        o.logger.warn({ err }, 'the Kafka ingress consumer did not start again; retrying');
        restartSoon(Math.min(10_000, delayMs * 2));
      });
    }, delayMs);
  }

  async function runConsumer(): Promise<void> {
    await consumer.connect();
    await consumer.subscribe({ topics: [topics.tasks, topics.agents], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 2,
      eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
        if (batch.messages.length === 0) return;
        // Decided together: the dispatcher batches them into one commit. That commit can take
        // a while (a snapshot, a slow broker, a standby taking over); the group must not think
        // this consumer dead meanwhile, or it rebalances and nothing is read for many seconds.
        const beat = setInterval(() => { heartbeat().catch(() => undefined); }, 1000);
        try {
          await Promise.all(batch.messages.map((m) => one(batch.topic, batch.partition, m)));
        } finally {
          clearInterval(beat);
        }
        records += batch.messages.length;
        const last = batch.messages[batch.messages.length - 1].offset;
        resolveOffset(last);
        if (!o.log.transactionalOutbox && isRunning() && !isStale()) {
          await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last) + 1n).toString() }]);
        }
        await heartbeat();
      },
    });
  }
}
