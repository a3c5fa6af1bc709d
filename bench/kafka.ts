import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KafkaClientConfig, KafkaClientResult, PhaseResult, PhaseSpec } from './kafkaClient.js';
import type { DispatcherConfig, DispatcherWindow } from './kafkaDispatcher.js';
import { makeKafkaFleet, type Correctness } from './kafkaWorkload.js';
import { startBroker, type Broker } from './broker.js';
import { machineCpu, mailbox, procCpuMs } from './processes.js';
import { num, type BenchReport, type ResultRow } from './support.js';

/**
 * Switchyard over Kafka (exactly once) against the naive fleet it replaces, in one run, on one
 * broker: the benchmark starts its own Kafka 4.4 broker with infra/kafka (or uses
 * KAFKA_BROKERS), then
 *
 * 1. Switchyard: the dispatcher (`kafkaDispatcher.ts`: startServer with the Kafka log, ingress
 *    and egress, as `serve --log kafka:`) in one child process; producers and agents
 *    (`kafkaClient.ts`, raw kafkajs) in another.
 * 2. Naive: no dispatcher; the same agents are one consumer group on a shared, partitioned task
 *    topic, and the same producers publish the same workload to it.
 *
 * Each gets a throughput phase (closed loop) and a latency phase (open loop at a fixed rate), and
 * what its agents started is judged the same way (priority inversions, capability misses,
 * imbalance, the flooding tenant's share).
 */

export interface KafkaOptions {
  agents?: number;
  capacity?: number;
  partitions?: number;
  floodShare?: number;
  offeredPerSecond?: number;
  throughputMs?: number;
  latencyMs?: number;
  /** Profile the dispatcher (node:inspector, 1 ms sampling) in the throughput window. Default true. */
  profile?: boolean;
}

const here = fileURLToPath(new URL('.', import.meta.url));

interface Contention {
  /** CPU of the dispatcher process, the client process, the broker JVM, as % of one core over the window; the whole machine's busy share. */
  dispatcherPct?: number;
  clientPct: number;
  brokerPct?: number;
  machineBusyPct?: number;
}

interface Window {
  dispatcher?: DispatcherWindow;
  contention: Contention;
}

interface SystemRun {
  client: KafkaClientResult;
  windows: Record<string, Window>;
  load: number[];
}

