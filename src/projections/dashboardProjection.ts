import type { DispatchEvent } from '../domain/events.js';
import { PRIORITIES, type Priority } from '../domain/priority.js';
import { queueDepth, unroutable, windowSize, type DispatcherState } from '../domain/state.js';
import {
  emptyHistogram, loadHistogram, percentile, record, saveHistogram, type LogHistogram, type LogHistogramData,
} from './logHistogram.js';

/**
 * The dashboard read model: a fold over the log that keeps what the dispatcher state does not
 * (wait times, durations, SLA outcomes, throughput, counts), combined with the live state by
 * {@link dashboard}. Time comes only from event `at` and from the `now` the caller passes, so a
 * dashboard built live and one rebuilt by replaying the same log are identical.
 */

/** Trailing window of event time over which `throughput.completed_per_second` is measured. */
export const THROUGHPUT_WINDOW_S = 60;
/** Tenants named in `fairness_distribution`; the rest are summed as `other`. */
export const FAIRNESS_TOP_N = 10;
/** Agents listed in `agents` (by id); `agents_total` says how many there are. */
export const AGENTS_LISTED = 100;

/** A task that has not ended yet: what its later events need. */
interface OpenTask {
  /** When its current wait started: submission, unblocking, or a requeue that starts a new wait. */
  waitStart: number;
  /** Deadline (epoch ms), when it has one: its end is counted for or against the SLA. */
  deadline: number | undefined;
  /** A fairness or quota deferral was recorded for it (counted once per task). */
  deferred: boolean;
}

interface Average {
  count: number;
  sumMs: number;
}

export interface DashboardCounts {
  submitted: number;
  assigned: number;
  completed: number;
  /** Failed attempts (every TaskFailed, whether the task was retried or not). */
  failed: number;
  /** Cancellations, by request and by a failed dependency. */
  cancelled: number;
  rejected: number;
  /** Sheds at admission and of queued low work making room for critical work. */
  shed: number;
  /** Distinct tasks deferred by fairness or quota. */
  deferred: number;
  /** TaskDeferred events for fairness or quota (a task may be deferred more than once). */
  deferrals: number;
  /** Tasks held for their session's busy agent (TaskDeferred with rule `affinity-wait`). */
  affinityWaits: number;
  /** Escalations to critical because a deadline is at risk. */
  escalated: number;
  /** One-level promotions by aging. */
  aged: number;
  /** TaskRequeued events of every reason (agent lost, retry, affinity fallback). */
  requeued: number;
  deadLettered: number;
  agentTimeouts: number;
}

export interface DashboardView {
  /** Wait from the start of a wait to assignment, by the priority carried on TaskAssigned. */
  wait: Record<Priority, { avg: Average; hist: LogHistogram }>;
  /** Attempt durations reported by agents (TaskCompleted and TaskFailed). */
  duration: Average;
  sla: { met: number; missed: number };
  /** Completions per second of event time: a ring of THROUGHPUT_WINDOW_S (second, count) slots. */
  throughput: { second: number[]; count: number[] };
  counts: DashboardCounts;
  readonly open: Map<string, OpenTask>;
  /** Attempt durations by agent (the state keeps completed, failed and speed; not this). */
  readonly agentDurations: Map<string, Average>;
  /** Events applied and the latest `at` seen. */
  events: number;
  lastAt: number;
}

const zeroCounts = (): DashboardCounts => ({
  submitted: 0, assigned: 0, completed: 0, failed: 0, cancelled: 0, rejected: 0, shed: 0, deferred: 0,
  deferrals: 0, affinityWaits: 0, escalated: 0, aged: 0, requeued: 0, deadLettered: 0, agentTimeouts: 0,
});

