import type { Consumer, Producer } from 'kafkajs';
import type { Delivery } from '../runtime/delivery.js';
import { createKafka, topicNames } from '../adapters/kafka/topics.js';
import { ASSIGNMENT_MAX_MESSAGE_BYTES, ensureTopics } from '../adapters/kafka/ensureTopics.js';
import { trackJoins } from '../adapters/kafka/consumerJoins.js';
import type { AgentTransport } from './agentCore.js';

/**
 * The Kafka transport: reports (ready, heartbeat, complete, leave) go to `<prefix>.agents` keyed by
 * agent id; assignments and cancellations arrive on the agent's own `<prefix>.assignments.<agentId>`,
 * read_committed, so only what the dispatcher committed is seen.
 */
export function kafkaTransport(brokers: string[], agentId: string, prefix?: string): AgentTransport {
  const topics = topicNames(prefix);
  const kafka = createKafka(brokers, `switchyard-agent-${agentId}`);
  const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: true });
  // The agent's group has one member. When its process dies, the next one cannot join until the
  // dead member's session expires, and the assignments sent meanwhile wait: a 10 s session (not
  // kafkajs's 30 s) keeps that short.
  const consumer: Consumer = kafka.consumer({
    groupId: `${topics.prefix}.agent.${agentId}`, readUncommitted: false, allowAutoTopicCreation: true, maxWaitTimeInMs: 100,
    sessionTimeout: 10_000, heartbeatInterval: 1000,
  });
  let connected: Promise<void> | undefined;
  // A failed first attempt (the broker down) is not remembered: the next send tries again.
  const connect = () => (connected ??= producer.connect().catch((e: unknown) => { connected = undefined; throw e; }));
  let topicsReady: Promise<void> | undefined;
  const send = async (value: Record<string, unknown>) => {
    await (topicsReady ??= ensureTopics(kafka, [topics.agents]).catch((e: unknown) => { topicsReady = undefined; throw e; }));
    await connect();
    await producer.send({ topic: topics.agents, acks: -1, messages: [{ key: agentId, value: JSON.stringify({ ...value, agentId }) }] });
  };
  let registration: { capabilities: string[]; capacity: number } | undefined;
  return {
    ready: (capabilities, capacity) => {
      registration = { capabilities, capacity };
      return send({ kind: 'ready', ...registration });
    },
    // The heartbeat is a `ready`: over Kafka the agent never hears that the dispatcher refused a
    // heartbeat (it is dead-lettered), so an agent the dispatcher timed out (it was cut off, or the
    // dispatcher or broker was down longer than agentTimeoutMs and could not hear it) would wait
    // for work forever. A ready from a live agent with unchanged capabilities is recorded like a
    // heartbeat (coalesced the same way); from a timed-out one it registers the agent again.
    heartbeat: () => send(registration ? { kind: 'ready', ...registration } : { kind: 'heartbeat' }),
    complete: (taskId, body) => send({ kind: 'complete', taskId, ...body }),
    leave: () => send({ kind: 'leave' }),
    async receive(onDelivery, signal) {
      const topic = topics.assignments(agentId);
      // Created with room for large assignments; raising an existing one is the dispatcher's job.
      await ensureTopics(kafka, [topic], { maxMessageBytes: ASSIGNMENT_MAX_MESSAGE_BYTES, raiseExisting: false });
      // kafkajs restarts a crashed consumer only after an error it deems retriable. After others,
      // such as KafkaJSNonRetriableError "Failed to find group coordinator" while the broker
      // restarts, it stays stopped: the agent heartbeated on and was given work it never saw.
      // Such a crash ends this receive with its error, and the agent starts receiving again.
      let crashed: (error: Error) => void = () => undefined;
      const crash = new Promise<never>((_, reject) => { crashed = reject; });
      crash.catch(() => undefined);
      const removeCrash = consumer.on(consumer.events.CRASH, ({ payload }) => { if (!payload.restart) crashed(payload.error); });
      // A consumer restarting after a retriable crash joins its group again: the disconnect below
      // waits for that join to end (see trackJoins). `consumer.run` itself waits for the first one.
      const joins = trackJoins(consumer);
      let stopped: () => void = () => undefined;
      const stop = new Promise<void>((resolve) => { stopped = resolve; });
      try {
        await consumer.connect();
        await consumer.subscribe({ topics: [topic], fromBeginning: true });
        await consumer.run({ eachMessage: async ({ message }) => { if (message.value) onDelivery(JSON.parse(message.value.toString('utf8')) as Delivery); } });
        if (!signal.aborted) signal.addEventListener('abort', stopped, { once: true });
        else stopped();
        await Promise.race([crash, stop]);
      } finally {
        signal.removeEventListener('abort', stopped);
        await joins.idle(30_000);
        joins.dispose();
        removeCrash();
        await consumer.disconnect().catch(() => undefined);
      }
    },
    async close() {
      await consumer.disconnect().catch(() => undefined);
      if (connected) await producer.disconnect();
    },
  };
}
