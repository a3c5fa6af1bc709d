import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getSqliteEventLog } from '../src/adapters/log/sqliteEventLog.js';
import { startBroker, type Broker } from './broker.js';
import { startBenchServer } from './embedded.js';
import type { DispatcherConfig, DispatcherWindow } from './kafkaDispatcher.js';
import { judge, LEVEL_NAMES, type TaskTrace } from './kafkaWorkload.js';
import type { PeersClientConfig, PeersClientResult } from './peersClient.js';
import { startRedis, type RedisServer } from './peersRedis.js';
import { DEFAULT_SPEC, makeWorkload, SYSTEMS, WAIT_TARGET_MS, type SystemName, type Workload, type WorkloadSpec } from './peersWorkload.js';
import { exited, mailbox, procCpuMs } from './processes.js';
import { num, percentile, type BenchReport, type ResultRow } from './support.js';

/**
 * Switchyard beside its peers, on one workload, in one run (`npm run bench:peers`):
 *
 * - `embedded`: Switchyard on its SQLite log — startServer() in this process (what `serve` runs),
 *   agents over HTTP long-poll.
 * - `kafka`: Switchyard on Kafka — the Kafka log, ingress and egress (exactly once), in a child
 *   process (bench/kafkaDispatcher.ts, what `serve --log kafka:` runs), on a broker this
 *   benchmark starts (bench/broker.ts) unless brokers are given.
 * - `bullmq`: BullMQ on Redis (infra/redis), one queue per requirement set, priorities as job
 *   priorities, capacity-1 agents fetching from the queues they can serve.
 * - `naive`: the naive fleet as one shared queue — BullMQ on the same Redis, no priorities; every
 *   agent takes the next task whatever it needs.
 *
 * Producers and agents run in a child process (bench/peersClient.ts) that replays the same
 * task list at the same offsets for every system; what the agents did is judged here, the same
 * way for all four (and with `judge()` of kafkaWorkload.ts for inversions and capability misses).
 */

export interface PeersOptions extends Partial<WorkloadSpec> {
  /** Which systems to run, in this order. Default all four. */
  systems?: SystemName[];
  /** Use these Kafka brokers rather than $KAFKA_BROKERS or a broker of our own. */
  kafkaBrokers?: string[];
  /** bullmq/naive: longest pause of an idle agent between two polls of its queues, ms. Default 100. */
  pollMaxMs?: number;
  /** How long after the last arrival a system may take to finish the last task, ms. Default 180000. */
  drainTimeoutMs?: number;
}

const LABEL: Record<SystemName, string> = {
  embedded: 'switchyard (embedded)',
  kafka: 'switchyard (kafka)',
  bullmq: 'bullmq',
  naive: 'naive shared queue',
};

export interface SystemSummary {
  system: SystemName;
  submitted: number;
  completed: number;
  refused: Record<string, number>;
  timedOut: boolean;
  /** Completions per second in the saturated window (the second half of the overload phase). */
  throughput: number;
  /** First submission → last completion, and last arrival → last completion, s. */
  makespanS: number;
  drainS: number;
  /** Start − sent, s, by level (critical … low); Infinity for a task never started. */
  waitP50: number[];
  waitP99: number[];
  deadlineTasks: number;
  /** Share (0–1) of tasks with a deadline completed by it. */
  deadlineMet: number;
  /** Share (0–1) of all tasks started within their priority's wait target; and by level. */
  waitTargetMet: number;
  waitTargetMetByLevel: number[];
  /** Jain's index of served ÷ max-min fair share over tenants in the overload window. */
  jain: number;
  /** The flooding tenant in the overload window: its share of starts, of demand, and its max-min fair share. */
  floodStartShare: number;
  floodDemandShare: number;
  floodFairShare: number;
  starts: number;
  capabilityMisses: number;
  /** Starts while a higher-priority task the same agent could run was waiting (waiting from the submission's acknowledgement). */
  inversions: number;
  /** Inversions ÷ starts the agent could run. */
  inversionRate: number;
  /** Of the inversions, those with only over-share tenants' work waiting above (what fairness defers on purpose). */
  inversionsOverShare: number;
  /** Inversions counting a task as waiting only 100 ms after its acknowledgement. */
  inversionRate100: number;
  duplicates: number;
  reassigned: number;
  errors: number;
  /** CPU over the run, % of one core: the dispatching side (`server`), the broker/Redis, the client process. */
  cpu: { server?: number; serverWhat: string; store?: number; storeWhat?: string; client: number };
  load: number[];
  wallS: number;
  /** kafka: the dispatcher's events by type and its commits over the run. */
  dispatcherEvents?: Record<string, number>;
  dispatcherCommits?: number;
}

