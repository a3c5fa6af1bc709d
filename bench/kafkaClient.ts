import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import kafkajs, { type Consumer, type Producer } from 'kafkajs';
import { judge, LEVEL_NAMES, makeKafkaFleet, nextTask, type Correctness, type TaskTrace } from './kafkaWorkload.js';
import { percentile, prng } from './support.js';

// kafkajs is CommonJS: Node's ESM loader finds only some of its exports by name.
const { Kafka, logLevel, Partitioners } = kafkajs;

/**
 * Producers and agents of the Kafka benchmark, as raw kafkajs clients in their own process.
 *
 * - `switchyard`: producers publish submissions to `<prefix>.tasks`; each agent is a consumer
 *   (read_committed, its own group) of `<prefix>.assignments.<agentId>` and completes every
 *   assignment at once by producing `{kind: 'complete', ...}` to `<prefix>.agents`.
 * - `naive`: no dispatcher. The agents are one consumer group on `<prefix>.tasks` (N partitions,
 *   key = tenant) and each runs whatever it receives.
 *
 * Runs its phases in order (closed loop: throughput; open loop: latency at a fixed rate) and
 * judges what the agents started in each (kafkaWorkload.ts `judge`). IPC with `kafka.ts`:
 *
 *   ← {kind: 'log', line}
 *   ← {kind: 'registered'}                 agents connected (and registered)   → {cmd: 'go'}
 *   ← {kind: 'capacity', capacity}          agents re-registered with it         → {cmd: 'go'}
 *   ← {kind: 'window', phase, edge}         edges of each measured window
 *   ← {kind: 'drained', phase}              → {cmd: 'admissions', seqs, ats}   (TaskSubmitted.at per task; none for naive)
 *   ← {kind: 'result', ...}
 *
 * KAFKA_BENCH_TRACES=<dir> also writes every task's trace to <dir>/<mode>-traces.json (to study the
 * judging offline).
 */

export interface KafkaClientConfig {
  mode: 'switchyard' | 'naive';
  brokers: string[];
  prefix: string;
  agents: number;
  capacity: number;
  floodShare: number;
  /** naive: partitions of the shared task topic. */
  partitions: number;
  /** kafkajs producer instances the submissions are spread over. */
  producers: number;
  /** Most submissions per send; a closed-loop producer waits until it has room for `minBatch`. */
  batch: number;
  minBatch: number;
  /** Closed loop: most tasks submitted and not yet started. */
  maxOutstanding: number;
  /** Open loop: submissions per second, on schedule. */
  offeredPerSecond: number;
  phases: PhaseSpec[];
  /** After each phase, how long to wait for the tasks submitted to be started. */
  drainMs: number;
  /** Visibility graces the correctness counts are computed with (ms). */
  graceMs: number[];
}

export interface PhaseSpec {
  name: string;
  /** closed: producers keep maxOutstanding tasks submitted and not started; open: offeredPerSecond on schedule. */
  load: 'closed' | 'open';
  /** Switchyard: the agents' capacity in this phase (re-registered when it changes). */
  capacity: number;
  warmupMs: number;
  measureMs: number;
}

export interface LatencyStats { count: number; p50: number; p90: number; p99: number; max: number }

export interface PhaseResult {
  windowMs: number;
  /** Tasks acknowledged by the broker in the window. */
  submitted: number;
  /** Tasks started (received by an agent) in the window. */
  started: number;
  /** Completions produced in the window (switchyard). */
  completionsSent: number;
  /** Sent → received by the agent, for tasks sent in the window (Infinity for those never received). */
  latency: LatencyStats;
  /** Tasks sent in the window that no agent received before the drain ended. */
  neverStarted: number;
  /** Switchyard: broker ack → the dispatcher took the task in (TaskSubmitted.at), for tasks acknowledged in the window. */
  ingressLag?: LatencyStats;
  /** Producer sent → broker ack. */
  ackLatency: LatencyStats;
  /** The correctness counts for starts in the window, per definition of "waiting". */
  correctness: Correctness[];
  clientCpuMs: number;
  offeredRate: number;
}

