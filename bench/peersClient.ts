import kafkajs, { type Consumer, type Producer } from 'kafkajs';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { httpCaller } from './httpCall.js';
import { makeWorkload, submission, type SystemName, type WorkloadSpec } from './peersWorkload.js';
import { sleep } from './support.js';

// kafkajs is CommonJS: Node's ESM loader finds only some of its exports by name.
const { Kafka, logLevel, Partitioners } = kafkajs;

/**
 * Producers and simulated agents of the peer benchmark, for one system, in their own process (so
 * that their CPU is not the dispatcher's). Started by `peers.ts` with a {@link PeersClientConfig}
 * as argv[2] (IPC with `serialization: 'advanced'`):
 *
 *   ← {kind: 'log', line}
 *   ← {kind: 'ready'}        agents connected and registered   → {cmd: 'go'}
 *   ← {kind: 'result', …}    every task finished (or the run timed out)
 *
 * Every system gets the same tasks at the same offsets from `go` (open loop: a submission is
 * sent when it is due, whatever the system answered before), and every agent has capacity 1:
 * it holds one task for the task's duration, then reports it done and only then takes the next.
 *
 * - `embedded`: HTTP to a Switchyard server; agents long-poll their assignments.
 * - `kafka`: submissions to `<prefix>.tasks`; each agent's assignments on its own topic, completions
 *   and keep-alives to `<prefix>.agents` (raw kafkajs, as bench/kafkaClient.ts).
 * - `bullmq`: one BullMQ queue per requirement set, the task's priority as the job's `priority`.
 * - `naive`: one shared BullMQ queue, no priorities; each agent takes the next task, whatever it needs.
 */

export interface PeersClientConfig {
  system: SystemName;
  spec: WorkloadSpec;
  /** embedded: the server's base URL. */
  url?: string;
  /** kafka: the brokers and the topic prefix the dispatcher uses. */
  brokers?: string[];
  prefix?: string;
  /** bullmq, naive: the Redis server and a prefix for this run's queue names. */
  redis?: { host: string; port: number };
  queuePrefix?: string;
  /** bullmq, naive: an idle agent polls its queues again after 5, 10, 20 … ms, at most this. */
  pollMaxMs: number;
  /** Give up waiting for the last tasks this long after the last arrival. */
  drainTimeoutMs: number;
}

export interface PeersClientResult {
  kind: 'result';
  /** Epoch ms of `go`: arrival offsets count from it. */
  t0: number;
  /** Per task (index = task number), epoch ms, NaN = never. */
  sentAt: Float64Array;
  /** When the system acknowledged the submission (202, broker ack, addBulk resolved). */
  visibleAt: Float64Array;
  /** When an agent got it (the first time). */
  startAt: Float64Array;
  /** When the agent finished working on it (before reporting it). */
  doneAt: Float64Array;
  agent: Int32Array;
  /** Submissions the system refused or that failed, by reason. */
  refused: Record<string, number>;
  /** Deliveries of a (task, attempt) the agent already had; tasks handed out a second time. */
  duplicates: number;
  reassigned: number;
  /** Failed reports (completions, heartbeats) and other transport errors. */
  errors: number;
  /** embedded: every non-2xx answer by status (refused submissions, re-registrations after 404/409 included). */
  httpFailures: Record<string, number>;
  timedOut: boolean;
  clientCpuMs: number;
  /** Requests made (HTTP) or Redis fetch attempts made (BullMQ: getNextJob calls, empty ones included). */
  requests: number;
  emptyPolls: number;
}

interface AssignmentMsg { kind: string; taskId: string; attempt: number }

const cfg = JSON.parse(process.argv[2] ?? '{}') as PeersClientConfig;
const w = makeWorkload(cfg.spec);
const N = cfg.spec.tasks;
const agentIds = w.fleet.agents.map((a) => a.id);
const wall = (): number => performance.timeOrigin + performance.now();
const say = (line: string): void => { process.send?.({ kind: 'log', line }); };

const sentAt = new Float64Array(N).fill(NaN);
const visibleAt = new Float64Array(N).fill(NaN);
const startAt = new Float64Array(N).fill(NaN);
const doneAt = new Float64Array(N).fill(NaN);
const agentOf = new Int32Array(N).fill(-1);
const refused: Record<string, number> = {};
let duplicates = 0;
let reassigned = 0;
let errors = 0;
let requests = 0;
let emptyPolls = 0;
let finished = 0;
let stopping = false;
let t0 = 0;
let allDone: () => void = () => undefined;
const everythingDone = new Promise<void>((r) => { allDone = r; });

function refuse(reason: string, n: number): void {
  refused[reason] = (refused[reason] ?? 0) + n;
  finished += n;
  if (finished >= N) allDone();
}

