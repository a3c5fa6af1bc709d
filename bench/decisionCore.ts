import { handle, initialState, parsePolicy, type DispatchEvent, type DispatcherState } from '../src/domain/index.js';
import { GiB, MiB, collect, heapAfterGc, num, prng, type BenchReport, type ResultRow } from './support.js';
import { makeFleet, makeTenants, taskSpec, type Fleet, type Tenants } from './workload.js';

/**
 * The decision core in process, no I/O: a queue held at N tasks, every agent busy; each cycle
 * completes the oldest running task (freeing one slot, which `handle` fills at once) and submits
 * one new task to keep the queue at N. What is counted is TaskAssigned events per second of wall
 * time spent in `handle`, which includes deciding and evolving the completion and the submission.
 */

/** Options of {@link runDecisionCore}. */
export interface DecisionOptions {
  /** Queue depths to measure. Default 1k, 10k, 100k, 1M. */
  sizes?: number[];
  /** Cycles run before measuring, per size, in ms. Default 1000. */
  warmupMs?: number;
  /** Measured time per size, in ms. Default 4000. */
  measureMs?: number;
}

/** Fleet size of this benchmark (other benchmarks vary it through {@link measureDecision}). */
export const AGENTS = 1000;
const CAP_SETS = 20;
const TENANTS = 50;
const T0 = Date.parse('2025-03-03T09:00:00.000Z');
/** Event time advances 1 ms per 10 cycles (10,000 assignments per second of event time). */
const CYCLES_PER_MS = 10;

interface Scenario {
  s: DispatcherState;
  fleet: Fleet;
  tenants: Tenants;
  rand: () => number;
  /** Running tasks in assignment order (a FIFO of parallel arrays). */
  runTask: string[];
  runAgent: string[];
  runAttempt: number[];
  runHead: number;
  clock: number;
  nextId: number;
  assigned: number;
  deferred: number;
  events: number;
  slots: number;
  /** Wall time inside handle() for CompleteTask (which includes the dispatch it triggers) and SubmitTask. */
  completeMs: number;
  submitMs: number;
  cycles: number;
}

function note(sc: Scenario, events: DispatchEvent[]): void {
  sc.events += events.length;
  for (const e of events) {
    if (e.type === 'TaskAssigned') {
      sc.assigned++;
      sc.runTask.push(e.taskId);
      sc.runAgent.push(e.agentId);
      sc.runAttempt.push(e.attempt);
    } else if (e.type === 'TaskDeferred') {
      sc.deferred++;
    } else if (e.type === 'AgentTimedOut' || e.type === 'TaskRequeued') {
      throw new Error(`benchmark workload broke: ${e.type} at ${e.at} (agents must never look silent)`);
    }
  }
}

/** Event time of the next command: T0 while the queue is built (so no agent looks silent), then +1 ms per 10 cycles. */
function now(sc: Scenario): number {
  return T0 + Math.floor(sc.clock / CYCLES_PER_MS);
}

function submit(sc: Scenario): void {
  const task = taskSpec(sc.rand, `t${sc.nextId++}`, sc.tenants, sc.fleet);
  const cmd = { type: 'SubmitTask', at: now(sc), task } as const;
  const t0 = performance.now();
  const events = handle(sc.s, cmd);
  sc.submitMs += performance.now() - t0;
  note(sc, events);
}

function cycle(sc: Scenario): void {
  sc.cycles++;
  sc.clock++;
  if (sc.runHead >= sc.runTask.length) {
    // Nothing runs: a small fleet (the 10-agent scale point) covers few requirement sets, and the
    // work its agents can do may run out while the queue fills with work only absent agents could
    // do. Keep submitting; there is nothing to complete.
    submit(sc);
    return;
  }
  const h = sc.runHead++;
  const cmd = {
    type: 'CompleteTask', at: now(sc), taskId: sc.runTask[h], agentId: sc.runAgent[h], attempt: sc.runAttempt[h], outcome: 'succeeded',
  } as const;
  const t0 = performance.now();
  const events = handle(sc.s, cmd);
  sc.completeMs += performance.now() - t0;
  note(sc, events);
  if (sc.runHead > 65_536 && sc.runHead * 2 > sc.runTask.length) {
    sc.runTask.splice(0, sc.runHead);
    sc.runAgent.splice(0, sc.runHead);
    sc.runAttempt.splice(0, sc.runHead);
    sc.runHead = 0;
  }
  submit(sc);
}