export interface KafkaClientResult {
  kind: 'result';
  mode: KafkaClientConfig['mode'];
  phases: Record<string, PhaseResult>;
  sendErrors: number;
  /** Assignments received again for a (task, attempt) already received (at-least-once paths). */
  duplicates: number;
  /** Tasks assigned a second time (attempt > 1): a timeout or requeue happened. */
  reassigned: number;
  setupMs: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as KafkaClientConfig;
const wall = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (line: string): void => { process.send?.({ kind: 'log', line }); };
const fleet = makeKafkaFleet(cfg.agents, cfg.floodShare);
const rand = prng(23);
const kafka = new Kafka({ clientId: `bench-${cfg.mode}-${process.pid}`, brokers: cfg.brokers, logLevel: logLevel.NOTHING });
const tasksTopic = `${cfg.prefix}.tasks`;
const agentsTopic = `${cfg.prefix}.agents`;
const assignmentsTopic = (id: string): string => `${cfg.prefix}.assignments.${id}`;

const traces: TaskTrace[] = [];
let outstanding = 0;
let sendErrors = 0;
let duplicates = 0;
let reassigned = 0;
let completionsSent = 0;
const roomWaiters: (() => void)[] = [];

function released(n: number): void {
  outstanding -= n;
  if (outstanding < cfg.maxOutstanding - cfg.minBatch) for (const w of roomWaiters.splice(0)) w();
}

/** One produce request of `n` new submissions. Their visibility is the broker's acknowledgement. */
async function sendTasks(p: Producer, n: number): Promise<void> {
  const at = wall();
  const first = traces.length;
  const messages = new Array<{ key: string; value: string }>(n);
  for (let i = 0; i < n; i++) {
    const g = nextTask(rand, fleet);
    const seq = first + i;
    traces.push({ tenant: g.tenant, level: g.level, req: g.req, sentAt: at, visibleAt: NaN, admittedAt: NaN, startAt: NaN, receivedAt: NaN, agent: -1 });
    const tenant = fleet.tenantNames[g.tenant];
    messages[i] = {
      key: tenant,
      value: JSON.stringify({
        id: `t${seq}`, tenant, source: 'api', type: 'bench', priority: LEVEL_NAMES[g.level],
        requires: fleet.reqSets[g.req], payload: { n: seq },
      }),
    };
  }
  outstanding += n;
  try {
    await p.send({ topic: tasksTopic, acks: -1, messages });
    const ack = wall();
    for (let i = 0; i < n; i++) traces[first + i].visibleAt = ack;
  } catch {
    sendErrors++;
    released(n);
  }
}

// --- agents ---------------------------------------------------------------------------------

const consumers: Consumer[] = [];
let completer: Producer;
let pendingCompletions: { key: string; value: string }[] = [];
let flushScheduled = false;

function flushCompletions(): void {
  flushScheduled = false;
  const messages = pendingCompletions;
  pendingCompletions = [];
  if (messages.length === 0) return;
  completionsSent += messages.length;
  completer.send({ topic: agentsTopic, acks: -1, messages }).catch(() => { sendErrors++; });
}

const seen = new Set<string>();

/** Switchyard agent `i` got a record of its assignment topic: record the start, complete at once. */
function onAssignment(i: number, value: Buffer | null): void {
  if (!value) return;
  const d = JSON.parse(value.toString('utf8')) as { kind: string; taskId: string; attempt: number; assignedAt?: string };
  if (d.kind !== 'assignment') return;
  const key = `${d.taskId}#${d.attempt}`;
  if (seen.has(key)) { duplicates++; return; }
  seen.add(key);
  const tr = traces[Number(d.taskId.slice(1))];
  if (tr) {
    if (Number.isNaN(tr.startAt)) {
      tr.startAt = Date.parse(d.assignedAt ?? '');
      tr.receivedAt = wall();
      tr.agent = i;
      released(1);
    } else {
      reassigned++;
    }
  }
  const agentId = fleet.agents[i].id;
  pendingCompletions.push({ key: agentId, value: JSON.stringify({ kind: 'complete', agentId, taskId: d.taskId, attempt: d.attempt, outcome: 'succeeded' }) });
  if (!flushScheduled) { flushScheduled = true; setImmediate(flushCompletions); }
}

/** Naive agent `i` received a task from the shared topic: it starts it, whatever it is. */
function onNaiveTask(i: number, value: Buffer | null): void {
  if (!value) return;
  const d = JSON.parse(value.toString('utf8')) as { id: string };
  const tr = traces[Number(d.id.slice(1))];
  if (!tr || !Number.isNaN(tr.startAt)) { duplicates++; return; }
  tr.startAt = tr.receivedAt = wall();
  tr.agent = i;
  released(1);
}

const agentMessages = (make: (a: (typeof fleet.agents)[number]) => object) => fleet.agents.map((a) => ({ key: a.id, value: JSON.stringify(make(a)) }));

/** Switchyard: (re-)register every agent; `ready` sets the capacity, it does not add to it. */
async function register(capacity: number): Promise<void> {
  await completer.send({ topic: agentsTopic, acks: -1, messages: agentMessages((a) => ({ kind: 'ready', agentId: a.id, capabilities: a.caps, capacity })) });
}

async function connectSwitchyardAgents(): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  const existing = new Set(await admin.listTopics());
  const topics = fleet.agents.map((a) => assignmentsTopic(a.id)).filter((t) => !existing.has(t));
  if (topics.length > 0) await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true });
  await admin.disconnect();
  completer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
  await completer.connect();
  let joined = 0;
  await Promise.all(fleet.agents.map(async (a, i) => {
    const c = kafka.consumer({ groupId: `${cfg.prefix}.bench-agent.${a.id}`, readUncommitted: false, maxWaitTimeInMs: 1000, allowAutoTopicCreation: false });
    consumers.push(c);
    let first = true;
    c.on(c.events.GROUP_JOIN, () => { if (first) { first = false; joined++; } });
    await c.connect();
    await c.subscribe({ topic: assignmentsTopic(a.id), fromBeginning: true });
    await c.run({
      // Offsets committed once a second, not after every batch (kafkajs's default).
      autoCommitInterval: 1000,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) onAssignment(i, m.value);
      },
    });
  }));
  const deadline = Date.now() + 60_000;
  while (joined < fleet.agents.length) {
    if (Date.now() > deadline) throw new Error(`only ${joined} of ${fleet.agents.length} agent consumers joined`);
    await sleep(50);
  }
  // Register, then keep every agent alive (an agent that only completes would still time out while idle).
  await register(cfg.capacity);
  const beat = setInterval(() => {
    completer.send({ topic: agentsTopic, acks: -1, messages: agentMessages((a) => ({ kind: 'heartbeat', agentId: a.id })) }).catch(() => { sendErrors++; });
  }, 2000);
  beat.unref();
}

