import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import {
  DomainError, evolve, fromSnapshot, handle, initialState, parsePolicy, toSnapshot,
  type Command, type DispatchEvent, type DispatcherState, type StateSnapshot, type TaskSpec,
} from '../src/domain/index.js';
import { getSqliteEventLog } from '../src/adapters/log/sqliteEventLog.js';
import { createDispatcherRuntime } from '../src/runtime/dispatcherRuntime.js';
import type { EventLog } from '../src/runtime/eventLog.js';
import type { Projection } from '../src/runtime/projection.js';
import { readModels } from '../src/runtime/readModels.js';
import { MiB, collect, num, prng, type BenchReport } from './support.js';
import { makeFleet, makeTenants, taskSpec } from './workload.js';

/**
 * Replay and restart on the embedded SQLite log: a log of ~1M events made by the domain `handle`
 * over a synthetic workload, then (1) every event folded into the state and every projection from
 * version 0, and (2) a restart from a snapshot plus the tail behind it, as the runtime does it.
 */

/** Options of {@link runReplay}. */
export interface ReplayOptions {
  /** Events to generate. Default 1,000,000. */
  events?: number;
  /** Events behind the snapshot (the tail a restart replays). Default 50,000 (the runtime's snapshotEvery, the worst case). */
  tail?: number;
}

const STREAM = 'dispatcher-main';
const T0 = Date.parse('2025-03-03T09:00:00.000Z');
const AGENTS = 200;
const CAP_SETS = 20;
/** Events per append (one transaction, one fsync). */
const APPEND_BATCH = 5000;

export interface Generated {
  events: number;
  tasks: number;
  snapshotVersion: number;
  snapshotBytes: number;
  ms: number;
  types: Record<string, number>;
}

/**
 * Run producers and a fleet through `handle` and append what it decides: each step completes the
 * oldest running task (2% fail, retryably) and submits one task (10% in one of 500 sessions, 5% with
 * a deadline); agents heartbeat every 5 s and the runtime's 250 ms Tick runs, in event time.
 */
export async function generate(log: EventLog, target: number, snapshotAt: number): Promise<Generated> {
  const t0 = performance.now();
  const rand = prng(42);
  const fleet = makeFleet(rand, CAP_SETS);
  const tenants = makeTenants(50);
  const s = initialState(parsePolicy({}));
  const projections = readModels(log);
  const views = projections.map((p) => p.initial());
  const types: Record<string, number> = {};
  const running: { taskId: string; agentId: string; attempt: number }[] = [];
  let head = 0;
  let pending: DispatchEvent[] = [];
  let version = 0;
  let snapshotVersion = 0;
  let snapshotBytes = 0;
  let at = T0;
  let nextId = 0;
  let lastTick = T0;
  let lastBeat = T0;

  const run = (cmd: Command): void => {
    let events: DispatchEvent[];
    try {
      events = handle(s, cmd);
    } catch (e) {
      if (e instanceof DomainError) return; // e.g. a completion for a task its agent lost: refused, nothing recorded
      throw e;
    }
    for (const e of events) {
      pending.push(e);
      types[e.type] = (types[e.type] ?? 0) + 1;
      for (let i = 0; i < projections.length; i++) projections[i].apply(views[i], e);
      if (e.type === 'TaskAssigned') running.push({ taskId: e.taskId, agentId: e.agentId, attempt: e.attempt });
    }
  };
  const flush = async (): Promise<void> => {
    if (pending.length === 0) return;
    version = await log.append(STREAM, pending, version);
    pending = [];
    if (snapshotVersion === 0 && version >= snapshotAt) {
      // What the runtime saves: the state and every projection's checkpoint, at this version.
      const data = JSON.stringify({ state: toSnapshot(s), views: Object.fromEntries(projections.map((p, i) => [p.name, p.save(views[i])])) });
      await log.saveSnapshot(STREAM, { version, data });
      snapshotVersion = version;
      snapshotBytes = data.length;
    }
  };

  for (let i = 0; i < AGENTS; i++) {
    run({ type: 'MarkAgentReady', at, agentId: `agent-${String(i).padStart(3, '0')}`, capabilities: fleet.capSets[i % CAP_SETS], capacity: 1 + (i % 4) });
  }
  // A standing queue of ~5,000 tasks, then a steady state of one completion and one submission per ms.
  const submit = (): void => {
    const task = taskSpec(rand, `task-${nextId++}`, tenants, fleet);
    const x = rand();
    if (x < 0.1) task.sessionRef = `session-${Math.floor(rand() * 500)}`;
    else if (x < 0.15) { task.deadline = at + 30_000 + Math.floor(rand() * 60_000); task.estimatedDurationMs = 5_000; }
    run({ type: 'SubmitTask', at, task });
  };
  while (s.waiting < 5000) submit();
  while (version + pending.length < target) {
    at += 1;
    if (head < running.length) {
      const r = running[head++];
      const fail = rand() < 0.02;
      run({
        type: 'CompleteTask', at, taskId: r.taskId, agentId: r.agentId, attempt: r.attempt,
        ...(fail ? { outcome: 'failed', error: 'upstream timeout', retryable: true } : { outcome: 'succeeded', result: { ok: true } }),
      });
    }
    submit();
    if (at - lastBeat >= 5000) {
      lastBeat = at;
      for (const a of s.agents.values()) run({ type: 'RecordHeartbeat', at, agentId: a.id });
    }
    if (at - lastTick >= 250) { lastTick = at; run({ type: 'Tick', at }); }
    if (head > 100_000) { running.splice(0, head); head = 0; }
    if (pending.length >= APPEND_BATCH || version + pending.length >= snapshotAt && snapshotVersion === 0) await flush();
  }
  await flush();
  return { events: version, tasks: s.tasks.size, snapshotVersion, snapshotBytes, ms: performance.now() - t0, types };
}