export interface PeersReport extends BenchReport {
  spec: WorkloadSpec;
  summaries: SystemSummary[];
}

const here = fileURLToPath(new URL('.', import.meta.url));
const CLIENT = join(here, 'peersClient.js');

/** `--tasks 2000 --systems embedded,bullmq …`, else PEERS_TASKS, PEERS_SYSTEMS … in the environment. */
export function parsePeersArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): PeersOptions {
  const numeric: (keyof WorkloadSpec)[] = Object.keys(DEFAULT_SPEC) as (keyof WorkloadSpec)[];
  const flagOf = (k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
  const envOf = (k: string) => `PEERS_${k.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
  const given = new Map<string, string>();
  for (const k of [...numeric, 'systems', 'pollMaxMs', 'drainTimeoutMs']) {
    const v = env[envOf(k)];
    if (v !== undefined && v !== '') given.set(k, v);
  }
  const first = argv.findIndex((a) => a.startsWith('--'));
  const flags = first < 0 ? [] : argv.slice(first);
  const byFlag = new Map([...numeric, 'systems', 'pollMaxMs', 'drainTimeoutMs'].map((k) => [flagOf(k), k]));
  for (let i = 0; i < flags.length; i += 2) {
    const key = byFlag.get(flags[i]);
    if (!key) throw new Error(`peers: unknown flag ${flags[i]}; flags: ${[...byFlag.keys()].join(' ')}`);
    if (flags[i + 1] === undefined) throw new Error(`peers: ${flags[i]} needs a value`);
    given.set(key, flags[i + 1]);
  }
  const o: PeersOptions = {};
  for (const [k, v] of given) {
    if (k === 'systems') {
      const list = v.split(',').map((x) => x.trim()).filter(Boolean);
      const bad = list.filter((x) => !SYSTEMS.includes(x as SystemName));
      if (bad.length > 0 || list.length === 0) throw new Error(`peers: systems must be a comma list of ${SYSTEMS.join(', ')}; got "${v}"`);
      o.systems = list as SystemName[];
      continue;
    }
    const x = Number(v);
    if (!Number.isFinite(x) || x < 0) throw new Error(`peers: ${k} must be a non-negative number; got "${v}"`);
    (o as Record<string, number>)[k] = x;
  }
  return o;
}

interface ClientRun {
  result: PeersClientResult;
  /** CPU ms of each probed process between go and the result. */
  cpuMs: Record<string, number | undefined>;
  wallMs: number;
  /** kafka: what the dispatcher did over the run (events by type, commits). */
  dispatcher?: DispatcherWindow;
}

/** Fork the client for one system, let it set up, run `beforeGo`, start it and wait for its result. */
async function runClient(
  cfg: PeersClientConfig, w: Workload, log: (l: string) => void,
  probes: Record<string, () => number | undefined>, beforeGo?: () => Promise<void>,
): Promise<ClientRun> {
  const child = fork(CLIENT, [JSON.stringify(cfg)], { execArgv: ['--max-old-space-size=2048'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.on('message', (m: { kind: string; line?: string }) => { if (m.kind === 'log') log(`  ${m.line}`); });
  const box = mailbox(child, `${cfg.system} client`);
  try {
    await box.next('ready', 300_000);
    if (beforeGo) await beforeGo();
    const cpu0 = Object.fromEntries(Object.entries(probes).map(([k, p]) => [k, p()]));
    const t0 = performance.now();
    child.send({ cmd: 'go' });
    const result = await box.next<PeersClientResult>('result', w.lastArrivalMs + cfg.drainTimeoutMs + 120_000);
    const wallMs = performance.now() - t0;
    const cpuMs = Object.fromEntries(Object.entries(probes).map(([k, p]) => {
      const a = cpu0[k];
      const b = p();
      return [k, a !== undefined && b !== undefined ? b - a : undefined];
    }));
    await exited(child);
    return { result, cpuMs, wallMs };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill();
  }
}

function selfCpuMs(): number {
  const c = process.cpuUsage();
  return (c.user + c.system) / 1000;
}

async function runEmbeddedSystem(base: Omit<PeersClientConfig, 'system'>, w: Workload, log: (l: string) => void): Promise<ClientRun> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-peers-'));
  const server = await startBenchServer(getSqliteEventLog({ path: join(dir, 'switchyard.db') }), log);
  try {
    return await runClient({ ...base, system: 'embedded', url: server.url }, w, log, { server: selfCpuMs });
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function runKafkaSystem(base: Omit<PeersClientConfig, 'system'>, w: Workload, broker: Broker, log: (l: string) => void): Promise<ClientRun> {
  const prefix = `peers-${Date.now().toString(36)}`;
  const profileDir = mkdtempSync(join(tmpdir(), 'switchyard-bench-peers-prof-'));
  const dcfg: DispatcherConfig = { brokers: broker.brokers, prefix, profileDir };
  const t0 = performance.now();
  const dispatcher = fork(join(here, 'kafkaDispatcher.js'), [JSON.stringify(dcfg)], { execArgv: ['--max-old-space-size=4096'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const dbox = mailbox(dispatcher, 'kafka dispatcher');
  try {
    await dbox.next('ready', 120_000);
    log(`  kafka: dispatcher up (writer elected, ingress subscribed) in ${((performance.now() - t0) / 1000).toFixed(1)} s; topic prefix ${prefix}`);
    // The agents' ready records go through the ingress like everything else: start once the dispatcher has them all.
    const registered = async (): Promise<void> => {
      const deadline = Date.now() + 120_000;
      for (;;) {
        dispatcher.send({ cmd: 'stats' });
        const s = await dbox.next<{ agentsAlive: number; capacity: number }>('stats');
        if (s.agentsAlive >= w.spec.agents && s.capacity === w.spec.agents) return;
        if (Date.now() > deadline) throw new Error(`the Kafka dispatcher has ${s.agentsAlive} of ${w.spec.agents} agents alive with ${s.capacity} slots after 120 s`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    const run = await runClient({ ...base, system: 'kafka', brokers: broker.brokers, prefix }, w, log,
      { server: () => procCpuMs(dispatcher.pid), store: () => procCpuMs(broker.pid) },
      async () => {
        await registered();
        dispatcher.send({ cmd: 'window-start', profile: false });
        await dbox.next('ack');
      });
    dispatcher.send({ cmd: 'window-end', name: 'run' });
    run.dispatcher = await dbox.next<DispatcherWindow>('window');
    return run;
  } finally {
    if (dispatcher.exitCode === null) {
      dispatcher.send({ cmd: 'stop' });
      await dbox.next('stopped', 60_000).catch((e: Error) => log(`  kafka dispatcher stop: ${e.message}`));
      await exited(dispatcher);
    }
    rmSync(profileDir, { recursive: true, force: true });
  }
}

// --- judging -------------------------------------------------------------------------------------

/** Max-min fair division of `total` units among demands (water-filling). */
function maxMinShares(demand: readonly number[], total: number): number[] {
  const fair = demand.map(() => 0);
  const order = demand.map((_, i) => i).filter((i) => demand[i] > 0).sort((a, b) => demand[a] - demand[b]);
  let left = total;
  let k = order.length;
  for (const i of order) {
    const give = Math.min(demand[i], left / k);
    fair[i] = give;
    left -= give;
    k--;
  }
  return fair;
}

function jainIndex(xs: readonly number[]): number {
  const s = xs.reduce((a, b) => a + b, 0);
  const s2 = xs.reduce((a, b) => a + b * b, 0);
  return xs.length === 0 || s2 === 0 ? NaN : (s * s) / (xs.length * s2);
}

function summarize(system: SystemName, w: Workload, run: ClientRun, load: number[], serverWhat: string, storeWhat?: string): SystemSummary {
  const r = run.result;
  const n = w.spec.tasks;
  const t0 = r.t0;
  const levels = LEVEL_NAMES.length;
  const waits: number[][] = Array.from({ length: levels }, () => []);
  const targetMet = new Array<number>(levels).fill(0);
  const perLevel = new Array<number>(levels).fill(0);
  let submitted = 0;
  let completed = 0;
  let deadlineTasks = 0;
  let deadlineMet = 0;
  let lastDone = -Infinity;
  const satFrom = t0 + w.overloadEndMs / 2;
  const satTo = t0 + w.overloadEndMs;
  let satDone = 0;
  // Fairness window: the overload phase. Demand = tasks submitted in it; served = starts in it.
  const T = w.fleet.tenantNames.length;
  const demand = new Array<number>(T).fill(0);
  const served = new Array<number>(T).fill(0);
  const traces: TaskTrace[] = [];
  for (let i = 0; i < n; i++) {
    const lv = w.level[i];
    perLevel[lv]++;
    if (Number.isFinite(r.visibleAt[i])) submitted++;
    const done = r.doneAt[i];
    if (Number.isFinite(done)) {
      completed++;
      if (done > lastDone) lastDone = done;
      if (done >= satFrom && done < satTo) satDone++;
    }
    const wait = Number.isFinite(r.startAt[i]) ? (r.startAt[i] - r.sentAt[i]) / 1000 : Infinity;
    waits[lv].push(wait);
    if (wait * 1000 <= WAIT_TARGET_MS[lv]) targetMet[lv]++;
    if (!Number.isNaN(w.deadlineMs[i])) {
      deadlineTasks++;
      if (Number.isFinite(done) && done <= t0 + w.deadlineMs[i]) deadlineMet++;
    }
    if (w.arrivalMs[i] < w.overloadEndMs) demand[w.tenant[i]]++;
    if (r.startAt[i] >= t0 && r.startAt[i] < satTo) served[w.tenant[i]]++;
    traces.push({
      tenant: w.tenant[i], level: lv, req: w.req[i], sentAt: r.sentAt[i], visibleAt: r.visibleAt[i],
      admittedAt: NaN, startAt: r.startAt[i], receivedAt: r.startAt[i], agent: r.agent[i],
    });
  }
  for (const ws of waits) ws.sort((a, b) => a - b);
  const totalServed = served.reduce((a, b) => a + b, 0);
  const fair = maxMinShares(demand, totalServed);
  const xs = fair.map((f, t) => (f > 0 ? served[t] / f : NaN)).filter((x) => !Number.isNaN(x));
  const flood = w.fleet.floodIndex;
  const totalDemand = demand.reduce((a, b) => a + b, 0);
  const c0 = judge(traces, w.fleet, -Infinity, Infinity, { waitingFrom: 'visible', graceMs: 0 });
  const c100 = judge(traces, w.fleet, -Infinity, Infinity, { waitingFrom: 'visible', graceMs: 100 });
  const runnable = (c: typeof c0) => Math.max(1, c.starts - c.capabilityMisses);
  const firstSent = Math.min(...Array.from(r.sentAt).filter(Number.isFinite));
  const pct = (ms: number | undefined) => (ms === undefined ? undefined : (ms / run.wallMs) * 100);
  return {
    system, submitted, completed, refused: r.refused, timedOut: r.timedOut,
    throughput: satDone / ((satTo - satFrom) / 1000),
    makespanS: (lastDone - firstSent) / 1000,
    drainS: (lastDone - (t0 + w.lastArrivalMs)) / 1000,
    waitP50: waits.map((ws) => percentile(ws, 0.5)),
    waitP99: waits.map((ws) => percentile(ws, 0.99)),
    deadlineTasks, deadlineMet: deadlineTasks > 0 ? deadlineMet / deadlineTasks : NaN,
    waitTargetMet: targetMet.reduce((a, b) => a + b, 0) / Math.max(1, n),
    waitTargetMetByLevel: targetMet.map((m, l) => m / Math.max(1, perLevel[l])),
    jain: jainIndex(xs),
    floodStartShare: served[flood] / Math.max(1, totalServed),
    floodDemandShare: demand[flood] / Math.max(1, totalDemand),
    floodFairShare: fair[flood] / Math.max(1, totalServed),
    starts: c0.starts,
    capabilityMisses: c0.capabilityMisses,
    inversions: c0.inversions,
    inversionRate: c0.inversions / runnable(c0),
    inversionsOverShare: c0.inversionsOverShare,
    inversionRate100: c100.inversions / runnable(c100),
    duplicates: r.duplicates, reassigned: r.reassigned,
    errors: r.errors + Object.entries(r.httpFailures).filter(([k]) => k !== '429').reduce((a, [, v]) => a + v, 0),
    cpu: { server: pct(run.cpuMs.server), serverWhat, store: pct(run.cpuMs.store), storeWhat, client: (r.clientCpuMs / run.wallMs) * 100 },
    load, wallS: run.wallMs / 1000,
    dispatcherEvents: run.dispatcher?.byType, dispatcherCommits: run.dispatcher?.commits,
  };
}

// --- report --------------------------------------------------------------------------------------

interface Metric {
  name: string;
  unit: string;
  get: (s: SystemSummary) => number;
  /** Which way is better, for the reader of the ratio. */
  better: 'higher' | 'lower';
}

function metrics(): Metric[] {
  const m: Metric[] = [{ name: 'throughput, saturated', unit: 'tasks/s', get: (s) => s.throughput, better: 'higher' }];
  LEVEL_NAMES.forEach((l, i) => {
    m.push({ name: `wait p50 ${l}`, unit: 's', get: (s) => s.waitP50[i], better: 'lower' });
    m.push({ name: `wait p99 ${l}`, unit: 's', get: (s) => s.waitP99[i], better: 'lower' });
  });
  m.push(
    { name: 'deadlines met', unit: '%', get: (s) => s.deadlineMet * 100, better: 'higher' },
    { name: 'wait targets met', unit: '%', get: (s) => s.waitTargetMet * 100, better: 'higher' },
    { name: "fairness, Jain's index", unit: '', get: (s) => s.jain, better: 'higher' },
    { name: 'flooding tenant, share of starts', unit: '%', get: (s) => s.floodStartShare * 100, better: 'lower' },
    { name: 'capability misses', unit: 'starts', get: (s) => s.capabilityMisses, better: 'lower' },
    { name: 'priority inversions', unit: '% of starts', get: (s) => s.inversionRate * 100, better: 'lower' },
  );
  return m;
}

/** value ÷ the embedded Switchyard's: NaN when both are 0, Infinity when only the reference is. */
export function ratioTo(value: number, reference: number): number {
  if (reference === 0) return value === 0 ? NaN : Infinity;
  return value / reference;
}

const fmt = (x: number, unit = ''): string => {
  if (Number.isNaN(x)) return 'n/a';
  if (!Number.isFinite(x)) return '∞';
  const d = unit === '' ? 3 : Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2;
  return num(x, d);
};
const fmtRatio = (r: number): string => (Number.isNaN(r) ? 'n/a' : Number.isFinite(r) ? `${r.toFixed(2)}×` : '∞');

/** The results as one markdown table: a row per figure, a column per system, each with its ratio to embedded. */
export function markdownTable(summaries: readonly SystemSummary[]): string[] {
  const ref = summaries.find((s) => s.system === 'embedded');
  const out = [
    `| figure | ${summaries.map((s) => LABEL[s.system]).join(' | ')} |`,
    `|---|${summaries.map(() => '---:').join('|')}|`,
  ];
  for (const m of metrics()) {
    const cells = summaries.map((s) => {
      const v = m.get(s);
      const r = ref && s !== ref ? ` (${fmtRatio(ratioTo(v, m.get(ref)))})` : '';
      return `${fmt(v, m.unit)}${m.unit && m.unit !== '%' ? ` ${m.unit}` : m.unit}${r}`;
    });
    out.push(`| ${m.name} (${m.better} is better) | ${cells.join(' | ')} |`);
  }
  return out;
}

function definitions(w: Workload): string[] {
  return [
    'throughput, saturated = tasks completed per second in the second half of the overload phase, when every system has a backlog (the fleet, not the offered load, is the limit); '
      + `nominal fleet capacity = ${w.spec.agents} agents ÷ mean duration = ${num(w.nominalCapacity)} tasks/s`,
    'wait = an agent got the task − the producer sent it (one clock, the client process); a task never started counts as infinitely late',
    'deadlines met = share of the tasks with a deadline whose agent finished them by the deadline (the dashboard\'s SLA compliance)',
    `wait targets met = share of all tasks started within their priority's target: critical ${WAIT_TARGET_MS[0] / 1000} s, high ${WAIT_TARGET_MS[1] / 1000} s, normal ${WAIT_TARGET_MS[2] / 1000} s, low ${WAIT_TARGET_MS[3] / 1000} s`,
    "fairness = Jain's index (Σx)² ÷ (n·Σx²) over every tenant with demand in the overload phase, the flooding one included, of x = starts in that phase ÷ the tenant's max-min fair share of those starts "
      + '(water-filling over the tasks each tenant submitted in the phase: a tenant asking for less than an equal share gets all it asked for, the rest is divided equally); 1 = exactly max-min fair',
    'flooding tenant, share of starts = its starts ÷ all starts in the overload phase (its share of the demand and its max-min fair share are in the notes)',
    'capability misses = starts by an agent that lacks a capability the task requires (the naive agent runs it anyway; a real one would fail or bounce it)',
    'priority inversions = starts (of tasks the agent can run) while a higher-priority task that the same agent could run had been acknowledged by the system and was not started yet; % of such starts (judge() in kafkaWorkload.ts)',
    'ratio = the figure ÷ the same figure of Switchyard (embedded) in this run; whether higher or lower is better is in the row name',
  ];
}

