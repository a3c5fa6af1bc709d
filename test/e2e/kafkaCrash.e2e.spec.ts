import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import kafkajs, { type Consumer, type Producer } from 'kafkajs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { topicNames, type TopicNames } from '../../src/adapters/kafka/topics.js';
import { freePort, requireBuild, runCli, startCli, waitForHttp, type Child } from '../helpers/processes.js';
import { describeKafka, requireKafkaBrokers } from '../setup/kafka.js';

const { Kafka, logLevel } = kafkajs;

/**
 * Producers and agents are raw kafkajs clients. Agents read their assignment topics read_committed
 * and complete each assignment after a short "work"; they record every (taskId, attempt) they see.
 */
async function fleet(brokers: string[], topics: TopicNames, agentIds: string[]) {
  const kafka = new Kafka({ clientId: 'crash-test', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [topics.tasks, topics.agents, topics.deadLetter, ...agentIds.map((a) => topics.assignments(a))].map((topic) => ({ topic, numPartitions: 1 })),
    waitForLeaders: true,
  });
  await admin.disconnect();
  const producer: Producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const seen: string[] = [];
  const consumers: Consumer[] = [];
  const send = (topic: string, key: string, value: object) => producer.send({ topic, acks: -1, messages: [{ key, value: JSON.stringify(value) }] });
  for (const agentId of agentIds) {
    const c = kafka.consumer({ groupId: `agent-${agentId}-${randomUUID()}`, readUncommitted: false, maxWaitTimeInMs: 50 });
    consumers.push(c);
    await c.connect();
    await c.subscribe({ topics: [topics.assignments(agentId)], fromBeginning: true });
    await c.run({ eachMessage: async ({ message }) => {
      const a = JSON.parse(message.value!.toString()) as { kind: string; taskId: string; attempt: number };
      if (a.kind !== 'assignment') return;
      seen.push(`${a.taskId}#${a.attempt}`);
      setTimeout(() => { send(topics.agents, agentId, { kind: 'complete', agentId, taskId: a.taskId, attempt: a.attempt, outcome: 'succeeded' }).catch(() => undefined); }, 20);
    } });
  }
  const heartbeats = setInterval(() => { for (const a of agentIds) send(topics.agents, a, { kind: 'heartbeat', agentId: a }).catch(() => undefined); }, 1000);
  return {
    seen,
    send,
    async ready() { for (const a of agentIds) await send(topics.agents, a, { kind: 'ready', agentId: a, capabilities: ['x'], capacity: 2 }); },
    async stop() {
      clearInterval(heartbeats);
      await Promise.allSettled(consumers.map((c) => c.disconnect()));
      await producer.disconnect();
    },
  };
}

async function statusOf(base: string, id: string): Promise<string | undefined> {
  try {
    const r = await fetch(`${base}/v1/tasks/${id}`);
    return r.status === 200 ? ((await r.json()) as { status: string }).status : undefined;
  } catch { return undefined; }
}