async function runSystem(
  mode: 'switchyard' | 'naive', broker: Broker, clientCfg: Omit<KafkaClientConfig, 'mode' | 'prefix'>,
  profilePhases: readonly string[], profileDir: string, log: (l: string) => void,
): Promise<SystemRun> {
  const prefix = `bench-${Date.now().toString(36)}-${mode === 'switchyard' ? 'sy' : 'naive'}`;
  const load = loadavg();
  log(`  ${mode}: load ${load.map((x) => x.toFixed(2)).join(' ')} at start; topic prefix ${prefix}`);
  let dispatcher: ChildProcess | undefined;
  let dbox: ReturnType<typeof mailbox> | undefined;
  if (mode === 'switchyard') {
    const dcfg: DispatcherConfig = { brokers: broker.brokers, prefix, profileDir };
    const t0 = performance.now();
    dispatcher = fork(join(here, 'kafkaDispatcher.js'), [JSON.stringify(dcfg)], { execArgv: ['--max-old-space-size=4096'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    dbox = mailbox(dispatcher, 'dispatcher');
    await dbox.next('ready', 120_000);
    log(`  switchyard: dispatcher up (writer elected, ingress subscribed) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const ask = async <T>(cmd: object, kind: string): Promise<T> => {
    dispatcher!.send(cmd);
    return dbox!.next<T>(kind);
  };
  /** The agents' ready records go through the ingress like everything else: wait until the dispatcher has them all. */
  const registered = async (capacity: number): Promise<void> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const s = await ask<{ agentsAlive: number; capacity: number }>({ cmd: 'stats' }, 'stats');
      if (s.agentsAlive >= clientCfg.agents && s.capacity === clientCfg.agents * capacity) return;
      if (Date.now() > deadline) throw new Error(`the dispatcher has ${s.agentsAlive} of ${clientCfg.agents} agents with ${s.capacity} slots; expected ${clientCfg.agents * capacity}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const cfg: KafkaClientConfig = { ...clientCfg, mode, prefix };
  const client = fork(join(here, 'kafkaClient.js'), [JSON.stringify(cfg)], { execArgv: ['--max-old-space-size=4096'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const cbox = mailbox(client, `${mode} client`);
  const windows: Record<string, Window> = {};
  const pending: Promise<void>[] = [];
  const failures: Error[] = [];
  const track = (p: Promise<void>) => { pending.push(p.catch((e: Error) => { failures.push(e); })); };
  let edge0: { broker?: number; dispatcher?: number; machine?: { busy: number; total: number }; at: number } | undefined;
  client.on('message', (m: { kind: string; line?: string; phase?: string; edge?: string; capacity?: number }) => {
    if (m.kind === 'log') log(`  ${m.line}`);
    if (m.kind === 'capacity') {
      track((dispatcher ? registered(m.capacity!) : Promise.resolve()).then(() => { client.send({ cmd: 'go' }); }));
    }
    if (m.kind === 'drained') {
      track((dispatcher ? ask<{ seqs: number[]; ats: number[] }>({ cmd: 'admissions' }, 'admissions') : Promise.resolve({ seqs: [], ats: [] }))
        .then((a) => { client.send({ cmd: 'admissions', seqs: a.seqs, ats: a.ats }); }));
    }
    if (m.kind !== 'window' || !m.phase) return;
    const phase = m.phase;
    if (m.edge === 'start') {
      edge0 = { broker: procCpuMs(broker.pid), dispatcher: procCpuMs(dispatcher?.pid), machine: machineCpu(), at: performance.now() };
      if (dispatcher) track(ask({ cmd: 'window-start', profile: profilePhases.includes(phase) }, 'ack').then(() => undefined));
    } else if (edge0) {
      const e0 = edge0;
      const ms = performance.now() - e0.at;
      const b = procCpuMs(broker.pid);
      const d = procCpuMs(dispatcher?.pid);
      const mc = machineCpu();
      windows[phase] = {
        contention: {
          brokerPct: b !== undefined && e0.broker !== undefined ? ((b - e0.broker) / ms) * 100 : undefined,
          dispatcherPct: d !== undefined && e0.dispatcher !== undefined ? ((d - e0.dispatcher) / ms) * 100 : undefined,
          clientPct: 0,
          machineBusyPct: mc && e0.machine ? ((mc.busy - e0.machine.busy) / (mc.total - e0.machine.total)) * 100 : undefined,
        },
      };
      if (dispatcher) track(ask<DispatcherWindow>({ cmd: 'window-end', name: phase }, 'window').then((w) => { windows[phase].dispatcher = w; }));
    }
  });
  await cbox.next('registered', 180_000);
  if (dispatcher) await registered(clientCfg.capacity);
  client.send({ cmd: 'go' });
  const result = await cbox.next<KafkaClientResult>('result', 900_000);
  await Promise.all(pending);
  if (failures.length > 0) throw failures[0];
  await new Promise((r) => { if (client.exitCode !== null) r(undefined); else client.once('exit', r); });
  if (dispatcher && dbox) {
    dispatcher.send({ cmd: 'stop' });
    await dbox.next('stopped', 60_000).catch((e: Error) => log(`  dispatcher stop: ${e.message}`));
    await new Promise((r) => { if (dispatcher!.exitCode !== null) r(undefined); else dispatcher!.once('exit', r); });
  }
  for (const [name, p] of Object.entries(result.phases)) {
    if (windows[name]) windows[name].contention.clientPct = (p.clientCpuMs / p.windowMs) * 100;
  }
  return { client: result, windows, load };
}

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : x === Infinity ? '∞' : '–');
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : x === Infinity ? '∞' : '–');
const pctOf = (a: number, b: number) => (b > 0 ? (a / b) * 100 : NaN);

function contentionNote(c: Contention | undefined): string {
  if (!c) return '';
  const parts = [];
  if (c.dispatcherPct !== undefined) parts.push(`dispatcher ${f0(c.dispatcherPct)}%`);
  parts.push(`clients ${f0(c.clientPct)}%`);
  if (c.brokerPct !== undefined) parts.push(`broker ${f0(c.brokerPct)}%`);
  if (c.machineBusyPct !== undefined) {
    // What the other sessions on the machine used meanwhile: all cores' busy time minus these three processes.
    const others = (c.machineBusyPct / 100) * cpus().length * 100 - (c.dispatcherPct ?? 0) - c.clientPct - (c.brokerPct ?? 0);
    parts.push(`machine ${f0(c.machineBusyPct)}% of ${cpus().length} cores busy, other processes ~${f0(Math.max(0, others))}%`);
  }
  return `CPU, % of one core: ${parts.join(', ')}`;
}

function stalls(w: DispatcherWindow | undefined): string {
  if (!w) return '';
  return `${w.snapshots} snapshot(s) in the window; the writer paused ${w.gapMs.over100Count}× over 100 ms between appends, longest ${num(w.gapMs.max)} ms`;
}

function describe(name: string, p: PhaseResult): string {
  const s = p.windowMs / 1000;
  return `${name}: ${num(p.submitted / s)} submitted/s, ${num(p.started / s)} started/s; sent→received p50 ${f1(p.latency.p50)} ms, p99 ${f1(p.latency.p99)} ms, max ${f1(p.latency.max)} ms (${num(p.latency.count)} samples, ${p.neverStarted} never received)`;
}

function dispatcherNote(name: string, w: DispatcherWindow | undefined, slots: number): string | undefined {
  if (!w) return undefined;
  const s = w.ms / 1000;
  return `dispatcher, ${name} window: ${num(w.commits / s)} commits/s, ${f1(w.events / Math.max(1, w.commits))} events and ${f1(w.inputOffsets / Math.max(1, w.commits))} input offsets per commit; `
    + `commit (append) p50 ${f1(w.commitMs.p50)} ms p90 ${f1(w.commitMs.p90)} ms p99 ${f1(w.commitMs.p99)} ms, inside append ${f0(pctOf(w.appendMs, w.ms))}% of the window; `
    + `event loop ${f0(w.elu * 100)}% busy, CPU ${f0(pctOf(w.cpuMs, w.ms))}%; mean waiting ${num(w.meanWaiting)}, mean running ${num(w.meanRunning)} of ${num(slots)} slots; `
    + `longest pause between two appends ${num(w.gapMs.max)} ms, ${w.gapMs.over100Count} pauses over 100 ms totalling ${num(w.gapMs.over100Ms)} ms; `
    + (w.snapshots > 0 ? `${w.snapshots} snapshots (${num(w.snapshotBytes / w.snapshots / 2 ** 20, 1)} MiB of JSON each; ${num(w.snapshotMs)} ms in saveSnapshot, JSON.stringify not included); ` : 'no snapshot; ')
    + `${w.deadLetters} dead letters; events ${JSON.stringify(w.byType)}`;
}

/** The dispatcher's Kafka requests per commit: what one append's transaction (and the ingress around it) costs in round trips. */
function requestNote(name: string, w: DispatcherWindow | undefined): string | undefined {
  if (!w || w.commits === 0) return undefined;
  const per = w.requests.filter((r) => r.client !== 'writer election consumer' && r.count >= w.commits / 20).slice(0, 12)
    .map((r) => `${r.client.split(' ')[0]} ${r.api} ${(r.count / w.commits).toFixed(2)}× ${f1(r.meanMs)} ms`);
  const writer = w.requests.filter((r) => r.client.startsWith('writer (')).reduce((a, r) => a + r.totalMs, 0);
  const reader = w.requests.filter((r) => r.client.startsWith('reader')).reduce((a, r) => a + r.totalMs, 0);
  return `dispatcher, ${name} window, Kafka requests per commit (count × mean time from send to response): ${per.join(', ')}; `
    + `per append (mean ${f1(w.appendMs / w.commits)} ms): the writer's requests ${f1(writer / w.commits)} ms, the reader's ListOffsets (waiting for the commit markers) ${f1(reader / w.commits)} ms, the rest is pauses between those polls, client-side work and waiting for the CPU`;
}

function profileNotes(name: string, w: DispatcherWindow | undefined): string[] {
  if (!w?.profile) return [];
  return [
    `dispatcher CPU profile, ${name} window (${num(w.profile.samples)} samples of 1 ms, ${w.profile.file}); self time by area: `
      + w.profile.byArea.slice(0, 10).map((a) => `${a.area} ${f1(a.selfPct)}%`).join(', '),
    `  top self frames: ` + w.profile.top.slice(0, 15).map((t) => `${f1(t.selfPct)}% ${t.name}${t.where ? ` (${t.where})` : ''}`).join('; '),
  ];
}

export async function runKafka(options: KafkaOptions = {}, log: (l: string) => void = console.log): Promise<BenchReport> {
  const agents = options.agents ?? 50;
  const capacity = options.capacity ?? 4;
  const wideCapacity = 40;
  const partitions = options.partitions ?? 12;
  const floodShare = options.floodShare ?? 0.4;
  const offered = options.offeredPerSecond ?? 2000;
  const throughputMs = options.throughputMs ?? 20_000;
  const latencyMs = options.latencyMs ?? 15_000;
  const profile = options.profile ?? true;
  const narrow: PhaseSpec[] = [
    { name: 'throughput', load: 'closed', capacity, warmupMs: 5000, measureMs: throughputMs },
    { name: 'latency', load: 'open', capacity, warmupMs: 3000, measureMs: latencyMs },
  ];
  // The same dispatcher with ten times the slots: at 50 × 4 the fleet's slots, not the dispatcher, may be the limit.
  const wide: PhaseSpec[] = [
    { name: 'throughput-wide', load: 'closed', capacity: wideCapacity, warmupMs: 5000, measureMs: Math.round(throughputMs * 0.75) },
    { name: 'latency-wide', load: 'open', capacity: wideCapacity, warmupMs: 3000, measureMs: Math.round(latencyMs * 0.8) },
  ];
  const clientCfg: Omit<KafkaClientConfig, 'mode' | 'prefix'> = {
    brokers: [], agents, capacity, floodShare, partitions,
    producers: 4, batch: 500, minBatch: 100, maxOutstanding: 4000, offeredPerSecond: offered,
    phases: [...narrow, ...wide],
    drainMs: 8000, graceMs: [0, 100],
  };
  const profileDir = mkdtempSync(join(tmpdir(), 'switchyard-bench-kafka-prof-'));
  const broker = await startBroker(log);
  clientCfg.brokers = broker.brokers;
  let sy: SystemRun;
  let naive: SystemRun;
  try {
    sy = await runSystem('switchyard', broker, clientCfg, profile ? ['throughput', 'throughput-wide'] : [], profileDir, log);
    for (const [name, p] of Object.entries(sy.client.phases)) log(`  switchyard ${describe(name, p)}`);
    naive = await runSystem('naive', broker, { ...clientCfg, phases: narrow }, [], profileDir, log);
    for (const [name, p] of Object.entries(naive.client.phases)) log(`  naive ${describe(name, p)}`);
  } finally {
    await broker.stop().catch((e: Error) => log(`  broker stop failed: ${e.message}`));
  }

  const fleet = makeKafkaFleet(agents, floodShare);
  const servers = fleet.reqSets.map((_, r) => fleet.servable.filter((row) => row[r]).length);
  const sec = (p: PhaseResult) => p.windowMs / 1000;
  const completedPerS = (w: Window | undefined) => (w?.dispatcher ? (w.dispatcher.byType.TaskCompleted ?? 0) / (w.dispatcher.ms / 1000) : NaN);
  const syT = sy.client.phases.throughput;
  const syL = sy.client.phases.latency;
  const syTW = sy.client.phases['throughput-wide'];
  const syLW = sy.client.phases['latency-wide'];
  const nvT = naive.client.phases.throughput;
  const nvL = naive.client.phases.latency;
  const syRate = completedPerS(sy.windows.throughput);
  const syRateWide = completedPerS(sy.windows['throughput-wide']);
  const nvRate = nvT.started / sec(nvT);
  const pick = (p: PhaseResult, from: Correctness['waitingFrom'], g: number): Correctness => p.correctness.find((x) => x.waitingFrom === from && x.graceMs === g)!;
  const syC = pick(syT, 'visible', 0);
  const syC100 = pick(syT, 'visible', 100);
  const syCA = pick(syT, 'admitted', 0);
  const syCW = pick(syTW, 'admitted', 0);
  const nvC = pick(nvT, 'visible', 0);
  const nvC100 = pick(nvT, 'visible', 100);
  const runnable = (c: Correctness) => c.starts - c.capabilityMisses;
  const invPct = (c: Correctness) => pctOf(c.inversions, runnable(c));
  const spread = (c: Correctness) => {
    const sorted = [...c.perAgent].sort((a, b) => a - b);
    const mean = sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length);
    return { min: sorted[0], max: sorted[sorted.length - 1], mean, zero: sorted.filter((v) => v === 0).length };
  };
  const syI = spread(syC);
  const nvI = spread(nvC);
  const fair = 1 / fleet.tenantNames.length;
  const ratio = (a: number, b: number) => (b > 0 ? a / b : Infinity);
  const slots = agents * capacity;

  const rows: ResultRow[] = [
    {
      name: `switchyard ${agents}×${capacity}: full lifecycle throughput`, value: syRate, unit: 'tasks/s', target: { kind: 'min', value: 10_000 },
      note: `TaskCompleted committed per s, ${num(syT.started / sec(syT))} assignments received/s; ${contentionNote(sy.windows.throughput?.contention)}`,
    },
    { name: `switchyard ${agents}×${capacity}: submit→assign p50 / p99 at saturation`, value: syT.latency.p99, unit: 'ms', note: `p50 ${f1(syT.latency.p50)} ms; the closed loop keeps ~${num(clientCfg.maxOutstanding)} tasks waiting` },
    { name: `switchyard ${agents}×${capacity}: submit→assign p50 at ${num(offered)}/s`, value: syL.latency.p50, unit: 'ms', note: `offered ${num(syL.offeredRate)}/s, assigned ${num(syL.started / sec(syL))}/s; ${contentionNote(sy.windows.latency?.contention)}` },
    {
      name: `switchyard ${agents}×${capacity}: submit→assign p99 at ${num(offered)}/s`, value: syL.latency.p99, unit: 'ms', target: { kind: 'max', value: 100 },
      note: `p90 ${f1(syL.latency.p90)} ms, max ${f1(syL.latency.max)} ms, ${num(syL.latency.count)} samples, ${syL.neverStarted} never assigned; ${stalls(sy.windows.latency?.dispatcher)}`,
    },
    {
      name: `switchyard ${agents}×${wideCapacity}: full lifecycle throughput`, value: syRateWide, unit: 'tasks/s', target: { kind: 'min', value: 10_000 },
      note: `${num(syTW.started / sec(syTW))} assignments received/s; submit→assign p50 ${f1(syTW.latency.p50)} ms p99 ${f1(syTW.latency.p99)} ms; ${contentionNote(sy.windows['throughput-wide']?.contention)}`,
    },
    {
      name: `switchyard ${agents}×${wideCapacity}: submit→assign p99 at ${num(offered)}/s`, value: syLW.latency.p99, unit: 'ms', target: { kind: 'max', value: 100 },
      note: `p50 ${f1(syLW.latency.p50)} ms, p90 ${f1(syLW.latency.p90)} ms, max ${f1(syLW.latency.max)} ms, ${syLW.neverStarted} never assigned; ${stalls(sy.windows['latency-wide']?.dispatcher)}; ${contentionNote(sy.windows['latency-wide']?.contention)}`,
    },
    { name: 'switchyard: capability misses', value: syC.capabilityMisses, unit: 'tasks', note: `of ${num(syC.starts)} starts (${agents}×${capacity} throughput window); ${syCW.capabilityMisses} of ${num(syCW.starts)} at ×${wideCapacity}` },
    {
      name: 'switchyard: priority inversions, waiting = in the dispatcher', value: syCA.inversions, unit: 'starts',
      note: `${f1(invPct(syCA))}% of starts; ${num(syCA.inversionsOverShare)} of them with only over-share tenants' work waiting above (fairness deferral); ×${wideCapacity}: ${num(syCW.inversions)} (${f1(invPct(syCW))}%, ${num(syCW.inversionsOverShare)} fairness)`,
    },
    {
      name: 'switchyard: priority inversions, waiting = acknowledged by Kafka', value: syC.inversions, unit: 'starts',
      note: `${f1(invPct(syC))}% of starts (${num(syC.inversionsOverShare)} fairness); with 100 ms grace ${num(syC100.inversions)} (${f1(invPct(syC100))}%); the rest is tasks in the topic the ingress had not read yet`,
    },
    {
      name: 'switchyard: flooding tenant, share of starts', value: pctOf(syC.floodStarts, syC.starts), unit: '%',
      note: `submitted ${f1(syC.floodSubmitShare * 100)}%, equal share ${f1(fair * 100)}%; started ahead of another tenant's waiting runnable work ${num(syCA.floodAheadOfOthers)} times; start−sent p50/p99 other tenants ${f0(syC.waitOthers.p50)}/${f0(syC.waitOthers.p99)} ms, flooding tenant ${f0(syC.waitFlood.p50)}/${f0(syC.waitFlood.p99)} ms`,
    },
    { name: 'switchyard: tasks per agent, max ÷ min', value: syI.max / Math.max(1, syI.min), unit: '×', note: `min ${num(syI.min)}, max ${num(syI.max)}, mean ${num(syI.mean)}; ${syI.zero} agents got none` },

    {
      name: 'naive: raw throughput (tasks taken by agents)', value: nvRate, unit: 'tasks/s',
      note: `${num(runnable(nvC) / sec(nvT))}/s of them runnable by the agent that took them; ${contentionNote(naive.windows.throughput?.contention)}`,
    },
    { name: 'naive: sent→taken p50 / p99 at saturation', value: nvT.latency.p99, unit: 'ms', note: `p50 ${f1(nvT.latency.p50)} ms` },
    {
      name: `naive: sent→taken p99 at ${num(offered)}/s`, value: nvL.latency.p99, unit: 'ms',
      note: `p50 ${f1(nvL.latency.p50)} ms, max ${f1(nvL.latency.max)} ms, ${nvL.neverStarted} never taken; ${contentionNote(naive.windows.latency?.contention)}`,
    },
    { name: 'naive: capability misses', value: nvC.capabilityMisses, unit: 'tasks', note: `${f1(pctOf(nvC.capabilityMisses, nvC.starts))}% of ${num(nvC.starts)} starts` },
    {
      name: 'naive: priority inversions, waiting = acknowledged by Kafka', value: nvC.inversions, unit: 'starts',
      note: `${f1(invPct(nvC))}% of runnable starts (${num(nvC.inversionsOverShare)} with only over-share tenants' work above); with 100 ms grace ${num(nvC100.inversions)} (${f1(invPct(nvC100))}%)`,
    },
    {
      name: 'naive: flooding tenant, share of starts', value: pctOf(nvC.floodStarts, nvC.starts), unit: '%',
      note: `submitted ${f1(nvC.floodSubmitShare * 100)}%; started ahead of another tenant's waiting runnable work ${num(nvC.floodAheadOfOthers)} times; start−sent p50/p99 other tenants ${f0(nvC.waitOthers.p50)}/${f0(nvC.waitOthers.p99)} ms, flooding tenant ${f0(nvC.waitFlood.p50)}/${f0(nvC.waitFlood.p99)} ms`,
    },
    {
      name: 'naive: tasks per agent, max ÷ min', value: nvI.min > 0 ? nvI.max / nvI.min : Infinity, unit: '×',
      note: `min ${num(nvI.min)}, max ${num(nvI.max)}, mean ${num(nvI.mean)}; ${nvI.zero} of ${agents} agents got none (${agents} consumers, ${partitions} partitions)`,
    },

    { name: `ratio: naive raw ÷ switchyard ${agents}×${capacity} throughput`, value: ratio(nvRate, syRate), unit: '×', note: `runnable only ${ratio(runnable(nvC) / sec(nvT), syRate).toFixed(2)}×; ÷ switchyard ×${wideCapacity}: ${ratio(nvRate, syRateWide).toFixed(2)}×` },
    { name: `ratio: p99 at ${num(offered)}/s, switchyard ÷ naive`, value: ratio(syL.latency.p99, nvL.latency.p99), unit: '×', note: `×${wideCapacity}: ${ratio(syLW.latency.p99, nvL.latency.p99).toFixed(2)}×` },
    { name: 'ratio: inversion rate, naive ÷ switchyard (both by Kafka ack)', value: ratio(invPct(nvC), invPct(syC)), unit: '×', note: `naive ÷ switchyard by admission: ${ratio(invPct(nvC), invPct(syCA)).toFixed(1)}×` },
  ];

  const notes: string[] = [];
  for (const [name, capa] of [['throughput', capacity], ['latency', capacity], ['throughput-wide', wideCapacity], ['latency-wide', wideCapacity]] as const) {
    const n = dispatcherNote(name, sy.windows[name]?.dispatcher, agents * capa);
    if (n) notes.push(n);
    const r = requestNote(name, sy.windows[name]?.dispatcher);
    if (r) notes.push(r);
    const p = sy.client.phases[name];
    if (p?.ingressLag) notes.push(`switchyard ${name}: producer send → broker ack p50 ${f1(p.ackLatency.p50)} ms p99 ${f1(p.ackLatency.p99)} ms; broker ack → taken in by the dispatcher (TaskSubmitted.at) p50 ${f1(p.ingressLag.p50)} ms p90 ${f1(p.ingressLag.p90)} ms p99 ${f1(p.ingressLag.p99)} ms`);
  }
  notes.push(...profileNotes('throughput', sy.windows.throughput?.dispatcher));
  notes.push(...profileNotes('throughput-wide', sy.windows['throughput-wide']?.dispatcher));
  notes.push(`tenants over 1.5 × an equal share of starts at some fairness-explained inversion (switchyard, 50×${capacity}): ${syCA.overShareTenants.join(', ')}`);
  for (const [name, r] of [['switchyard', sy], ['naive', naive]] as const) {
    notes.push(`${name}: load ${r.load.map((x) => x.toFixed(2)).join(' ')} at start; setup ${num(r.client.setupMs)} ms; send errors ${r.client.sendErrors}, duplicate deliveries ${r.client.duplicates}, re-assignments ${r.client.reassigned}`);
  }
  notes.push(`Little's law at ${agents}×${capacity}: ${num(slots)} slots ÷ ${num(syRate)} tasks/s = ${f0((slots / syRate) * 1000)} ms per slot turn (assign commit → agent → completion → next commit)`);

  return {
    title: 'Kafka: Switchyard (exactly once) vs a naive consumer-group fleet, one broker, one run',
    workload: [
      `broker: Kafka ${broker.version}, single node KRaft (infra/kafka/start.sh, 512 MiB heap), on this machine`,
      'switchyard: a child process runs startServer({ log: getKafkaEventLog, kafka: {brokers, prefix} }) with the default policy, as `serve --log kafka:` does; ingress offsets, events and assignments commit in one transaction per batch',
      `fleet: ${agents} agents, each with a random 3–6 of 12 capabilities; each consumes <prefix>.assignments.<agentId> (read_committed, own group) and produces {kind:"complete"} to <prefix>.agents at once; heartbeats every 2 s`,
      `tasks: ${fleet.reqSets.length} requirement sets (none 20%; 15 sets of 1–2 capabilities, each servable by ${Math.min(...servers.slice(1))}–${Math.max(...servers.slice(1))} agents); priorities 5% critical, 15% high, 55% normal, 25% low; `
        + `50 tenants (Zipf 0.8) and one flooding tenant sending ${f0(floodShare * 100)}% of all submissions; key = tenant; a submission is ~140 B of JSON`,
      `producers: ${clientCfg.producers} kafkajs producers, up to ${clientCfg.batch} submissions per send; producers and agents in one child process, raw kafkajs`,
      `phases: throughput = closed loop, at most ${num(clientCfg.maxOutstanding)} tasks submitted and not yet started (5 s warm-up, ${throughputMs / 1000} s measured); `
        + `latency = open loop at ${num(offered)} submissions/s (3 s warm-up, ${latencyMs / 1000} s measured); latency = agent received − producer sent, one process clock`,
      `switchyard runs both at capacity ${capacity} (${num(slots)} slots), then both again at capacity ${wideCapacity} (${num(agents * wideCapacity)} slots, ${wide[0].measureMs / 1000} s and ${wide[1].measureMs / 1000} s measured)`,
      `naive: no dispatcher; the same ${agents} agents are one consumer group on <prefix>.tasks with ${partitions} partitions, each takes whatever it receives; the same producers and task sequence`,
      'judging (both): a start is a capability miss if the agent lacks a required capability, and a priority inversion if a higher-priority task the same agent could run was waiting and not started. '
        + 'Start = the dispatcher\'s decision (assignedAt) for switchyard, the agent receiving the task for naive. Waiting from the broker\'s ack (both), or from TaskSubmitted.at (switchyard\'s own decisions)',
    ],
    results: rows,
    notes,
  };
}