/** `agents` agents (default 1,000) over 20 capability sets, capacity 1-4 (2,500 slots per 1,000), then N queued tasks behind them. */
function build(n: number, agents: number): { sc: Scenario; ms: number } {
  const rand = prng(20250303);
  const fleet = makeFleet(rand, CAP_SETS);
  const tenants = makeTenants(TENANTS);
  // Shedding would refuse a million queued tasks under the default watermark (100k): raise it.
  const policy = parsePolicy({ shedding: { highWatermark: 10_000_000 }, fairness: { weights: tenants.weights } });
  const sc: Scenario = {
    s: initialState(policy), fleet, tenants, rand, runTask: [], runAgent: [], runAttempt: [], runHead: 0,
    clock: 0, nextId: 0, assigned: 0, deferred: 0, events: 0, slots: 0, completeMs: 0, submitMs: 0, cycles: 0,
  };
  const t0 = performance.now();
  for (let i = 0; i < agents; i++) {
    const capacity = 1 + (i % 4);
    sc.slots += capacity;
    note(sc, handle(sc.s, {
      type: 'MarkAgentReady', at: now(sc), agentId: `agent-${String(i).padStart(4, '0')}`, capabilities: fleet.capSets[i % CAP_SETS], capacity,
    }));
  }
  while (sc.s.waiting < n) submit(sc);
  return { sc, ms: performance.now() - t0 };
}

export interface SizeResult {
  n: number;
  agents: number;
  buildMs: number;
  heapBuilt?: number;
  /** Resident set size once the queue is built (after the collection that measures the heap). */
  rssBuilt: number;
  rate: number;
  usPerDecision: number;
  minRound: number;
  maxRound: number;
  eventsPerAssign: number;
  deferredShare: number;
  freeAgents: number;
  waiting: number;
  heapAfter?: number;
  tasksTracked: number;
  /** µs per handle(CompleteTask), which includes the dispatch decision it triggers. */
  completeUs: number;
  /** µs per handle(SubmitTask) (admission; no dispatch while every agent is busy). */
  submitUs: number;
  /** Process CPU time ÷ wall time over the measured rounds (under 1: the process waited for a core). */
  cpuShare: number;
  /** Running tasks (agent slots). */
  slots: number;
}

/** Build a queue of `n` behind `agents` busy agents, then run cycles: what one size of this benchmark measures. */
export function measureDecision(n: number, o: Required<DecisionOptions>, log: (l: string) => void, agents = AGENTS): SizeResult {
  const { sc, ms: buildMs } = build(n, agents);
  const heapBuilt = heapAfterGc();
  const rssBuilt = process.memoryUsage().rss;
  if (sc.s.freeAgents !== 0) log(`  warning: ${sc.s.freeAgents} agents idle after building ${n} queued tasks`);
  const run = (ms: number): { assigned: number; ms: number } => {
    const a0 = sc.assigned;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      for (let i = 0; i < 256; i++) cycle(sc);
      t = performance.now();
    }
    return { assigned: sc.assigned - a0, ms: t - t0 };
  };
  run(o.warmupMs);
  const a0 = sc.assigned; const e0 = sc.events; const d0 = sc.deferred;
  const c0 = sc.cycles; const cm0 = sc.completeMs; const sm0 = sc.submitMs;
  const rounds: number[] = [];
  const cpu0 = process.cpuUsage();
  let total = 0;
  let assigned = 0;
  const roundMs = o.measureMs / 4;
  for (let i = 0; i < 4; i++) {
    const r = run(roundMs);
    rounds.push(r.assigned / (r.ms / 1000));
    total += r.ms;
    assigned += r.assigned;
  }
  const cpu = process.cpuUsage(cpu0);
  const rate = assigned / (total / 1000);
  const res: SizeResult = {
    n, agents, buildMs, heapBuilt, rssBuilt, rate, usPerDecision: 1e6 / rate, minRound: Math.min(...rounds), maxRound: Math.max(...rounds),
    eventsPerAssign: (sc.events - e0) / (sc.assigned - a0), deferredShare: (sc.deferred - d0) / (sc.assigned - a0),
    freeAgents: sc.s.freeAgents, waiting: sc.s.waiting, tasksTracked: sc.s.tasks.size, slots: sc.slots,
    completeUs: ((sc.completeMs - cm0) * 1000) / (sc.cycles - c0), submitUs: ((sc.submitMs - sm0) * 1000) / (sc.cycles - c0),
    cpuShare: (cpu.user + cpu.system) / 1000 / total,
  };
  res.heapAfter = heapAfterGc();
  log(`  ${num(n).padStart(9)} queued: ${num(rate).padStart(9)} assignments/s (${res.usPerDecision.toFixed(2)} µs each; rounds ${num(res.minRound)}-${num(res.maxRound)}), `
    + `built in ${num(buildMs)} ms, heap ${heapBuilt === undefined ? '?' : num(heapBuilt / MiB)} MiB, `
    + `CPU/wall ${res.cpuShare.toFixed(2)}, handle(CompleteTask) ${res.completeUs.toFixed(2)} µs, handle(SubmitTask) ${res.submitUs.toFixed(2)} µs, `
    + `${res.eventsPerAssign.toFixed(2)} events/assignment, ${(res.deferredShare * 100).toFixed(1)}% deferrals, waiting ${num(res.waiting)}, idle agents ${res.freeAgents}`);
  return res;
}

