import type { Consumer, Producer } from 'kafkajs';
import type { Delivery } from '../runtime/delivery.js';
import { createKafka, topicNames } from '../adapters/kafka/topics.js';
import { ASSIGNMENT_MAX_MESSAGE_BYTES, ensureTopics } from '../adapters/kafka/ensureTopics.js';
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
  const consumer: Consumer = kafka.consumer({ groupId: `${topics.prefix}.agent.${agentId}`, readUncommitted: false, allowAutoTopicCreation: true, maxWaitTimeInMs: 100 });
  let connected: Promise<void> | undefined;
  const connect = () => (connected ??= producer.connect());
  let ready: Promise<void> | undefined;
  const send = async (value: Record<string, unknown>) => {
    await (ready ??= ensureTopics(kafka, [topics.agents]));
    await connect();
    await producer.send({ topic: topics.agents, acks: -1, messages: [{ key: agentId, value: JSON.stringify({ ...value, agentId }) }] });
  };
  return {
    ready: (capabilities, capacity) => send({ kind: 'ready', capabilities, capacity }),
    heartbeat: () => send({ kind: 'heartbeat' }),
    complete: (taskId, body) => send({ kind: 'complete', taskId, ...body }),
    leave: () => send({ kind: 'leave' }),
    async receive(onDelivery, signal) {
      const topic = topics.assignments(agentId);
      // Created with room for large assignments; raising an existing one is the dispatcher's job.
      await ensureTopics(kafka, [topic], { maxMessageBytes: ASSIGNMENT_MAX_MESSAGE_BYTES, raiseExisting: false });
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({ eachMessage: async ({ message }) => { if (message.value) onDelivery(JSON.parse(message.value.toString('utf8')) as Delivery); } });
      await new Promise<void>((resolve) => { if (signal.aborted) resolve(); else signal.addEventListener('abort', () => resolve(), { once: true }); });
      await consumer.disconnect();
    },
    async close() {
      await consumer.disconnect().catch(() => undefined);
      if (connected) await producer.disconnect();
    },
  };
}