/** Fold the events after `afterVersion` into the state and the views, as the runtime does; returns how many. */
async function fold(eventLog: EventLog, afterVersion: number, state: DispatcherState, projections: Projection<unknown>[], views: unknown[]): Promise<number> {
  let events = 0;
  for await (const se of eventLog.read(STREAM, afterVersion)) {
    evolve(state, se.event);
    for (let i = 0; i < projections.length; i++) projections[i].apply(views[i], se.event);
    events++;
  }
  return events;
}

/** What a start without a snapshot does: read every event from version 0, fold the state and every projection. */
export async function rebuildFromZero(eventLog: EventLog): Promise<{ events: number; ms: number; cpuShare: number }> {
  const cpu0 = process.cpuUsage();
  const t = performance.now();
  const projections = readModels(eventLog);
  const events = await fold(eventLog, 0, initialState(), projections, projections.map((p) => p.initial()));
  const ms = performance.now() - t;
  const cpu = process.cpuUsage(cpu0);
  return { events, ms, cpuShare: (cpu.user + cpu.system) / 1000 / ms };
}

/** The restart steps of the runtime, timed one by one (ms); `snapshotVersion` 0: no snapshot, the tail is the whole log. */
export interface RestartSteps {
  snapshotVersion: number;
  snapshotBytes: number;
  loadMs: number;
  parseMs: number;
  restoreMs: number;
  tailEvents: number;
  tailMs: number;
}

/** Load the snapshot row, parse it, restore the state and views, fold the tail behind it. */
export async function restartSteps(eventLog: EventLog): Promise<RestartSteps> {
  const projections = readModels(eventLog);
  let t = performance.now();
  const snap = await eventLog.loadSnapshot(STREAM);
  const loadMs = performance.now() - t;
  t = performance.now();
  const data = snap ? JSON.parse(snap.data) as { state: StateSnapshot; views: Record<string, unknown> } : undefined;
  const parseMs = performance.now() - t;
  t = performance.now();
  const restored = data ? fromSnapshot(data.state) : initialState();
  const views = projections.map((p) => (data?.views[p.name] === undefined ? p.initial() : p.load(data.views[p.name])));
  const restoreMs = performance.now() - t;
  t = performance.now();
  const tailEvents = await fold(eventLog, snap?.version ?? 0, restored, projections, views);
  return {
    snapshotVersion: snap?.version ?? 0, snapshotBytes: snap?.data.length ?? 0, loadMs, parseMs, restoreMs, tailEvents, tailMs: performance.now() - t,
  };
}

/** Timings (ms) of a real restart: {@link restartRuntime}. */
export interface RuntimeRestart {
  /** getSqliteEventLog(): open the file, check the schema. */
  openMs: number;
  /** createDispatcherRuntime(): writer lease, snapshot, tail, re-deliveries, until it takes commands. */
  readyMs: number;
  version: number;
  /** One SubmitTask decided and durably committed after ready (only when asked for). */
  firstDecisionMs?: number;
}

/** A task nothing else submits: the first command after a restart. */
const PROBE_TASK: TaskSpec = {
  id: 'restart-probe', tenant: 'tenant-00', source: 'api', type: 'support', priority: 'normal', requires: [], affinity: 'soft', dependsOn: [], payload: {},
};

/**
 * createDispatcherRuntime on the log at `path`, as a restarted dispatcher does it; with
 * `firstDecision`, then one SubmitTask through the writer until its commit is answered.
 */
