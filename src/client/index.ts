import type { TaskSubmission } from '../domain/inputs.js';
import { TaskSubmissionSchema, fieldIssues } from '../domain/inputs.js';
import { createKafka, topicNames } from '../adapters/kafka/topics.js';
import { ensureTopics } from '../adapters/kafka/ensureTopics.js';
import { runAgent } from './agentCore.js';
import { httpTransport } from './httpTransport.js';
import { kafkaTransport } from './kafkaTransport.js';
import type { AgentOptions } from './types.js';

export { PermanentTaskError } from './types.js';
export type { AgentOptions, TaskHandler, HandlerContext, Assignment, Cancellation } from './types.js';

/** Where an agent or producer reaches the dispatcher. */
export type Transport =
  | { transport: 'http'; url: string; /** Long-poll wait. Default 25000. */ pollWaitMs?: number }
  | { transport: 'kafka'; brokers: string[]; /** Topic prefix. Default `switchyard`. */ prefix?: string };

/**
 * An agent: registers (ready), heartbeats, calls `handler` once per assignment (duplicates from
 * at-least-once delivery are dropped by (taskId, attempt)), reports the outcome, aborts the
 * handler's signal when the task is cancelled, and on `stop()` finishes its work and leaves.
 */
export function createAgent(o: AgentOptions & Transport) {
  const transport = o.transport === 'http'
    ? httpTransport(o.url, o.agentId, o.pollWaitMs)
    : kafkaTransport(o.brokers, o.agentId, o.prefix);
  return runAgent(o, transport);
}

/** Thrown by `submitTask` for a submission the dispatcher would refuse; names each field. */
export class SubmissionError extends Error {
  constructor(readonly status: number, message: string, readonly body?: unknown) { super(message); }
}

/**
 * Submit a task. Over HTTP it resolves with `{id, status}` once the task is durable; over Kafka
 * once the record is on `<prefix>.tasks` (keyed by tenant) — the dispatcher then consumes it, or
 * dead-letters it with the reason. Either way it is validated here first.
 */
export async function submitTask(to: Transport, task: TaskSubmission): Promise<{ id?: string; status?: string }> {
  const v = TaskSubmissionSchema.safeParse(task);
  if (!v.success) throw new SubmissionError(400, fieldIssues(v.error).map((i) => `${i.path}: ${i.message}`).join('; '));
  if (to.transport === 'http') {
    const r = await fetch(`${to.url.replace(/\/$/, '')}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(task) });
    const body = await r.json() as { id?: string; status?: string; message?: string };
    if (r.status !== 202) throw new SubmissionError(r.status, body.message ?? `HTTP ${r.status}`, body);
    return body;
  }
  const kafka = createKafka(to.brokers, 'switchyard-producer');
  await ensureTopics(kafka, [topicNames(to.prefix).tasks]);
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
  await producer.connect();
  try {
    await producer.send({ topic: topicNames(to.prefix).tasks, acks: -1, messages: [{ key: task.tenant, value: JSON.stringify(task) }] });
  } finally {
    await producer.disconnect();
  }
  return { id: task.id };
}