async function waitAllSucceeded(base: string, ids: string[], timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  const pending = new Set(ids);
  while (pending.size > 0) {
    for (const id of [...pending]) if ((await statusOf(base, id)) === 'succeeded') pending.delete(id);
    if (pending.size === 0) return;
    if (Date.now() > until) throw new Error(`${pending.size} tasks not succeeded, e.g. ${[...pending].slice(0, 5).join(', ')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describeKafka('the dispatcher on a Kafka log, killed with SIGKILL', () => {
  const children: Child[] = [];
  let brokers: string;
  beforeAll(() => { requireBuild(); brokers = requireKafkaBrokers(); });
  afterAll(() => { for (const c of children) c.proc.kill('SIGKILL'); });

  const serve = (prefix: string, port: number, env: Record<string, string> = {}) => {
    const c = startCli(['serve', '--log', `kafka:${brokers}`, '--topic-prefix', prefix, '--data', mkdtempSync(join(tmpdir(), 'sy-kafka-')), '--port', String(port)], env);
    children.push(c);
    return c;
  };

  it('loses no acknowledged task and delivers each (taskId, attempt) exactly once across crashes, including mid-transaction', async () => {
    const prefix = `k${randomUUID().slice(0, 8)}`;
    const topics = topicNames(prefix);
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const f = await fleet(brokers.split(','), topics, ['a1', 'a2', 'a3']);
    try {
      // 1: dies inside its 12th transaction, after the sends and before the commit.
      const first = serve(prefix, port, { SWITCHYARD_KILL_BEFORE_COMMIT: '12' });
      await f.ready();
      const ids: string[] = [];
      const produce = async (n: number) => {
        for (let i = 0; i < n; i++) {
          const id = `task-${ids.length}`;
          await f.send(topics.tasks, 'tenant-a', { id, tenant: 'tenant-a', source: 'api', type: 'job', requires: ['x'] });
          ids.push(id); // acknowledged by Kafka (acks=all): it must not be lost
        }
      };
      await produce(60);
      await first.exited;
      expect(first.proc.signalCode, first.output()).toBe('SIGKILL');
      // 2: killed from outside while under load.
      const second = serve(prefix, port);
      const more = produce(90);
      await waitForHttp(`${base}/healthz`, 60_000, second);
      await new Promise((r) => setTimeout(r, 800));
      second.proc.kill('SIGKILL');
      await second.exited;
      await more;
      // 3: runs to the end.
      const third = serve(prefix, port);
      await waitForHttp(`${base}/healthz`, 60_000, third);
      await waitAllSucceeded(base, ids, 60_000);
      // Nothing was delivered twice to the agents' read_committed consumers.
      const dup = f.seen.filter((k, i) => f.seen.indexOf(k) !== i);
      expect(dup).toEqual([]);
      expect(new Set(f.seen.map((k) => k.split('#')[0])).size).toBe(ids.length);
      third.proc.kill('SIGTERM');
      await third.exited;
      const v = await runCli(['verify', '--log', `kafka:${brokers}`, '--topic-prefix', prefix]);
      expect(v.output).toMatch(/verify: identical/);
    } finally {
      await f.stop();
    }
  }, 240_000);

  it('fails over to a hot standby within seconds, and a revived leader only stands by', async () => {
    const prefix = `f${randomUUID().slice(0, 8)}`;
    const topics = topicNames(prefix);
    const [pA, pB] = [await freePort(), await freePort()];
    const f = await fleet(brokers.split(','), topics, ['a1', 'a2']);
    try {
      const leader = serve(prefix, pA);
      await waitForHttp(`http://127.0.0.1:${pA}/healthz`, 60_000, leader);
      const standby = serve(prefix, pB);
      await f.ready();
      const ids = Array.from({ length: 40 }, (_, i) => `fo-${i}`);
      for (const id of ids.slice(0, 20)) await f.send(topics.tasks, 't', { id, tenant: 't', source: 'api', type: 'job', requires: ['x'] });
      await waitAllSucceeded(`http://127.0.0.1:${pA}`, ids.slice(0, 20), 60_000);
      // The standby does not serve while the leader lives.
      expect(await statusOf(`http://127.0.0.1:${pB}`, ids[0])).toBeUndefined();
      const killedAt = Date.now();
      leader.proc.kill('SIGKILL');
      for (const id of ids.slice(20)) await f.send(topics.tasks, 't', { id, tenant: 't', source: 'api', type: 'job', requires: ['x'] });
      await waitForHttp(`http://127.0.0.1:${pB}/healthz`, 60_000, standby);
      const takeoverMs = Date.now() - killedAt;
      process.stdout.write(`failover: the standby answered ${takeoverMs} ms after the leader was killed\n`);
      expect(takeoverMs).toBeLessThan(30_000);
      await waitAllSucceeded(`http://127.0.0.1:${pB}`, ids, 60_000);
      const dup = f.seen.filter((k, i) => f.seen.indexOf(k) !== i);
      expect(dup).toEqual([]);
      // The old leader comes back: it waits as a standby and writes nothing.
      const revived = serve(prefix, pA);
      // It learns it is not the writer only after the election's busy timeout: wait for it to say so.
      const until = Date.now() + 30_000;
      while (!/standing by/.test(revived.output()) && revived.proc.exitCode === null && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(revived.output()).toMatch(/standing by/);
      expect(revived.proc.exitCode).toBeNull();
      expect(await statusOf(`http://127.0.0.1:${pA}`, ids[0])).toBeUndefined();
    } finally {
      await f.stop();
    }
  }, 240_000);
});