/** Agent `a` got task `i`: the first time it counts as the task's start; a second one is a re-assignment. */
function begin(i: number, a: number): void {
  if (!Number.isNaN(startAt[i])) { reassigned++; return; }
  startAt[i] = wall();
  agentOf[i] = a;
}

function workDone(i: number): void {
  if (!Number.isNaN(doneAt[i])) return;
  doneAt[i] = wall();
  finished++;
  if (finished >= N) allDone();
}

/** Open loop: hand every task to `submit` when its offset from t0 is due, in due-time batches. */
async function produce(submit: (due: number[]) => void): Promise<void> {
  let next = 0;
  while (next < N) {
    const now = wall() - t0;
    const due: number[] = [];
    while (next < N && w.arrivalMs[next] <= now) due.push(next++);
    if (due.length > 0) {
      const at = wall();
      for (const i of due) sentAt[i] = at;
      submit(due);
    }
    if (next < N) await sleep(Math.min(5, Math.max(1, w.arrivalMs[next] - (wall() - t0))));
  }
}

// --- embedded: HTTP ------------------------------------------------------------------------------

const http = cfg.url ? httpCaller(cfg.url) : undefined;

async function httpReady(a: number): Promise<void> {
  const r = await http!.call('POST', `/v1/agents/${agentIds[a]}/ready`, { capabilities: w.fleet.agents[a].caps, capacity: 1 });
  if (r.status !== 200) throw new Error(`agent ${agentIds[a]} could not register: HTTP ${r.status} ${r.text}`);
}

async function httpAgent(a: number): Promise<void> {
  const id = agentIds[a];
  const seen = new Set<string>();
  while (!stopping) {
    const r = await http!.call('GET', `/v1/agents/${id}/assignments?waitMs=1000`);
    if (r.status === 404 || r.status === 409) { await httpReady(a).catch(() => { errors++; }); continue; }
    if (r.status === 0 || r.status >= 500) { errors++; await sleep(100); continue; }
    if (r.status !== 200) continue;
    for (const d of JSON.parse(r.text) as AssignmentMsg[]) {
      if (d.kind !== 'assignment') continue;
      const key = `${d.taskId}#${d.attempt}`;
      if (seen.has(key)) { duplicates++; continue; } // delivery is at least once
      seen.add(key);
      const i = Number(d.taskId.slice(1));
      begin(i, a);
      await sleep(w.durationMs[i]);
      workDone(i);
      const c = await http!.call('POST', `/v1/tasks/${d.taskId}/complete`, { agentId: id, attempt: d.attempt, outcome: 'succeeded' });
      if (c.status !== 200) errors++;
    }
  }
}

async function runEmbedded(): Promise<() => Promise<void>> {
  for (let a = 0; a < agentIds.length; a++) await httpReady(a);
  say(`embedded: ${agentIds.length} agents registered over HTTP`);
  return async () => {
    const loops = agentIds.map((_, a) => httpAgent(a));
    void produce((due) => {
      for (const i of due) {
        void http!.call('POST', '/v1/tasks', submission(w, i, t0)).then((r) => {
          if (r.status === 202) visibleAt[i] = wall(); else refuse(`HTTP ${r.status}`, 1);
        });
      }
    });
    await everythingDone;
    stopping = true;
    await Promise.all(loops);
  };
}

// --- kafka: Switchyard's Kafka ingress and egress -----------------------------------------------

