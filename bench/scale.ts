import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENTS } from './decisionCore.js';
import { COLORS, renderChart, short, type Panel } from './scaleChart.js';
import type { DecisionPoint, GeneratePoint, ReplayPoint, RestartPoint, ScaleAnswer, ScaleJob } from './scaleWorker.js';
import { GiB, MiB, machineLines, num, type BenchReport, type ResultRow } from './support.js';

/**
 * How cost grows with size: the decision core (bench/decisionCore.ts) as queue depth and fleet
 * size go up by decades, and replay/restart on the SQLite log (bench/replay.ts) as history does.
 * Every point runs in a fresh child process (bench/scaleWorker.ts). Writes docs/scale.svg and
 * prints markdown tables.
 *
 * `npm run bench:scale -- [--max-history 1000000] [--depths 1k,10k] [--agents 10,100] ...`
 */

export interface ScaleOptions {
  /** Queue depths measured at {@link fixedAgents} agents. */
  depths: number[];
  fixedAgents: number;
  /** Fleet sizes measured at {@link fixedDepth} queued tasks. */
  agents: number[];
  fixedDepth: number;
  /** History lengths (events) for replay and restart. */
  histories: number[];
  /** Events behind the snapshot: the runtime's snapshotEvery, the worst case. */
  tail: number;
  warmupMs: number;
  measureMs: number;
  /** Where the SVG goes. */
  out: string;
  /** Where the measurements go as JSON (optional). */
  json?: string;
  /** Parent of the temporary directory that holds the SQLite files. */
  tmp: string;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'scaleWorker.js');

export const DEFAULT_SCALE: ScaleOptions = {
  depths: [1_000, 10_000, 100_000, 1_000_000],
  fixedAgents: AGENTS,
  agents: [10, 100, 1_000, 10_000],
  fixedDepth: 100_000,
  histories: [10_000, 1_000_000, 10_000_000],
  tail: 50_000,
  warmupMs: 1000,
  measureMs: 4000,
  out: join(ROOT, 'docs', 'scale.svg'),
  tmp: tmpdir(),
};

const USAGE = 'flags: --depths N,N.. --fixed-agents N --agents N,N.. --fixed-depth N --histories N,N.. --max-depth N --max-agents N '
  + '--max-history N --tail N --warmup-ms N --measure-ms N --out file.svg --json file.json --tmp dir (N: 1000, 10k, 1M, 1e6)';

/** "10k" → 10,000; "1M" → 1,000,000; "1e6", "1_000_000" as written. */
function count(s: string, flag: string): number {
  const m = /^([0-9][0-9_.e+]*)([kKmM]?)$/.exec(s.trim());
  const v = m ? Number(m[1].replace(/_/g, '')) * (m[2] === '' ? 1 : m[2].toLowerCase() === 'k' ? 1e3 : 1e6) : NaN;
  if (!Number.isSafeInteger(v) || v <= 0) throw new Error(`${flag}: "${s}" is not a positive whole number. ${USAGE}`);
  return v;
}

/**
 * Flags from the command line; anything before the first `--flag` (the benchmark names given to
 * run.ts) is not ours.
 */
export function parseScaleArgs(argv: readonly string[]): ScaleOptions {
  const o: ScaleOptions = { ...DEFAULT_SCALE };
  const max: { depth?: number; agents?: number; history?: number } = {};
  const first = argv.findIndex((a) => a.startsWith('--'));
  const args = first < 0 ? [] : argv.slice(first);
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i];
    const value = args[i + 1];
    if (value === undefined) throw new Error(`${flag} needs a value. ${USAGE}`);
    const list = (): number[] => value.split(',').map((x) => count(x, flag));
    switch (flag) {
      case '--depths': o.depths = list(); break;
      case '--fixed-agents': o.fixedAgents = count(value, flag); break;
      case '--agents': o.agents = list(); break;
      case '--fixed-depth': o.fixedDepth = count(value, flag); break;
      case '--histories': o.histories = list(); break;
      case '--max-depth': max.depth = count(value, flag); break;
      case '--max-agents': max.agents = count(value, flag); break;
      case '--max-history': max.history = count(value, flag); break;
      case '--tail': o.tail = count(value, flag); break;
      case '--warmup-ms': o.warmupMs = count(value, flag); break;
      case '--measure-ms': o.measureMs = count(value, flag); break;
      case '--out': o.out = resolve(value); break;
      case '--json': o.json = resolve(value); break;
      case '--tmp': o.tmp = resolve(value); break;
      default: throw new Error(`unknown flag ${flag}. ${USAGE}`);
    }
  }
  const upTo = (xs: number[], limit: number | undefined): number[] => [...new Set(xs.filter((x) => limit === undefined || x <= limit))].sort((a, b) => a - b);
  o.depths = upTo(o.depths, max.depth);
  o.agents = upTo(o.agents, max.agents);
  o.histories = upTo(o.histories, max.history);
  return o;
}