export function runDecisionCore(options: DecisionOptions = {}, log: (l: string) => void = console.log): BenchReport {
  const o: Required<DecisionOptions> = {
    sizes: options.sizes ?? [1_000, 10_000, 100_000, 1_000_000],
    warmupMs: options.warmupMs ?? 1000,
    measureMs: options.measureMs ?? 4000,
  };
  const results: SizeResult[] = [];
  for (const n of o.sizes) {
    results.push(measureDecision(n, o, log));
    collect();
  }
  const at = (n: number) => results.find((r) => r.n === n);
  const rows: ResultRow[] = [];
  for (const r of results) {
    rows.push({
      name: `assignments/s, ${num(r.n)} queued`, value: r.rate, unit: '/s',
      ...(r.n === 100_000 ? { target: { kind: 'min' as const, value: 200_000 } } : {}),
    });
  }
  for (const r of results) {
    rows.push({
      name: `cost per decision, ${num(r.n)} queued`, value: r.usPerDecision, unit: 'µs',
      note: `handle(CompleteTask)+dispatch ${r.completeUs.toFixed(1)} µs, handle(SubmitTask) ${r.submitUs.toFixed(1)} µs; process CPU/wall ${r.cpuShare.toFixed(2)}`,
    });
  }
  const small = at(1_000);
  const big = at(1_000_000);
  for (const r of results) {
    rows.push({ name: `CPU per decision, ${num(r.n)} queued`, value: r.usPerDecision * r.cpuShare, unit: 'µs', note: 'wall cost × process CPU/wall: what it costs when not waiting for a core' });
  }
  if (small && big) {
    rows.push({ name: 'cost ratio 1M / 1k queued (wall)', value: big.usPerDecision / small.usPerDecision, unit: '×', target: { kind: 'max', value: 2 } });
    rows.push({
      name: 'cost ratio 1M / 1k queued (CPU)', value: (big.usPerDecision * big.cpuShare) / (small.usPerDecision * small.cpuShare), unit: '×',
      target: { kind: 'max', value: 2 },
    });
  }
  for (const r of results) {
    if (r.heapBuilt !== undefined) {
      rows.push({
        name: `heap used, ${num(r.n)} queued (after gc)`, value: r.heapBuilt / MiB, unit: 'MiB',
        ...(r.n === 1_000_000 ? { target: { kind: 'max' as const, value: GiB / MiB } } : {}),
        note: `${num(r.heapBuilt / (r.n + r.slots), 0)} B per task held`,
      });
    }
  }
  if (big?.heapAfter !== undefined) {
    rows.push({
      name: 'heap used, 1M queued after the run (after gc)', value: big.heapAfter / MiB, unit: 'MiB',
      note: `${num(big.tasksTracked)} task records: completed tasks stay in the state`,
    });
  }
  const notes = results[0]?.buildMs === undefined ? [] : [
    `building the queue (submits with every agent busy): ${results.map((r) => `${num(r.n)} in ${num(r.buildMs)} ms`).join(', ')}`,
    `events per assignment ${results.map((r) => r.eventsPerAssign.toFixed(2)).join(' / ')}; fairness deferrals per assignment ${results.map((r) => `${(r.deferredShare * 100).toFixed(1)}%`).join(' / ')}`,
  ];
  if (!results.some((r) => r.heapBuilt !== undefined)) notes.push('heap not measured: run with --expose-gc');
  return {
    title: 'decision core (in process, no I/O)',
    workload: [
      `${AGENTS} agents over ${CAP_SETS} capability sets (2-4 of 12 capabilities), capacity 1-4 (2,500 slots, all busy)`,
      `${TENANTS} tenants, Zipf(0.8) submission shares, every fifth weighted 2; priorities 5% critical / 15% high / 55% normal / 25% low`,
      `${CAP_SETS} requirement sets (1-2 capabilities); payload {ticket, n}; shedding watermark raised to 10M`,
      'cycle = CompleteTask(oldest running) + SubmitTask(new) through domain handle(); queue held at N; event time +1 ms per 10 cycles (no timeouts, aging or retries fire)',
      `per size: ${o.warmupMs} ms warm-up, then ${o.measureMs} ms measured in 4 rounds (sizes ${o.sizes.map((n) => num(n)).join(', ')})`,
    ],
    results: rows,
    notes,
  };
}
