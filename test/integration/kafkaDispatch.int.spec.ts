import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import kafkajs, { type Consumer, type Kafka, type Producer } from 'kafkajs';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/adapters/cli/startServer.js';
import { getKafkaEventLog } from '../../src/adapters/kafka/kafkaEventLog.js';
import { ASSIGNMENT_MAX_MESSAGE_BYTES } from '../../src/adapters/kafka/ensureTopics.js';
import { topicNames, type TopicNames } from '../../src/adapters/kafka/topics.js';
import { getSqliteEventLog } from '../../src/adapters/log/sqliteEventLog.js';
import { parsePolicy } from '../../src/domain/policy.js';
import type { EventLog } from '../../src/runtime/eventLog.js';
import { describeKafka, requireKafkaBrokers } from '../setup/kafka.js';

const { Kafka: KafkaClient, logLevel } = kafkajs;

interface Received { agentId: string; kind: string; taskId: string; attempt: number; priority?: string }

/** Raw kafkajs producers and consumers stand in for producers and agents: not our client. */
function rawKafka(brokers: string[]) {
  const kafka: Kafka = new KafkaClient({ clientId: 'raw-test', brokers, logLevel: logLevel.NOTHING });
  const producer: Producer = kafka.producer({ allowAutoTopicCreation: true });
  const consumers: Consumer[] = [];
  const received: Received[] = [];
  return {
    kafka,
    received,
    async start(topics: TopicNames) {
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [topics.tasks, topics.agents, topics.deadLetter].map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true }).catch(() => undefined);
      await admin.disconnect();
      await producer.connect();
    },
    async send(topic: string, values: (object | Buffer | string)[], key = 'k') {
      await producer.send({ topic, acks: -1, messages: values.map((v) => ({ key, value: Buffer.isBuffer(v) || typeof v === 'string' ? v : JSON.stringify(v) })) });
    },
    /** A read_committed consumer of an agent's assignment topic, as an agent would run it. */
    async agent(topics: TopicNames, agentId: string) {
      const c = kafka.consumer({ groupId: `raw-agent-${agentId}-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 50 });
      consumers.push(c);
      const admin = kafka.admin();
      await admin.connect();
      await admin.createTopics({ topics: [{ topic: topics.assignments(agentId), numPartitions: 1 }], waitForLeaders: true }).catch(() => undefined);
      await admin.disconnect();
      await c.connect();
      await c.subscribe({ topics: [topics.assignments(agentId)], fromBeginning: true });
      await c.run({ eachMessage: async ({ message }) => {
        const v = JSON.parse(message.value!.toString()) as { kind: string; taskId: string; attempt: number; priority?: string };
        received.push({ agentId, kind: v.kind, taskId: v.taskId, attempt: v.attempt, priority: v.priority });
      } });
    },
    async deadLetters(topics: TopicNames, n: number, timeoutMs = 20_000) {
      const c = kafka.consumer({ groupId: `raw-dlq-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 50 });
      consumers.push(c);
      const got: { value: Buffer | null; headers: Record<string, string> }[] = [];
      await c.connect();
      await c.subscribe({ topics: [topics.deadLetter], fromBeginning: true });
      await c.run({ eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        got.push({ value: message.value, headers });
      } });
      await waitUntil(() => got.length >= n, timeoutMs, () => `${got.length} of ${n} dead letters`);
      return got;
    },
    async stop() {
      await Promise.allSettled(consumers.map((c) => c.disconnect()));
      await producer.disconnect();
    },
  };
}