export async function runPeers(options: PeersOptions = {}, log: (l: string) => void = console.log): Promise<PeersReport> {
  const spec: WorkloadSpec = { ...DEFAULT_SPEC };
  for (const k of Object.keys(DEFAULT_SPEC) as (keyof WorkloadSpec)[]) if (options[k] !== undefined) spec[k] = options[k];
  if (spec.tenants < 2 || spec.agents < 1 || spec.tasks < 1 || spec.capSets < 1) throw new Error('peers: need tasks ≥ 1, agents ≥ 1, capSets ≥ 1 and tenants ≥ 2');
  const systems = options.systems ?? [...SYSTEMS];
  const w = makeWorkload(spec);
  const base: Omit<PeersClientConfig, 'system'> = { spec, pollMaxMs: options.pollMaxMs ?? 100, drainTimeoutMs: options.drainTimeoutMs ?? 180_000, queuePrefix: '' };
  const servers = w.fleet.reqSets.map((_, r) => w.fleet.servable.filter((row) => row[r]).length);
  const withDeadline = Array.from(w.deadlineMs).filter((x) => !Number.isNaN(x)).length;
  log(`  workload: ${num(spec.tasks)} tasks over ${num(w.lastArrivalMs / 1000, 1)} s (overload ${num(w.overloadEndMs / 1000, 1)} s), mean duration ${num(w.meanDurationMs)} ms, `
    + `nominal capacity ${num(w.nominalCapacity)} tasks/s, ${withDeadline} with deadlines`);

  const summaries: SystemSummary[] = [];
  let broker: Broker | undefined;
  let redis: RedisServer | undefined;
  const brokerInfo: string[] = [];
  try {
    for (const system of systems) {
      const load = loadavg();
      log(`  ${system}: load ${load.map((x) => x.toFixed(2)).join(' ')} at start`);
      let run: ClientRun;
      let serverWhat = '';
      let storeWhat: string | undefined;
      if (system === 'embedded') {
        run = await runEmbeddedSystem(base, w, log);
        serverWhat = 'server process (dispatcher + HTTP + SQLite)';
      } else if (system === 'kafka') {
        if (!broker) {
          broker = options.kafkaBrokers
            ? { brokers: options.kafkaBrokers, version: 'external', stop: async () => undefined }
            : await startBroker(log);
          brokerInfo.push(`Kafka ${broker.version} (${broker.brokers.join(',')})`);
        }
        run = await runKafkaSystem(base, w, broker, log);
        serverWhat = 'dispatcher process';
        storeWhat = 'Kafka broker';
      } else {
        if (!redis) {
          redis = await startRedis(log);
          brokerInfo.push(`redis-server ${redis.version} (AOF, fsync every second)`);
        }
        const r = redis;
        run = await runClient({ ...base, system, redis: { host: r.host, port: r.port }, queuePrefix: `peers-${Date.now().toString(36)}-${system}` }, w, log,
          { store: () => procCpuMs(r.pid) });
        serverWhat = 'none (agents and producers talk to Redis directly)';
        storeWhat = 'redis-server';
      }
      const s = summarize(system, w, run, load, serverWhat, storeWhat);
      summaries.push(s);
      log(`  ${system}: ${num(s.completed)} of ${num(spec.tasks)} completed in ${num(s.wallS, 1)} s; throughput ${num(s.throughput)}/s; `
        + `p99 wait ${s.waitP99.map((x) => fmt(x, 's')).join(' / ')} s; deadlines met ${fmt(s.deadlineMet * 100, '%')}%; Jain ${fmt(s.jain)}; `
        + `capability misses ${s.capabilityMisses}; inversions ${fmt(s.inversionRate * 100, '%')}%`);
    }
  } finally {
    await broker?.stop().catch((e: Error) => log(`  broker stop failed: ${e.message}`));
    await redis?.stop().catch((e: Error) => log(`  redis stop failed: ${e.message}`));
  }

  const ref = summaries.find((s) => s.system === 'embedded');
  const rows: ResultRow[] = [];
  for (const m of metrics()) {
    for (const s of summaries) {
      const v = m.get(s);
      const r = ref ? ratioTo(v, m.get(ref)) : NaN;
      rows.push({
        name: `${m.name}: ${LABEL[s.system]}`, value: v, unit: m.unit,
        note: s === ref ? `reference; ${m.better} is better` : `÷ embedded ${fmtRatio(r)}`,
      });
    }
  }
  const notes: string[] = [...definitions(w)];
  for (const s of summaries) {
    const cpu = [
      s.cpu.server !== undefined ? `${s.cpu.serverWhat} ${num(s.cpu.server)}%` : undefined,
      s.cpu.store !== undefined ? `${s.cpu.storeWhat} ${num(s.cpu.store)}%` : undefined,
      `client (producers + ${spec.agents} agents) ${num(s.cpu.client)}%`,
    ].filter(Boolean).join(', ');
    notes.push(`${LABEL[s.system]}: ${num(s.submitted)} acknowledged, ${num(s.completed)} completed${s.timedOut ? ' (TIMED OUT)' : ''}, refused ${JSON.stringify(s.refused)}; `
      + `makespan ${num(s.makespanS, 1)} s, drained ${num(s.drainS, 1)} s after the last arrival; wait p50 by level ${s.waitP50.map((x) => fmt(x, 's')).join(' / ')} s, p99 ${s.waitP99.map((x) => fmt(x, 's')).join(' / ')} s; `
      + `wait targets met by level ${s.waitTargetMetByLevel.map((x) => `${fmt(x * 100, '%')}%`).join(' / ')}; ${s.deadlineTasks} deadline tasks; `
      + `flooding tenant: ${fmt(s.floodStartShare * 100, '%')}% of starts, ${fmt(s.floodDemandShare * 100, '%')}% of demand, max-min fair ${fmt(s.floodFairShare * 100, '%')}%; `
      + `inversions ${num(s.inversions)} of ${num(s.starts - s.capabilityMisses)} runnable starts (${num(s.inversionsOverShare)} with only over-share tenants' work above; with 100 ms grace ${fmt(s.inversionRate100 * 100, '%')}%); `
      + `duplicate deliveries ${s.duplicates}, re-assignments ${s.reassigned}, errors ${s.errors}; CPU over the run, % of one core: ${cpu}; load at start ${s.load.map((x) => x.toFixed(2)).join(' ')}`
      + (s.dispatcherEvents ? `; dispatcher: ${num(s.dispatcherCommits ?? 0)} commits, events ${JSON.stringify(s.dispatcherEvents)}` : ''));
  }
  log('');
  log('  results as markdown (ratio to switchyard embedded in parentheses):');
  for (const l of markdownTable(summaries)) log(`  ${l}`);
  return {
    title: 'peers: Switchyard (embedded, Kafka) vs BullMQ and a naive shared queue, one workload, one run',
    workload: [
      `tasks: ${num(spec.tasks)} (seed ${spec.seed}); priorities 5% critical, 15% high, 55% normal, 25% low; ${spec.tenants} tenants (${spec.tenants - 1} Zipf 0.8 + one flooding tenant sending ${num(spec.floodShare * 100)}% of all tasks), equal weights`,
      `fleet: ${spec.agents} simulated agents of capacity 1 over ${spec.capSets} capability sets (2–4 of 12 capabilities each); ${w.fleet.reqSets.length} requirement sets of 1–2 capabilities, `
        + `each servable by ${Math.min(...servers)}–${Math.max(...servers)} agents and asked for in proportion to that`,
      `durations: lognormal, median ${spec.medianMs} ms, sigma ${spec.sigma}, clipped to [${spec.minMs}, ${spec.maxMs}] ms; mean ${num(w.meanDurationMs)} ms → nominal fleet capacity ${num(w.nominalCapacity)} tasks/s`,
      `arrivals: Poisson, open loop; ${num(spec.overloadShare * 100)}% of the tasks at ${spec.overload}× capacity (${num(w.overloadEndMs / 1000, 1)} s: a backlog builds), the rest at ${spec.underload}× (it drains); last arrival at ${num(w.lastArrivalMs / 1000, 1)} s`,
      `deadlines: ${num(spec.deadlineShare * 100)}% of tasks, deadline = arrival + duration + U(${spec.slackMinMs / 1000}, ${spec.slackMaxMs / 1000}) s; Switchyard gets estimatedDurationMs = the true duration`,
      'switchyard (embedded): startServer() in the benchmark process, default policy, SQLite (WAL, fsync per batch); agents long-poll GET …/assignments?waitMs=1000 over HTTP keep-alive and POST …/complete',
      'switchyard (kafka): bench/kafkaDispatcher.ts (startServer with the Kafka log, ingress and egress, exactly once, default policy) in a child process; submissions produced to <prefix>.tasks (key = tenant); '
        + `one read_committed consumer in the client process reads all ${spec.agents} assignment topics and hands each record to its agent; completions, and every 2 s an idempotent ready as keep-alive (it re-registers an agent the dispatcher timed out: over Kafka no refusal reaches the agent), to <prefix>.agents`,
      'bullmq: one queue per requirement set, job priority 1 (critical) … 4 (low), removeOnComplete; a capacity-1 agent fetches by hand (Worker.getNextJob, non-blocking) from the queues its capabilities cover, '
        + `in turn starting after the queue it was last served from; with nothing to do it polls again after 5, 10, 20 … ms (at most ${base.pollMaxMs} ms); it calls moveToCompleted when done`,
      'naive shared queue: the same Redis and agents, one BullMQ queue for everything, FIFO, no priorities; each agent takes the next task whatever it requires',
      `all four: producers and agents in one child process (bench/peersClient.ts); the same tasks at the same offsets; the dispatching side's CPU is measured per process. Stores: ${brokerInfo.join('; ') || 'none'}`,
    ],
    results: rows,
    notes,
    spec,
    summaries,
  };
}