async function connectNaiveFleet(): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: tasksTopic, numPartitions: cfg.partitions }], waitForLeaders: true });
  await admin.disconnect();
  const groupId = `${cfg.prefix}.naive-fleet`;
  const held = new Map<number, number>();
  let lastChange = Date.now();
  await Promise.all(fleet.agents.map(async (_a, i) => {
    const c = kafka.consumer({ groupId, maxWaitTimeInMs: 1000, allowAutoTopicCreation: false });
    consumers.push(c);
    c.on(c.events.GROUP_JOIN, ({ payload }) => {
      held.set(i, Object.values(payload.memberAssignment).reduce((s, ps) => s + ps.length, 0));
      lastChange = Date.now();
    });
    c.on(c.events.REBALANCING, () => { lastChange = Date.now(); held.delete(i); });
    await c.connect();
    await c.subscribe({ topic: tasksTopic, fromBeginning: true });
    await c.run({
      // Offsets committed once a second, not after every batch (kafkajs's default).
      autoCommitInterval: 1000,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) onNaiveTask(i, m.value);
      },
    });
  }));
  // Stable: every member has joined the same generation, all partitions are held, nothing moved for 2 s.
  const deadline = Date.now() + 90_000;
  for (;;) {
    const total = [...held.values()].reduce((s, x) => s + x, 0);
    if (held.size === fleet.agents.length && total === cfg.partitions && Date.now() - lastChange > 2000) break;
    if (Date.now() > deadline) throw new Error(`naive consumer group not stable: ${held.size} members joined, ${total} of ${cfg.partitions} partitions held`);
    await sleep(100);
  }
  const holders = [...held.values()].filter((x) => x > 0).length;
  say(`naive fleet: ${fleet.agents.length} consumers in group ${groupId}; ${holders} hold the ${cfg.partitions} partitions, ${fleet.agents.length - holders} hold none`);
}

