import type { Logger } from 'pino';
import type { Producer } from 'kafkajs';
import type { DispatchEvent } from '../../domain/events.js';
import type { DispatcherState } from '../../domain/state.js';
import type { Cancellation } from '../../runtime/delivery.js';
import { assignmentOf } from '../../runtime/dispatcherRuntime.js';
import type { EventLog, OutboxMessage } from '../../runtime/eventLog.js';
import { ASSIGNMENT_MAX_MESSAGE_BYTES, chunkTopicMessages, ensureTopics } from './ensureTopics.js';
import { createKafka, type TopicNames } from './topics.js';

/**
 * Egress: an assignment, or the cancellation of a running task, as a message on the agent's own
 * topic `<prefix>.assignments.<agentId>`, keyed by task id. Every message carries (taskId, attempt),
 * so an agent drops one it already has.
 */
export function assignmentMessages(topics: TopicNames) {
  return (e: DispatchEvent, s: DispatcherState): OutboxMessage | undefined => {
    if (e.type === 'TaskAssigned') {
      const value = assignmentOf(s, e.taskId, e.at, e.attempt);
      return { topic: topics.assignments(e.agentId), key: e.taskId, value: JSON.stringify(value), headers: { kind: 'assignment', attempt: String(e.attempt) } };
    }
    if (e.type === 'TaskCancelled' && e.agentId) {
      const t = s.tasks.get(e.taskId);
      const value: Cancellation = { kind: 'cancellation', taskId: e.taskId, attempt: t?.attempt ?? 0, reason: e.reason, cancelledAt: new Date(e.at).toISOString() };
      return { topic: topics.assignments(e.agentId), key: e.taskId, value: JSON.stringify(value), headers: { kind: 'cancellation', attempt: String(value.attempt) } };
    }
    return undefined;
  };
}

/**
 * Relays the outbox of a log that cannot publish in its own commit (SQLite) to Kafka: at least
 * once, in order. A message is marked relayed only after Kafka acknowledged it; after a crash
 * the unmarked ones are sent again, and agents drop the (taskId, attempt) they already have.
 */
export function createOutboxRelay(o: { log: EventLog; brokers: string[]; logger: Logger; batch?: number }) {
  const kafka = createKafka(o.brokers, 'switchyard-outbox');
  const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
  const batch = o.batch ?? 500;
  /** Topics made ready for large messages by this relay (once each). */
  const readyTopics = new Set<string>();
  let running = false;
  let again = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;

  async function drain(): Promise<void> {
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        for (;;) {
          if (closed) return;
          const pending = await o.log.readOutbox!(batch);
          if (pending.length === 0) break;
          const fresh = [...new Set(pending.map((m) => m.topic))].filter((t) => !readyTopics.has(t));
          if (fresh.length > 0) {
            await ensureTopics(kafka, fresh, { maxMessageBytes: ASSIGNMENT_MAX_MESSAGE_BYTES, logger: o.logger });
            for (const t of fresh) readyTopics.add(t);
          }
          // In order, in requests small enough that no record batch outgrows its topic's limit.
          const messages = pending.map((m) => ({ topic: m.topic, message: { key: m.key, value: m.value, headers: m.headers } }));
          for (const topicMessages of chunkTopicMessages(messages)) await producer.sendBatch({ acks: -1, topicMessages });
          await o.log.markRelayed!(pending.map((m) => m.id));
          if (pending.length < batch) break;
        }
      } while (again);
    } catch (err) {
      o.logger.warn({ err }, 'outbox relay failed; retrying');
      timer = setTimeout(() => { void drain(); }, 1000);
    } finally {
      running = false;
    }
  }

  return {
    async start(): Promise<void> {
      if (!o.log.readOutbox || !o.log.markRelayed) throw new Error(`the ${o.log.kind} log has no outbox to relay`);
      await producer.connect();
      void drain();
    },
    /** Something was stored: relay it now. */
    wake(): void { void drain(); },
    async stop(): Promise<void> {
      closed = true;
      if (timer) clearTimeout(timer);
      while (running) await new Promise((r) => setTimeout(r, 10));
      await producer.disconnect();
    },
  };
}