export async function restartRuntime(path: string, firstDecision = false): Promise<RuntimeRestart> {
  let t = performance.now();
  const rtLog = getSqliteEventLog({ path });
  const openMs = performance.now() - t;
  // The runtime's clock is the log's own: the wall clock is hours or years past the generated
  // history, and a command stamped with it would time every agent out instead of deciding.
  let clock = 0;
  t = performance.now();
  const rt = await createDispatcherRuntime({
    log: rtLog, policy: parsePolicy({}), logger: pino({ level: 'silent' }), projections: readModels(rtLog), now: () => clock,
  });
  const readyMs = performance.now() - t;
  clock = rt.state.lastAt;
  let firstDecisionMs: number | undefined;
  try {
    if (firstDecision) {
      t = performance.now();
      await rt.execute({ type: 'SubmitTask', task: PROBE_TASK }, () => undefined);
      firstDecisionMs = performance.now() - t;
    }
    return { openMs, readyMs, version: rt.version, ...(firstDecisionMs === undefined ? {} : { firstDecisionMs }) };
  } finally {
    await rt.stop();
    await rtLog.close();
  }
}

export async function runReplay(options: ReplayOptions = {}, log: (l: string) => void = console.log): Promise<BenchReport> {
  const target = options.events ?? 1_000_000;
  const tail = options.tail ?? 50_000;
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-replay-'));
  const path = join(dir, 'switchyard.db');
  try {
    const writer = getSqliteEventLog({ path });
    const gen = await generate(writer, target, target - tail);
    await writer.close();
    const typeMix = Object.entries(gen.types).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${((v / gen.events) * 100).toFixed(1)}%`).join(', ');
    log(`  generated ${num(gen.events)} events (${num(gen.tasks)} tasks) in ${num(gen.ms)} ms; snapshot at ${num(gen.snapshotVersion)} (${num(gen.snapshotBytes / MiB, 1)} MiB)`);
    log(`  event mix: ${typeMix}`);
    collect();

    // (1a) Reading alone: SQLite pages and JSON.parse, no fold.
    const eventLog = getSqliteEventLog({ path });
    const t = performance.now();
    let n = 0;
    for await (const se of eventLog.read(STREAM, 0)) if (se.version > 0) n++;
    const readMs = performance.now() - t;
    collect();

    // (1b) What a start without a snapshot does.
    const rb = await rebuildFromZero(eventLog);
    log(`  read only: ${num(n)} events in ${num(readMs)} ms; rebuild: ${num(rb.events)} events in ${num(rb.ms)} ms`);
    collect();

    // (2a) The restart steps, timed one by one.
    const st = await restartSteps(eventLog);
    if (st.snapshotVersion === 0) throw new Error('no snapshot was saved');
    await eventLog.close();
    log(`  restart steps: load row ${num(st.loadMs)} ms, JSON.parse ${num(st.parseMs)} ms, fromSnapshot + views ${num(st.restoreMs)} ms, tail ${num(st.tailEvents)} events ${num(st.tailMs)} ms`);
    collect();

    // (2b) The real thing.
    const rs = await restartRuntime(path);
    log(`  createDispatcherRuntime: ready at version ${num(rs.version)} in ${num(rs.readyMs)} ms`);

    const rate = rb.events / (rb.ms / 1000);
    return {
      title: 'replay and restart (SQLite log, warm page cache)',
      workload: [
        `log: ${num(gen.events)} events from domain handle(): ${AGENTS} agents (${CAP_SETS} capability sets, 500 slots), 50 tenants, ~5,000 queued,`,
        '  one completion (2% retryable failures) + one submission (10% sessions, 5% deadlines) per ms of event time, heartbeats every 5 s, 250 ms ticks',
        `  appended ${num(APPEND_BATCH)} events per transaction; ${num(gen.tasks)} tasks; mix: ${typeMix}`,
        'rebuild: initialState(), then every event through evolve() and every projection of readModels(), from version 0',
        `restart: snapshot at version ${num(gen.snapshotVersion)} (${num(gen.snapshotBytes / MiB, 1)} MiB JSON), tail of ${num(gen.events - gen.snapshotVersion)} events (default snapshotEvery 50,000 = worst case)`,
      ],
      results: [
        { name: 'rebuild state + projections from version 0', value: rate, unit: 'events/s', target: { kind: 'min', value: 300_000 }, note: `${num(rb.events)} events in ${num(rb.ms)} ms; process CPU/wall ${rb.cpuShare.toFixed(2)}` },
        { name: 'read + JSON.parse only', value: n / (readMs / 1000), unit: 'events/s' },
        { name: 'restart: createDispatcherRuntime until ready', value: rs.readyMs / 1000, unit: 's', target: { kind: 'max', value: 2 } },
        {
          name: 'restart steps (same as the runtime)', value: (st.loadMs + st.parseMs + st.restoreMs + st.tailMs) / 1000, unit: 's',
          note: `row ${num(st.loadMs)} ms + JSON.parse ${num(st.parseMs)} ms + fromSnapshot/views ${num(st.restoreMs)} ms + tail ${num(st.tailEvents)} events ${num(st.tailMs)} ms`,
        },
      ],
      notes: [`generating the log took ${num(gen.ms / 1000, 1)} s (not part of any result)`],
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