// --- phases ---------------------------------------------------------------------------------

// Never outlive the benchmark that started this process.
process.on('disconnect', () => process.exit(1));

const commands: { cmd: string; seqs?: number[]; ats?: number[] }[] = [];
const commandWaiters: (() => void)[] = [];
process.on('message', (m: { cmd: string }) => { commands.push(m); for (const w of commandWaiters.splice(0)) w(); });
async function command(cmd: string): Promise<{ cmd: string; seqs?: number[]; ats?: number[] }> {
  for (;;) {
    const i = commands.findIndex((m) => m.cmd === cmd);
    if (i >= 0) return commands.splice(i, 1)[0];
    await new Promise<void>((r) => commandWaiters.push(r));
  }
}

async function phase(spec: PhaseSpec, producers: Producer[]): Promise<PhaseResult> {
  let producing = true;
  let offeredRate = 0;
  const started = wall();
  let load: Promise<unknown>;
  if (spec.load === 'closed') {
    load = Promise.all(producers.map(async (p) => {
      while (producing) {
        const room = cfg.maxOutstanding - outstanding;
        if (room < cfg.minBatch) {
          await new Promise<void>((r) => { roomWaiters.push(r); setTimeout(r, 50); });
          continue;
        }
        await sendTasks(p, Math.min(cfg.batch, room));
      }
    }));
  } else {
    load = (async () => {
      let sent = 0;
      let rr = 0;
      while (producing) {
        const due = Math.floor(((wall() - started) / 1000) * cfg.offeredPerSecond);
        for (let n = due - sent; n > 0; n -= cfg.batch) {
          const k = Math.min(n, cfg.batch);
          void sendTasks(producers[rr++ % producers.length], k);
          sent += k;
        }
        await sleep(2);
      }
      offeredRate = sent / ((wall() - started) / 1000);
    })();
  }
  await sleep(spec.warmupMs);
  const from = wall();
  const cpu0 = process.cpuUsage();
  const sent0 = completionsSent;
  process.send?.({ kind: 'window', phase: spec.name, edge: 'start' });
  await sleep(spec.measureMs);
  const to = wall();
  process.send?.({ kind: 'window', phase: spec.name, edge: 'end' });
  const cpu = process.cpuUsage(cpu0);
  const sentInWindow = completionsSent - sent0;
  producing = false;
  for (const w of roomWaiters.splice(0)) w();
  await load;
  // Let what was submitted be started before the next phase (and before judging this one).
  const drainUntil = Date.now() + cfg.drainMs;
  while (Date.now() < drainUntil && traces.some((t) => t.sentAt < to && Number.isNaN(t.startAt))) await sleep(50);
  process.send?.({ kind: 'drained', phase: spec.name });
  const adm = await command('admissions');
  const seqs = adm.seqs ?? [];
  const ats = adm.ats ?? [];
  for (let i = 0; i < seqs.length; i++) if (traces[seqs[i]]) traces[seqs[i]].admittedAt = ats[i];

  const lat: number[] = [];
  let neverStarted = 0;
  let submitted = 0;
  let startedN = 0;
  for (const t of traces) {
    if (t.visibleAt >= from && t.visibleAt < to) submitted++;
    if (t.receivedAt >= from && t.receivedAt < to) startedN++;
    if (t.sentAt >= from && t.sentAt < to) {
      // Never received (before the drain ended) counts as infinitely late, not as missing.
      if (Number.isNaN(t.receivedAt)) { neverStarted++; lat.push(Infinity); } else lat.push(t.receivedAt - t.sentAt);
    }
  }
  lat.sort((a, b) => a - b);
  const stats = (xs: number[]): LatencyStats => {
    xs.sort((a, b) => a - b);
    return { count: xs.length, p50: percentile(xs, 0.5), p90: percentile(xs, 0.9), p99: percentile(xs, 0.99), max: xs[xs.length - 1] ?? NaN };
  };
  const inWindow = traces.filter((t) => t.visibleAt >= from && t.visibleAt < to);
  const ingressLag = cfg.mode === 'switchyard' ? stats(inWindow.filter((t) => Number.isFinite(t.admittedAt)).map((t) => t.admittedAt - t.visibleAt)) : undefined;
  const ackLatency = stats(inWindow.map((t) => t.visibleAt - t.sentAt));
  const correctness = cfg.graceMs.map((g) => judge(traces, fleet, from, to, { waitingFrom: 'visible', graceMs: g }));
  if (cfg.mode === 'switchyard') correctness.push(judge(traces, fleet, from, to, { waitingFrom: 'admitted', graceMs: 0 }));
  return {
    windowMs: to - from,
    submitted,
    started: startedN,
    completionsSent: sentInWindow,
    latency: { count: lat.length, p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), max: lat[lat.length - 1] ?? NaN },
    neverStarted,
    ingressLag,
    ackLatency,
    correctness,
    clientCpuMs: (cpu.user + cpu.system) / 1000,
    offeredRate,
  };
}