async function runKafka(): Promise<() => Promise<void>> {
  const kafka = new Kafka({ clientId: `peers-${process.pid}`, brokers: cfg.brokers!, logLevel: logLevel.NOTHING });
  const prefix = cfg.prefix!;
  const topicOf = (id: string) => `${prefix}.assignments.${id}`;
  const agentByTopic = new Map(agentIds.map((id, a) => [topicOf(id), a]));
  const admin = kafka.admin();
  await admin.connect();
  const existing = new Set(await admin.listTopics());
  const missing = agentIds.map(topicOf).filter((t) => !existing.has(t));
  if (missing.length > 0) await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true });
  await admin.disconnect();
  const producer: Producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const reports = `${prefix}.agents`;
  let pending: { key: string; value: string }[] = [];
  let flushScheduled = false;
  const flush = () => {
    flushScheduled = false;
    const messages = pending;
    pending = [];
    if (messages.length > 0) producer.send({ topic: reports, acks: -1, messages }).catch(() => { errors++; });
  };
  const report = (agentId: string, value: object) => {
    pending.push({ key: agentId, value: JSON.stringify({ ...value, agentId }) });
    if (!flushScheduled) { flushScheduled = true; setImmediate(flush); }
  };
  // One consumer for every agent's topic: the agents are simulated in this process, and one fetch
  // per poll for all of them costs the broker far less than 200 consumer groups would. Each
  // agent still sees only its own topic's records, read_committed.
  const consumer: Consumer = kafka.consumer({ groupId: `${prefix}.peers-agents`, readUncommitted: false, maxWaitTimeInMs: 100, allowAutoTopicCreation: false });
  // Joined = holds every agent's partition and has not rebalanced for 1.5 s: the group rebalances
  // a few times while it learns the topics, and assignments read before that arrive late.
  let held = 0;
  let lastJoin = Date.now();
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    held = Object.values(payload.memberAssignment).reduce((n, ps) => n + ps.length, 0);
    lastJoin = Date.now();
  });
  await consumer.connect();
  await consumer.subscribe({ topics: agentIds.map(topicOf), fromBeginning: true });
  const seen = new Set<string>();
  await consumer.run({
    autoCommitInterval: 1000,
    partitionsConsumedConcurrently: 4,
    eachBatch: async ({ batch }) => {
      const a = agentByTopic.get(batch.topic);
      if (a === undefined) return;
      for (const m of batch.messages) {
        if (!m.value) continue;
        const d = JSON.parse(m.value.toString('utf8')) as AssignmentMsg;
        if (d.kind !== 'assignment') continue;
        const key = `${d.taskId}#${d.attempt}`;
        if (seen.has(key)) { duplicates++; continue; }
        seen.add(key);
        const i = Number(d.taskId.slice(1));
        begin(i, a);
        setTimeout(() => {
          workDone(i);
          report(agentIds[a], { kind: 'complete', taskId: d.taskId, attempt: d.attempt, outcome: 'succeeded' });
        }, w.durationMs[i]);
      }
    },
  });
  const joinBy = Date.now() + 120_000;
  while (held < agentIds.length || Date.now() - lastJoin < 1500) {
    if (Date.now() > joinBy) throw new Error(`the agents' consumer holds ${held} of ${agentIds.length} assignment partitions after 120 s`);
    await sleep(100);
  }
  const ready = () => { for (let a = 0; a < agentIds.length; a++) report(agentIds[a], { kind: 'ready', capabilities: w.fleet.agents[a].caps, capacity: 1 }); };
  ready();
  // Keep-alive every 2 s (an agent busy with a long task sends nothing else). It is an idempotent
  // `ready` rather than a `heartbeat`: over Kafka an agent is never told that the dispatcher timed
  // it out (its heartbeats only go to the dead-letter topic, refused as agent-not-alive), while a
  // `ready` of an unchanged live agent is recorded like a heartbeat and re-registers a timed-out one.
  const beat = setInterval(ready, 2000);
  say(`kafka: ${agentIds.length} agents subscribed (one read_committed consumer) and registered through ${reports}`);
  return async () => {
    const tasks = `${prefix}.tasks`;
    void produce((due) => {
      const messages = due.map((i) => ({ key: w.fleet.tenantNames[w.tenant[i]], value: JSON.stringify(submission(w, i, t0)) }));
      producer.send({ topic: tasks, acks: -1, messages }).then(() => {
        const at = wall();
        for (const i of due) visibleAt[i] = at;
      }, () => refuse('produce failed', due.length));
    });
    await everythingDone;
    clearInterval(beat);
    flush();
    await sleep(200); // let the last completions leave
    await Promise.allSettled([consumer.disconnect(), producer.disconnect()]);
  };
}

// --- bullmq and naive: Redis --------------------------------------------------------------------

/**
 * A capacity-1 agent on several BullMQ queues. A Worker with a processor and concurrency 1 per
 * queue would let an agent hold one job per queue at once, so instead the agent fetches by hand
 * (`Worker.getNextJob`, the documented manual-processing API): it asks its queues in turn,
 * non-blocking, starting after the queue it was last served from (so no queue it covers starves),
 * and takes the first job it gets. A blocking fetch waits on one queue only, so an agent with
 * nothing to do polls all of its queues again after 5, 10, 20 … ms, at most `pollMaxMs`.
 * Within a queue BullMQ orders by priority; across queues it cannot, and nothing here tries to.
 */
async function bullAgent(a: number, queues: Worker<{ i: number }>[]): Promise<void> {
  let rr = a % queues.length;
  let backoff = 5;
  let seq = 0;
  while (!stopping) {
    const token = `${agentIds[a]}:${seq++}`;
    let job: Job<{ i: number }> | undefined;
    let k = 0;
    while (k < queues.length && !job) {
      requests++;
      job = (await queues[(rr + k) % queues.length].getNextJob(token, { block: false })) ?? undefined;
      k++;
      if (!job) emptyPolls++;
    }
    if (!job) {
      await sleep(backoff);
      backoff = Math.min(cfg.pollMaxMs, backoff * 2);
      continue;
    }
    backoff = 5;
    rr = (rr + k) % queues.length;
    const i = job.data.i;
    begin(i, a);
    await sleep(w.durationMs[i]);
    workDone(i);
    await job.moveToCompleted('done', token, false).catch(() => { errors++; });
  }
}