function initial(): DashboardView {
  const wait = {} as DashboardView['wait'];
  for (const p of PRIORITIES) wait[p] = { avg: { count: 0, sumMs: 0 }, hist: emptyHistogram() };
  return {
    wait,
    duration: { count: 0, sumMs: 0 },
    sla: { met: 0, missed: 0 },
    throughput: { second: new Array<number>(THROUGHPUT_WINDOW_S).fill(-1), count: new Array<number>(THROUGHPUT_WINDOW_S).fill(0) },
    counts: zeroCounts(),
    open: new Map(),
    agentDurations: new Map(),
    events: 0,
    lastAt: 0,
  };
}

/**
 * How a task's end counts for the SLA (only tasks with a deadline count):
 * - met: completed at or before its deadline;
 * - missed: completed late, failed for good, dead-lettered, shed (at admission or from the queue),
 *   or cancelled because a dependency ended without success — the service did not deliver;
 * - not counted: cancelled by request (the requester withdrew it) and rejected at admission
 *   (a quota or an unknown dependency: the submission was refused, never accepted).
 * A task still open past its deadline is not counted until it ends.
 */
function endTask(v: DashboardView, taskId: string, at: number, outcome: 'succeeded' | 'missed' | 'withdrawn'): void {
  const t = v.open.get(taskId);
  if (!t) return; // already ended (a final failure followed by its dead-letter): counted once
  v.open.delete(taskId);
  if (t.deadline === undefined || outcome === 'withdrawn') return;
  if (outcome === 'succeeded' && at <= t.deadline) v.sla.met++;
  else v.sla.missed++;
}

function addDuration(v: DashboardView, agentId: string, ms: number): void {
  v.duration.count++;
  v.duration.sumMs += ms;
  let a = v.agentDurations.get(agentId);
  if (!a) { a = { count: 0, sumMs: 0 }; v.agentDurations.set(agentId, a); }
  a.count++;
  a.sumMs += ms;
}

function countCompletion(v: DashboardView, at: number): void {
  const second = Math.floor(at / 1000);
  const slot = ((second % THROUGHPUT_WINDOW_S) + THROUGHPUT_WINDOW_S) % THROUGHPUT_WINDOW_S;
  if (v.throughput.second[slot] !== second) {
    v.throughput.second[slot] = second;
    v.throughput.count[slot] = 0;
  }
  v.throughput.count[slot]++;
}