/** Every point in a process of its own (see scaleWorker.ts), with the flags `npm run bench` uses. */
function inChild(job: ScaleJob): Promise<ScaleAnswer & { ok: true }> {
  return new Promise((res, rej) => {
    const child = fork(WORKER, [JSON.stringify(job)], { execArgv: ['--expose-gc', '--max-old-space-size=6144'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let answer: ScaleAnswer | undefined;
    child.on('message', (m) => { answer = m as ScaleAnswer; });
    child.on('error', rej);
    child.on('exit', (code, signal) => {
      if (answer?.ok) res(answer);
      else rej(new Error(`${job.kind} point failed (exit ${code ?? signal}): ${answer && !answer.ok ? answer.error : 'no answer'}`));
    });
  });
}

interface PointOf { decision: DecisionPoint; generate: GeneratePoint; replay: ReplayPoint; restart: RestartPoint }

async function point<K extends ScaleJob['kind']>(job: Extract<ScaleJob, { kind: K }>): Promise<PointOf[K]> {
  const a = await inChild(job);
  if (a.kind !== job.kind) throw new Error(`asked for ${job.kind}, got ${a.kind}`);
  return a.point as PointOf[K];
}

export interface HistoryResult {
  events: number;
  gen: GeneratePoint;
  replay: ReplayPoint;
  restart: RestartPoint;
}

export interface ScaleResults {
  machine: string[];
  options: ScaleOptions;
  /** Depth sweep and fleet sweep; the point they share is measured once and appears in both. */
  byDepth: DecisionPoint[];
  byAgents: DecisionPoint[];
  histories: HistoryResult[];
  /** History lengths not run, and why (not enough disk). */
  skipped: string[];
}

/** Bytes per event on disk measured at 1M (~460, with the task index); room for the WAL and a margin. */
const DISK_BYTES_PER_EVENT = 700;

async function decisionSweeps(o: ScaleOptions, log: (l: string) => void): Promise<{ byDepth: DecisionPoint[]; byAgents: DecisionPoint[] }> {
  const done = new Map<string, DecisionPoint>();
  const at = async (depth: number, agents: number): Promise<DecisionPoint> => {
    const key = `${depth}/${agents}`;
    let p = done.get(key);
    if (!p) {
      p = await point({ kind: 'decision', depth, agents, warmupMs: o.warmupMs, measureMs: o.measureMs });
      done.set(key, p);
      log(`  decision ${num(depth).padStart(9)} queued, ${num(agents).padStart(6)} agents: ${p.usPerDecision.toFixed(2)} µs/assignment, `
        + `CompleteTask+dispatch ${p.completeUs.toFixed(2)} µs, SubmitTask ${p.submitUs.toFixed(2)} µs, RSS ${num(p.rssBuilt / MiB)} MiB, `
        + `heap ${p.heapBuilt === undefined ? '?' : num(p.heapBuilt / MiB)} MiB, built in ${num(p.buildMs / 1000, 1)} s, CPU/wall ${p.cpuShare.toFixed(2)}`);
    }
    return p;
  };
  const byDepth: DecisionPoint[] = [];
  for (const d of o.depths) byDepth.push(await at(d, o.fixedAgents));
  const byAgents: DecisionPoint[] = [];
  for (const a of o.agents) byAgents.push(await at(o.fixedDepth, a));
  return { byDepth, byAgents };
}

async function historySweep(o: ScaleOptions, log: (l: string) => void, skipped: string[]): Promise<HistoryResult[]> {
  const dir = mkdtempSync(join(o.tmp, 'switchyard-scale-'));
  // Several GB at 10M events: do not leave them behind on Ctrl-C.
  const onSignal = (): void => {
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const out: HistoryResult[] = [];
  try {
    for (const events of o.histories) {
      const fs = statfsSync(dir);
      const free = fs.bavail * fs.bsize;
      if (free < events * DISK_BYTES_PER_EVENT) {
        const why = `${num(events)} events: skipped, ${num(free / GiB, 1)} GiB free in ${o.tmp}, needs about ${num((events * DISK_BYTES_PER_EVENT) / GiB, 1)} GiB`;
        log(`  ${why}`);
        skipped.push(why);
        continue;
      }
      const path = join(dir, `history-${events}.db`);
      try {
        const gen = await point({ kind: 'generate', path, events, tail: o.tail });
        log(`  history ${num(events).padStart(10)}: generated in ${num(gen.ms / 1000, 1)} s (${num(gen.events / (gen.ms / 1000))} events/s), `
          + `${num(gen.dbBytes / MiB)} MiB on disk, snapshot at ${num(gen.snapshotVersion)} (${num(gen.snapshotBytes / MiB, 1)} MiB)`);
        const replay = await point({ kind: 'replay', path });
        log(`  history ${num(events).padStart(10)}: rebuilt in ${num(replay.rebuild.ms / 1000, 1)} s (${num(replay.rebuild.events / (replay.rebuild.ms / 1000))} events/s, CPU/wall ${replay.rebuild.cpuShare.toFixed(2)})`);
        const restart = await point({ kind: 'restart', path });
        log(`  history ${num(events).padStart(10)}: restart open ${num(restart.openMs)} ms + ready ${num(restart.readyMs)} ms `
          + `(${num(readyFromProcessStart(restart))} ms since the process started), then the first command answered in ${num(restart.firstDecisionMs ?? NaN, 1)} ms`);
        out.push({ events, gen, replay, restart });
      } finally {
        rmSync(path, { force: true });
        rmSync(`${path}-wal`, { force: true });
        rmSync(`${path}-shm`, { force: true });
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/** Restart: open the log, load the snapshot, replay the tail, hold the writer lease: ready for the first decision. */
export const restartMs = (r: RestartPoint): number => r.openMs + r.readyMs;
/**
 * Ready, then one command decided, committed and answered. When the tail is a whole snapshotEvery
 * (the worst case), that first commit also saves a snapshot before its caller hears back.
 */
export const firstAnswerMs = (r: RestartPoint): number => restartMs(r) + (r.firstDecisionMs ?? 0);
/** Ready, counted from the start of the process (node boot, module loading) instead of from opening the log. */
export const readyFromProcessStart = (r: RestartPoint): number => r.sinceProcessStartMs - (r.firstDecisionMs ?? 0);

const mib = (b: number | undefined): string => (b === undefined ? '?' : num(b / MiB));

export function markdownTables(r: ScaleResults): string[] {
  const out: string[] = [];
  const decisionRows = (points: DecisionPoint[]): void => {
    // CPU/wall under 1: the process waited for a core (other work on the machine), and the µs are inflated by that much.
    out.push('| queued | agents (slots) | µs per assignment | µs per dispatch decision (handle(CompleteTask) + its events) | µs per SubmitTask | events per assignment | assignments/s | CPU/wall | RSS after build | heap after GC | peak RSS | build |');
    out.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const p of points) {
      out.push(`| ${num(p.n)} | ${num(p.agents)} (${num(p.slots)}) | ${p.usPerDecision.toFixed(2)} | ${p.completeUs.toFixed(2)} | ${p.submitUs.toFixed(2)} | ${p.eventsPerAssign.toFixed(2)} | `
        + `${num(p.rate)} | ${p.cpuShare.toFixed(2)} | ${mib(p.rssBuilt)} MiB | ${mib(p.heapBuilt)} MiB | ${mib(p.peakRss)} MiB | ${num(p.buildMs / 1000, 1)} s |`);
    }
  };
  if (r.byDepth.length) {
    out.push(`Decision cost vs queue depth (${num(r.options.fixedAgents)} agents):`, '');
    decisionRows(r.byDepth);
    out.push('');
  }
  if (r.byAgents.length) {
    out.push(`Decision cost vs fleet size (${num(r.options.fixedDepth)} queued):`, '');
    decisionRows(r.byAgents);
    out.push('');
  }
  if (r.histories.length) {
    out.push(`Replay and restart vs history (SQLite, warm page cache, snapshot ${num(r.options.tail)} events before the end):`, '');
    out.push('| history (events) | on disk | generate | generate events/s | rebuild from 0 | rebuild events/s | snapshot (version, size) | tail events | '
      + 'restart: open log + ready for the first decision | same, from process start | first command answered | restart steps (warm): snapshot load+parse+restore / tail |');
    out.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const h of r.histories) {
      const st = h.replay.steps;
      out.push(`| ${num(h.gen.events)} | ${num(h.gen.dbBytes / MiB)} MiB | ${num(h.gen.ms / 1000, 1)} s | ${num(h.gen.events / (h.gen.ms / 1000))} | `
        + `${num(h.replay.rebuild.ms / 1000, 1)} s | ${num(h.replay.rebuild.events / (h.replay.rebuild.ms / 1000))} (CPU/wall ${h.replay.rebuild.cpuShare.toFixed(2)}) | `
        + `${st.snapshotVersion ? `${num(st.snapshotVersion)}, ${num(st.snapshotBytes / MiB, 1)} MiB` : 'none'} | ${num(st.tailEvents)} | `
        + `${num(restartMs(h.restart) / 1000, 2)} s (${num(h.restart.openMs)} + ${num(h.restart.readyMs)} ms) | ${num(readyFromProcessStart(h.restart) / 1000, 2)} s | `
        + `${num(firstAnswerMs(h.restart) / 1000, 2)} s (+${num(h.restart.firstDecisionMs ?? NaN)} ms) | ${num(st.loadMs + st.parseMs + st.restoreMs)} / ${num(st.tailMs)} ms |`);
    }
    out.push('');
  }
  for (const s of r.skipped) out.push(`Skipped: ${s}`);
  return out;
}

export function chart(r: ScaleResults, command: string): string {
  const d = r.byDepth;
  const a = r.byAgents;
  const h = r.histories;
  const costSeries = (ps: DecisionPoint[], x: (p: DecisionPoint) => number): Panel['series'] => [
    { name: 'per assignment (all handle() time)', points: ps.map((p) => [x(p), p.usPerDecision]), color: COLORS.blue, marker: 'circle', labels: true },
    { name: 'per CompleteTask + dispatch + events', points: ps.map((p) => [x(p), p.completeUs]), color: COLORS.vermillion, marker: 'square' },
    { name: 'per SubmitTask', points: ps.map((p) => [x(p), p.submitUs]), color: COLORS.green, marker: 'triangle', dashed: true },
  ];
  const memSeries = (ps: DecisionPoint[], x: (p: DecisionPoint) => number): Panel['series'] => [
    { name: 'RSS after the queue is built', points: ps.map((p) => [x(p), p.rssBuilt / MiB]), color: COLORS.blue, marker: 'circle', labels: true },
    { name: 'heap after GC', points: ps.flatMap((p): [number, number][] => (p.heapBuilt === undefined ? [] : [[x(p), p.heapBuilt / MiB]])), color: COLORS.vermillion, marker: 'square' },
    { name: 'peak RSS (build + run)', points: ps.map((p) => [x(p), p.peakRss / MiB]), color: COLORS.green, marker: 'triangle', dashed: true },
  ];
  const us = (y: number): string => (y === 0 ? '0' : `${short(y)}`);
  const panels: Panel[] = [
    {
      id: 'cost-vs-depth', title: `Decision cost vs queue depth (${num(r.options.fixedAgents)} agents)`, xLabel: 'tasks queued (log scale)', yLabel: 'µs per decision',
      series: costSeries(d, (p) => p.n), yFormat: us,
    },
    {
      id: 'cost-vs-agents', title: `Decision cost vs fleet size (${short(r.options.fixedDepth)} queued)`, xLabel: 'agents (log scale; 2.5 slots each)', yLabel: 'µs per decision',
      series: costSeries(a, (p) => p.agents), yFormat: us,
    },
    { id: 'rss-vs-depth', title: `Memory vs queue depth (${num(r.options.fixedAgents)} agents)`, xLabel: 'tasks queued (log scale)', yLabel: 'MiB', series: memSeries(d, (p) => p.n) },
    { id: 'rss-vs-agents', title: `Memory vs fleet size (${short(r.options.fixedDepth)} queued)`, xLabel: 'agents (log scale)', yLabel: 'MiB', series: memSeries(a, (p) => p.agents) },
    {
      id: 'replay-vs-history', title: 'Replay speed vs history (SQLite)', xLabel: 'events in the log (log scale)', yLabel: 'events per second',
      reference: { y: 300_000, label: 'target 300k events/s' },
      series: [
        { name: 'rebuild from version 0 (state + projections)', points: h.map((x) => [x.gen.events, x.replay.rebuild.events / (x.replay.rebuild.ms / 1000)]), color: COLORS.blue, marker: 'circle', labels: true },
        { name: 'generating the log (handle + append)', points: h.map((x) => [x.gen.events, x.gen.events / (x.gen.ms / 1000)]), color: COLORS.purple, marker: 'diamond', dashed: true },
      ],
    },
    {
      id: 'restart-vs-history', title: `Restart time vs history (snapshot ${short(r.options.tail)} events back)`, xLabel: 'events in the log (log scale)', yLabel: 'seconds',
      reference: { y: 2, label: 'target 2 s' },
      series: [
        { name: 'open log → ready for the first decision', points: h.map((x) => [x.gen.events, restartMs(x.restart) / 1000]), color: COLORS.blue, marker: 'circle', labels: true },
        { name: 'same, from process start', points: h.map((x) => [x.gen.events, readyFromProcessStart(x.restart) / 1000]), color: COLORS.orange, marker: 'diamond', dashed: true },
        { name: '→ first command answered', points: h.map((x) => [x.gen.events, firstAnswerMs(x.restart) / 1000]), color: COLORS.purple, marker: 'circle', dashed: true },
        { name: 'snapshot load + parse + restore (warm)', points: h.map((x) => [x.gen.events, (x.replay.steps.loadMs + x.replay.steps.parseMs + x.replay.steps.restoreMs) / 1000]), color: COLORS.vermillion, marker: 'square' },
        { name: 'tail replay (warm)', points: h.map((x) => [x.gen.events, x.replay.steps.tailMs / 1000]), color: COLORS.green, marker: 'triangle' },
      ],
      yFormat: (y) => (y === 0 ? '0' : `${Number(y.toPrecision(2))}`),
    },
  ];
  const m = r.machine.map((l) => l.replace(/\s+/g, ' '));
  return renderChart({
    title: 'Switchyard at scale: decision cost, memory, replay and restart',
    subtitle: [
      `${new Date().toISOString().slice(0, 10)} · ${command} · every point in a fresh process`,
      ...m.filter((l) => /^(cpu|memory|node|load)/.test(l)),
    ],
    panels,
  });
}

export async function runScale(options: Partial<ScaleOptions> = {}, log: (l: string) => void = console.log): Promise<BenchReport> {
  const o: ScaleOptions = { ...DEFAULT_SCALE, ...options };
  const machine = machineLines();
  const skipped: string[] = [];
  const t0 = performance.now();
  const { byDepth, byAgents } = await decisionSweeps(o, log);
  const decisionS = (performance.now() - t0) / 1000;
  const histories = await historySweep(o, log, skipped);
  const r: ScaleResults = { machine, options: o, byDepth, byAgents, histories, skipped };

  const flags = process.argv.slice(2).filter((_, i, all) => all.slice(0, i + 1).some((x) => x.startsWith('--')));
  const command = `npm run bench:scale${flags.length ? ` -- ${flags.join(' ')}` : ''}`;
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, chart(r, command));
  if (o.json) writeFileSync(o.json, `${JSON.stringify(r, null, 2)}\n`);
  log('');
  for (const l of markdownTables(r)) log(l);
  log(`chart: ${o.out}${o.json ? `; data: ${o.json}` : ''}`);

  const rows: ResultRow[] = [];
  for (const p of [...byDepth, ...byAgents.filter((x) => !byDepth.includes(x))]) {
    rows.push({ name: `µs per assignment, ${short(p.n)} queued, ${short(p.agents)} agents`, value: p.usPerDecision, unit: 'µs', note: `dispatch decision ${p.completeUs.toFixed(2)} µs; RSS ${mib(p.rssBuilt)} MiB` });
  }
  const big = byDepth.find((p) => p.n === 1_000_000);
  if (big?.heapBuilt !== undefined) rows.push({ name: 'heap after GC, 1M queued', value: big.heapBuilt / MiB, unit: 'MiB', target: { kind: 'max', value: GiB / MiB } });
  for (const x of histories) {
    rows.push({ name: `rebuild from 0, ${short(x.events)} events`, value: x.replay.rebuild.events / (x.replay.rebuild.ms / 1000), unit: 'events/s', target: { kind: 'min', value: 300_000 } });
    rows.push({ name: `restart until ready, ${short(x.events)} events`, value: restartMs(x.restart) / 1000, unit: 's', target: { kind: 'max', value: 2 } });
    rows.push({ name: `restart until the first command is answered, ${short(x.events)} events`, value: firstAnswerMs(x.restart) / 1000, unit: 's' });
  }
  return {
    title: 'scale: decision cost, memory, replay and restart by size',
    workload: [
      `decision core as in bench:decision (20 capability sets, capacity 1-4, 50 tenants), ${o.warmupMs} ms warm-up + ${o.measureMs} ms measured per point`,
      `  queue depth ${o.depths.map(short).join(', ')} at ${num(o.fixedAgents)} agents; agents ${o.agents.map(short).join(', ')} at ${short(o.fixedDepth)} queued (${num(decisionS)} s)`,
      `replay as in bench:replay (200 agents, ~5,000 queued); history ${o.histories.map(short).join(', ')} events, snapshot ${num(o.tail)} events before the end`,
      '  restart = open the log + createDispatcherRuntime (snapshot, tail, lease), in a fresh process; then one SubmitTask answered; page cache warm (the file was just written)',
    ],
    results: rows,
    notes: [`chart written to ${o.out}`, ...skipped],
  };
}