async function runRedis(): Promise<() => Promise<void>> {
  // BullMQ needs maxRetriesPerRequest: null on connections its workers use.
  const connection = new Redis({ host: cfg.redis!.host, port: cfg.redis!.port, maxRetriesPerRequest: null, lazyConnect: false });
  const naive = cfg.system === 'naive';
  const names = naive ? [`${cfg.queuePrefix}-shared`] : w.fleet.reqSets.map((_, r) => `${cfg.queuePrefix}-req${String(r).padStart(2, '0')}`);
  const queues = names.map((n) => new Queue<{ i: number }>(n, { connection }));
  const workers = names.map((n) => new Worker<{ i: number }>(n, null, { connection }));
  await Promise.all([...queues.map((q) => q.waitUntilReady()), ...workers.map((x) => x.waitUntilReady())]);
  // The queues each agent listens on: naive, the one shared queue; bullmq, every requirement set its capabilities cover.
  const covered = agentIds.map((_, a) => (naive ? [workers[0]] : workers.filter((_x, r) => w.fleet.servable[a][r])));
  const perAgent = covered.map((c) => c.length);
  say(`${cfg.system}: ${names.length} queue(s); each agent listens on ${Math.min(...perAgent)}–${Math.max(...perAgent)} (mean ${(perAgent.reduce((x, y) => x + y, 0) / perAgent.length).toFixed(1)})`);
  return async () => {
    const loops = agentIds.map((_, a) => bullAgent(a, covered[a]));
    void produce((due) => {
      const byQueue = new Map<number, number[]>();
      for (const i of due) {
        const q = naive ? 0 : w.req[i];
        let list = byQueue.get(q);
        if (!list) byQueue.set(q, (list = []));
        list.push(i);
      }
      for (const [q, ids] of byQueue) {
        // priority: 1 is the highest; the naive queue is plain FIFO. Finished jobs are removed, as in production setups.
        const jobs = ids.map((i) => ({ name: 'task', data: { i }, opts: { jobId: `t${i}`, removeOnComplete: true, ...(naive ? {} : { priority: w.level[i] + 1 }) } }));
        queues[q].addBulk(jobs).then(() => {
          const at = wall();
          for (const i of ids) visibleAt[i] = at;
        }, (e: Error) => { say(`addBulk failed: ${e.message}`); refuse('addBulk failed', ids.length); });
      }
    });
    await everythingDone;
    stopping = true;
    await Promise.all(loops);
    await Promise.allSettled([...workers.map((x) => x.close()), ...queues.map((q) => q.close())]);
    await connection.quit().catch(() => undefined);
  };
}

// --- main ----------------------------------------------------------------------------------------

// Never outlive the benchmark that started this process.
process.on('disconnect', () => process.exit(1));

async function main(): Promise<void> {
  const go = new Promise<void>((r) => process.on('message', (m: { cmd?: string }) => { if (m.cmd === 'go') r(); }));
  const start = cfg.system === 'embedded' ? runEmbedded : cfg.system === 'kafka' ? runKafka : runRedis;
  const runner = await start();
  process.send?.({ kind: 'ready' });
  await go;
  t0 = wall();
  const cpu0 = process.cpuUsage();
  const progress = setInterval(() => {
    let started = 0;
    let visible = 0;
    for (let i = 0; i < N; i++) { if (!Number.isNaN(startAt[i])) started++; if (!Number.isNaN(visibleAt[i])) visible++; }
    say(`${cfg.system} ${((wall() - t0) / 1000).toFixed(0)} s: ${visible} submitted, ${started} started, ${finished} finished, waiting ${visible - started}`);
  }, 10_000);
  let timedOut = false;
  const limit = setTimeout(() => { timedOut = true; say(`${cfg.system}: not finished ${cfg.drainTimeoutMs} ms after the last arrival; giving up`); allDone(); }, w.lastArrivalMs + cfg.drainTimeoutMs);
  await runner();
  clearTimeout(limit);
  clearInterval(progress);
  const cpu = process.cpuUsage(cpu0);
  const result: PeersClientResult = {
    kind: 'result', t0, sentAt, visibleAt, startAt, doneAt, agent: agentOf, refused, duplicates, reassigned,
    errors, httpFailures: { ...(http?.failures ?? {}) },
    timedOut, clientCpuMs: (cpu.user + cpu.system) / 1000, requests: http?.requests ?? requests, emptyPolls,
  };
  process.send?.(result);
  setTimeout(() => process.exit(0), 100);
}

main().catch((e: unknown) => {
  process.send?.({ kind: 'error', message: (e as Error).stack ?? String(e) });
  setTimeout(() => process.exit(1), 100);
});