function apply(v: DashboardView, e: DispatchEvent): void {
  v.events++;
  if (e.at > v.lastAt) v.lastAt = e.at;
  const c = v.counts;
  switch (e.type) {
    case 'TaskSubmitted':
      c.submitted++;
      v.open.set(e.task.id, { waitStart: e.at, deadline: e.task.deadline, deferred: false });
      return;
    case 'TaskRejected':
      c.rejected++;
      return;
    case 'TaskShed':
      c.shed++;
      if (e.task) {
        // Shed at admission: never queued, but a deadline it carried is missed.
        if (e.task.deadline !== undefined) v.sla.missed++;
      } else {
        endTask(v, e.taskId, e.at, 'missed');
      }
      return;
    case 'TaskAssigned': {
      c.assigned++;
      const t = v.open.get(e.taskId);
      if (!t) return;
      const w = v.wait[e.priority];
      const ms = Math.max(0, e.at - t.waitStart);
      w.avg.count++;
      w.avg.sumMs += ms;
      record(w.hist, ms);
      return;
    }
    case 'TaskCompleted':
      c.completed++;
      addDuration(v, e.agentId, e.durationMs);
      countCompletion(v, e.at);
      endTask(v, e.taskId, e.at, 'succeeded');
      return;
    case 'TaskFailed':
      c.failed++;
      addDuration(v, e.agentId, e.durationMs);
      if (e.retryAt === undefined) endTask(v, e.taskId, e.at, 'missed');
      return;
    case 'TaskCancelled':
      c.cancelled++;
      endTask(v, e.taskId, e.at, e.by === 'request' ? 'withdrawn' : 'missed');
      return;
    case 'TaskDeadLettered':
      c.deadLettered++;
      endTask(v, e.taskId, e.at, 'missed');
      return;
    case 'TaskDeferred': {
      if (e.why.rule === 'affinity-wait') { c.affinityWaits++; return; }
      c.deferrals++;
      const t = v.open.get(e.taskId);
      if (t && !t.deferred) { t.deferred = true; c.deferred++; }
      return;
    }
    case 'TaskEscalated':
      if (e.why.rule === 'aging') c.aged++;
      else c.escalated++;
      return;
    case 'TaskRequeued': {
      c.requeued++;
      // As the dispatcher does: an affinity fallback continues the same wait; a lost agent or a
      // retry starts a new one (time in retry backoff is not waiting for an agent).
      const t = v.open.get(e.taskId);
      if (t && e.reason !== 'affinity-wait-expired' && e.reason !== 'affinity-agent-lost') t.waitStart = e.at;
      return;
    }
    case 'TaskUnblocked': {
      // Time blocked on dependencies is not waiting for an agent.
      const t = v.open.get(e.taskId);
      if (t) t.waitStart = e.at;
      return;
    }
    case 'AgentTimedOut':
      c.agentTimeouts++;
      return;
    case 'AgentRegistered':
    case 'AgentIdle':
    case 'AgentHeartbeat':
    case 'AgentLeft':
    case 'PolicyChanged':
    case 'DispatcherResumed':
      return;
    default: {
      const never: never = e;
      throw new Error(`unknown event ${JSON.stringify(never)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

/** The view as plain JSON data (maps as entry lists in insertion order, histograms sparse). */
export interface DashboardViewData {
  format: 1;
  wait: Record<Priority, { count: number; sumMs: number; hist: LogHistogramData }>;
  duration: Average;
  sla: { met: number; missed: number };
  throughput: { second: number[]; count: number[] };
  counts: DashboardCounts;
  /** [taskId, waitStart, deadline | null, deferred]. */
  open: [string, number, number | null, boolean][];
  /** [agentId, count, sumMs]. */
  agentDurations: [string, number, number][];
  events: number;
  lastAt: number;
}

function save(v: DashboardView): DashboardViewData {
  const wait = {} as DashboardViewData['wait'];
  for (const p of PRIORITIES) wait[p] = { count: v.wait[p].avg.count, sumMs: v.wait[p].avg.sumMs, hist: saveHistogram(v.wait[p].hist) };
  return {
    format: 1,
    wait,
    duration: { ...v.duration },
    sla: { ...v.sla },
    throughput: { second: [...v.throughput.second], count: [...v.throughput.count] },
    counts: { ...v.counts },
    open: [...v.open].map(([id, t]) => [id, t.waitStart, t.deadline ?? null, t.deferred]),
    agentDurations: [...v.agentDurations].map(([id, a]) => [id, a.count, a.sumMs]),
    events: v.events,
    lastAt: v.lastAt,
  };
}

function load(data: unknown): DashboardView {
  const d = data as DashboardViewData;
  if (d === null || typeof d !== 'object' || d.format !== 1) {
    throw new Error(`unknown dashboard checkpoint format ${String((d as { format?: unknown } | null)?.format)}`);
  }
  const v = initial();
  for (const p of PRIORITIES) {
    v.wait[p] = { avg: { count: d.wait[p].count, sumMs: d.wait[p].sumMs }, hist: loadHistogram(d.wait[p].hist) };
  }
  v.duration = { ...d.duration };
  v.sla = { ...d.sla };
  if (d.throughput.second.length !== THROUGHPUT_WINDOW_S) throw new Error('dashboard checkpoint has a throughput window of another size');
  v.throughput = { second: [...d.throughput.second], count: [...d.throughput.count] };
  v.counts = { ...zeroCounts(), ...d.counts };
  for (const [id, waitStart, deadline, deferred] of d.open) v.open.set(id, { waitStart, deadline: deadline ?? undefined, deferred });
  for (const [id, count, sumMs] of d.agentDurations) v.agentDurations.set(id, { count, sumMs });
  v.events = d.events;
  v.lastAt = d.lastAt;
  return v;
}

/** The dashboard projection (a View: initial, apply in place, save/load for checkpoints). */
export const dashboardProjection = {
  name: 'dashboard',
  initial,
  apply,
  save,
  load,
} as const;

// ---------------------------------------------------------------------------------------------
// The dashboard document (GET /v1/dashboard, `switchyard replay --json`).

export interface WaitPercentiles { p50: number; p95: number; p99: number }

export interface AgentSummary {
  id: string;
  state: 'busy' | 'idle' | 'dead';
  running: number;
  capacity: number;
  capabilities: string[];
  completed: number;
  failed: number;
  /** EWMA of actual ÷ estimated duration (lower is faster; 1 when unknown). */
  speed: number;
  avg_duration_seconds: number;
}

/** The dashboard (contract: DESIGN §5). Seconds have 3 decimals, shares 3, percentages 2. */
export interface Dashboard {
  /** Event time the dashboard describes (ISO-8601). */
  as_of: string;
  queue_depth: Record<Priority, number>;
  agent_utilization: { busy: number; idle: number; total: number };
  avg_wait_time_seconds: Record<Priority, number>;
  wait_time_percentiles_seconds: Record<Priority, WaitPercentiles>;
  avg_task_duration_seconds: number;
  /** Share of tasks with a deadline whose end met it; 100 when none has ended yet. */
  sla_compliance_pct: number;
  sla: { met: number; missed: number };
  /** Each tenant's share of the dispatches in the fairness window (top 10, then `other`). */
  fairness_distribution: Record<string, number>;
  throughput: {
    completed_per_second: number;
    window_seconds: number;
    completed_total: number;
    submitted_total: number;
    assigned_total: number;
  };
  counts: {
    deferred: number;
    deferrals: number;
    affinity_waits: number;
    shed: number;
    unroutable: number;
    dead_lettered: number;
    rejected: number;
    cancelled: number;
    failed: number;
    escalated: number;
    aged: number;
    requeued: number;
    agent_timeouts: number;
    blocked: number;
  };
  agents: AgentSummary[];
  agents_total: number;
}

const ms3 = (ms: number): number => Math.round(ms) / 1000;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;

/**
 * The dashboard at event time `now`, from the view and the dispatcher state after the same events.
 * Reads both, changes neither; every list is sorted, so no Map order leaks into the result.
 */
export function dashboard(v: DashboardView, s: DispatcherState, now: number): Dashboard {
  const avgWait = {} as Record<Priority, number>;
  const pct = {} as Record<Priority, WaitPercentiles>;
  for (const p of PRIORITIES) {
    const w = v.wait[p];
    avgWait[p] = w.avg.count === 0 ? 0 : ms3(w.avg.sumMs / w.avg.count);
    pct[p] = { p50: ms3(percentile(w.hist, 0.5)), p95: ms3(percentile(w.hist, 0.95)), p99: ms3(percentile(w.hist, 0.99)) };
  }
  const judged = v.sla.met + v.sla.missed;
  const c = v.counts;
  const { agents, busy, alive } = agentSummaries(v, s);
  return {
    as_of: new Date(now).toISOString(),
    queue_depth: queueDepth(s),
    agent_utilization: { busy, idle: alive - busy, total: alive },
    avg_wait_time_seconds: avgWait,
    wait_time_percentiles_seconds: pct,
    avg_task_duration_seconds: v.duration.count === 0 ? 0 : ms3(v.duration.sumMs / v.duration.count),
    sla_compliance_pct: judged === 0 ? 100 : Math.round((v.sla.met / judged) * 10_000) / 100,
    sla: { ...v.sla },
    fairness_distribution: fairnessDistribution(s, now),
    throughput: {
      completed_per_second: round3(completedInWindow(v, now) / THROUGHPUT_WINDOW_S),
      window_seconds: THROUGHPUT_WINDOW_S,
      completed_total: c.completed,
      submitted_total: c.submitted,
      assigned_total: c.assigned,
    },
    counts: {
      deferred: c.deferred,
      deferrals: c.deferrals,
      affinity_waits: c.affinityWaits,
      shed: c.shed,
      unroutable: unroutable(s),
      dead_lettered: c.deadLettered,
      rejected: c.rejected,
      cancelled: c.cancelled,
      failed: c.failed,
      escalated: c.escalated,
      aged: c.aged,
      requeued: c.requeued,
      agent_timeouts: c.agentTimeouts,
      blocked: s.blocked,
    },
    agents,
    agents_total: s.agents.size,
  };
}

/** Completions in the THROUGHPUT_WINDOW_S whole seconds ending with the second of `now`. */
function completedInWindow(v: DashboardView, now: number): number {
  const current = Math.floor(now / 1000);
  let n = 0;
  for (let i = 0; i < THROUGHPUT_WINDOW_S; i++) {
    const sec = v.throughput.second[i];
    if (sec > current - THROUGHPUT_WINDOW_S && sec <= current) n += v.throughput.count[i];
  }
  return n;
}

/**
 * Shares of the fairness window at `now`. The state evicts old dispatches only when it applies an
 * event, so dispatches that fell out of the window since are discounted here (read-only, and only
 * the stale head of the window is walked).
 */
function fairnessDistribution(s: DispatcherState, now: number): Record<string, number> {
  const stale = new Map<string, number>();
  const limit = now - s.policy.fairness.windowMs;
  let h = s.windowHead;
  while (h < s.windowAt.length && s.windowAt[h] <= limit) {
    stale.set(s.windowTenant[h], (stale.get(s.windowTenant[h]) ?? 0) + 1);
    h++;
  }
  const total = windowSize(s) - (h - s.windowHead);
  if (total <= 0) return {};
  const rows: [string, number][] = [];
  for (const t of s.tenants.values()) {
    const n = t.window - (stale.get(t.name) ?? 0);
    if (n > 0) rows.push([t.name, n]);
  }
  rows.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  // Tenant names are data: `__proto__` must be a key like any other, not the prototype.
  const out: Record<string, number> = Object.create(null) as Record<string, number>;
  if (rows.length <= FAIRNESS_TOP_N) {
    for (const [name, n] of rows) out[name] = round3(n / total);
    return out;
  }
  // A tenant literally named "other" is summed with the rest rather than shown twice.
  const named = rows.filter(([name]) => name !== 'other').slice(0, FAIRNESS_TOP_N);
  let rest = total;
  for (const [name, n] of named) { out[name] = round3(n / total); rest -= n; }
  out.other = round3(rest / total);
  return out;
}

function agentSummaries(v: DashboardView, s: DispatcherState): { agents: AgentSummary[]; busy: number; alive: number } {
  let busy = 0;
  let alive = 0;
  const ids: string[] = [];
  for (const a of s.agents.values()) {
    ids.push(a.id);
    if (!a.alive) continue;
    alive++;
    if (a.running.size > 0) busy++;
  }
  ids.sort();
  const agents = ids.slice(0, AGENTS_LISTED).map((id): AgentSummary => {
    const a = s.agents.get(id)!;
    const d = v.agentDurations.get(id);
    return {
      id,
      state: !a.alive ? 'dead' : a.running.size > 0 ? 'busy' : 'idle',
      running: a.running.size,
      capacity: a.capacity,
      capabilities: [...a.caps],
      completed: a.completed,
      failed: a.failed,
      speed: round3(a.speed),
      avg_duration_seconds: d === undefined || d.count === 0 ? 0 : ms3(d.sumMs / d.count),
    };
  });
  return { agents, busy, alive };
}