async function waitUntil(cond: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting: ${what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const backends: [string, (prefix: string, brokers: string[]) => EventLog][] = [
  ['the Kafka log (exactly once)', (prefix, brokers) => getKafkaEventLog({ brokers, prefix })],
  ['the SQLite log with Kafka beside it (outbox)', () => getSqliteEventLog({ path: join(mkdtempSync(join(tmpdir(), 'switchyard-kafka-')), 'log.db') })],
];

describeKafka.each(backends)('dispatch over Kafka topics only, on %s', (_name, openLog) => {
  let server: RunningServer | undefined;
  let raw: ReturnType<typeof rawKafka> | undefined;
  afterEach(async () => {
    await raw?.stop();
    await server?.close();
    server = undefined;
    raw = undefined;
  });

  async function start() {
    const brokers = requireKafkaBrokers().split(',');
    const prefix = `e${randomUUID().slice(0, 8)}`;
    const topics = topicNames(prefix);
    const fatal: Error[] = [];
    server = await startServer({
      log: openLog(prefix, brokers), policy: parsePolicy({ tickMs: 50 }), port: 0, logger: pino({ level: 'silent' }),
      kafka: { brokers, prefix }, onFatal: (e) => fatal.push(e),
    });
    raw = rawKafka(brokers);
    await raw.start(topics);
    return { topics, raw, fatal, server };
  }

  it('routes by capability and priority, delivers each (taskId, attempt) once, and dead-letters bad records', async () => {
    const { topics, raw, fatal, server: srv } = await start();
    await raw.agent(topics, 'a1');
    await raw.agent(topics, 'a2');
    await raw.send(topics.agents, [{ kind: 'ready', agentId: 'a1', capabilities: ['x'], capacity: 1 }], 'a1');
    await raw.send(topics.agents, [{ kind: 'ready', agentId: 'a2', capabilities: ['x', 'y'], capacity: 1 }], 'a2');
    await waitUntil(() => srv.runtime.state.agents.size === 2, 20_000, () => `${srv.runtime.state.agents.size} agents registered`);

    // Both agents get one task each; then a backlog of mixed priorities waits for them.
    await raw.send(topics.tasks, [
      { id: 'first-x', tenant: 't1', source: 'api', type: 'job', requires: ['x'] },
      { id: 'needs-y', tenant: 't1', source: 'api', type: 'job', requires: ['y'] },
    ], 't1');
    await waitUntil(() => raw.received.length >= 2, 20_000, () => JSON.stringify(raw.received));
    expect(raw.received.find((r) => r.taskId === 'needs-y')?.agentId).toBe('a2');
    await raw.send(topics.tasks, [
      { id: 'low-1', tenant: 't1', source: 'api', type: 'job', priority: 'low', requires: ['x'] },
      { id: 'normal-1', tenant: 't1', source: 'api', type: 'job', priority: 'normal', requires: ['x'] },
      { id: 'critical-1', tenant: 't1', source: 'api', type: 'job', priority: 'critical', requires: ['x'] },
    ], 't1');
    await waitUntil(() => srv.runtime.state.readyAt.reduce((a, b) => a + b, 0) === 3, 20_000, () => 'backlog queued');

    // Junk on both input topics: none of it stops the dispatcher.
    await raw.send(topics.tasks, ['{not json', { tenant: 't1', source: 'api', type: 'job', bogus: 1 }, Buffer.from([0xff, 0xfe, 0x00])], 't1');
    await raw.send(topics.agents, [{ kind: 'complete', agentId: 'a1', taskId: 'no-such-task', attempt: 1, outcome: 'succeeded' }, { kind: 'dance' }], 'a1');

    // a1 completes its task: the critical one goes next, then normal, then low.
    const a1first = raw.received.find((r) => r.agentId === 'a1')!;
    await raw.send(topics.agents, [{ kind: 'complete', agentId: 'a1', taskId: a1first.taskId, attempt: 1, outcome: 'succeeded' }], 'a1');
    await waitUntil(() => raw.received.length >= 3, 20_000, () => JSON.stringify(raw.received));
    const third = raw.received[2];
    expect(third.taskId).toBe('critical-1');
    await raw.send(topics.agents, [{ kind: 'complete', agentId: third.agentId, taskId: 'critical-1', attempt: 1, outcome: 'succeeded' }], third.agentId);
    await waitUntil(() => raw.received.length >= 4, 20_000, () => JSON.stringify(raw.received));
    expect(raw.received[3].taskId).toBe('normal-1');
    const needsY = raw.received.find((r) => r.taskId === 'needs-y')!;
    await raw.send(topics.agents, [{ kind: 'complete', agentId: 'a2', taskId: 'needs-y', attempt: needsY.attempt, outcome: 'succeeded' }], 'a2');
    await waitUntil(() => raw.received.length >= 5, 20_000, () => JSON.stringify(raw.received));
    expect(raw.received[4].taskId).toBe('low-1');

    const dead = await raw.deadLetters(topics, 5);
    const reasons = dead.map((d) => d.headers['switchyard-error']);
    expect(reasons).toEqual(expect.arrayContaining([
      expect.stringMatching(/not JSON/),
      expect.stringMatching(/bogus: unknown field/),
      expect.stringMatching(/not valid UTF-8/),
      expect.stringMatching(/unknown task no-such-task/),
      expect.stringMatching(/kind/),
    ]));
    // The original bytes are kept.
    expect(dead.some((d) => d.value?.equals(Buffer.from([0xff, 0xfe, 0x00])))).toBe(true);

    // Every (taskId, attempt) reached exactly one agent, exactly once.
    const keys = raw.received.map((r) => `${r.taskId}#${r.attempt}`);
    expect(new Set(keys).size).toBe(keys.length);
    // requires ⊆ capabilities on every assignment.
    for (const r of raw.received) if (r.taskId === 'needs-y') expect(r.agentId).toBe('a2');
    expect(fatal).toEqual([]);
  }, 90_000);

  it('delivers assignments near the intake limit, several to one agent in one commit, to a topic the agent made with the broker default', async () => {
    const { topics, raw, fatal, server: srv } = await start();
    // The agent's consumer creates its topic first, with the broker's 1 MiB max.message.bytes.
    await raw.agent(topics, 'big');
    // Each record fits the tasks topic (1 MiB). Queued before the agent is ready, the three are
    // assigned by one decision, in one commit: a 2.4 MB record batch to one topic, which the
    // broker refused whole, and the dispatcher stopped.
    const payload = { blob: 'p'.repeat(800 * 1024) };
    for (const id of ['big-1', 'big-2', 'big-3']) {
      await raw.send(topics.tasks, [{ id, tenant: 't1', source: 'api', type: 'job', requires: ['x'], payload }], 't1');
    }
    await waitUntil(() => srv.runtime.state.readyAt.reduce((a, b) => a + b, 0) === 3, 30_000, () => 'three large tasks queued');
    await raw.send(topics.agents, [{ kind: 'ready', agentId: 'big', capabilities: ['x'], capacity: 3 }], 'big');
    await waitUntil(() => raw.received.length >= 3 || fatal.length > 0, 60_000, () => `${raw.received.length} of 3 large assignments`);
    expect(fatal).toEqual([]);
    expect(raw.received.map((r) => r.taskId).sort()).toEqual(['big-1', 'big-2', 'big-3']);

    // The dispatcher raised the agent's topic to room for large assignments.
    const admin = raw.kafka.admin();
    await admin.connect();
    try {
      const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: kafkajs.ConfigResourceTypes.TOPIC, name: topics.assignments('big'), configNames: ['max.message.bytes'] }] });
      expect(Number(described.resources[0].configEntries[0].configValue)).toBe(ASSIGNMENT_MAX_MESSAGE_BYTES);
    } finally {
      await admin.disconnect();
    }
  }, 90_000);
});