async function main(): Promise<void> {
  const t0 = Date.now();
  if (cfg.mode === 'switchyard') await connectSwitchyardAgents(); else await connectNaiveFleet();
  const producers = await Promise.all(Array.from({ length: cfg.producers }, async () => {
    const p = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
    await p.connect();
    return p;
  }));
  const setupMs = Date.now() - t0;
  process.send?.({ kind: 'registered' });
  await command('go');
  let capacity = cfg.capacity;
  const phases: Record<string, PhaseResult> = {};
  for (const spec of cfg.phases) {
    if (cfg.mode === 'switchyard' && spec.capacity !== capacity) {
      capacity = spec.capacity;
      await register(capacity);
      process.send?.({ kind: 'capacity', capacity });
      await command('go');
    }
    phases[spec.name] = await phase(spec, producers);
    say(`${cfg.mode} ${spec.name} phase done: ${traces.length} tasks so far, ${outstanding} not started`);
  }
  if (process.env.KAFKA_BENCH_TRACES) writeFileSync(join(process.env.KAFKA_BENCH_TRACES, `${cfg.mode}-traces.json`), JSON.stringify({ fleet, traces }));
  const result: KafkaClientResult = { kind: 'result', mode: cfg.mode, phases, sendErrors, duplicates, reassigned, setupMs };
  process.send?.(result);
  await Promise.allSettled([...consumers.map((c) => c.disconnect()), ...producers.map((p) => p.disconnect()), completer?.disconnect()]);
  setTimeout(() => process.exit(0), 50);
}

main().catch((e: unknown) => {
  process.send?.({ kind: 'error', message: (e as Error).stack ?? String(e) });
  setTimeout(() => process.exit(1), 50);
});
