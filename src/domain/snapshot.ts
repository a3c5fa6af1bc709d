import { recordedPolicy } from './policy.js';
import type { TaskSpec } from './events.js';
import {
  countDispatch, enqueueReady, hold, initialState, markDead, newTask, refreshAgent, registerAgent, reqSetOf,
  tenantOf, touchActive, TERMINAL, type AgentRec, type DispatcherState, type TaskRec, type TaskStatus, type WaitPlace,
} from './state.js';
import { priorityAt } from './priority.js';

/** A task in a snapshot; a finished one keeps only what decisions still read (the rest defaults). */
interface TaskSnap {
  spec: TaskSpec; seq: number; level: number; status: TaskStatus; wait?: WaitPlace; attempt: number;
  agentId?: string; submittedAt: number; queuedAt?: number; assignedAt: number; ageAt?: number; escalated?: boolean;
  /** The deferral rule; `true` in snapshots before deferrals named their rule. */
  deferred?: 'fairness' | 'quota' | boolean; fallback?: boolean; pendingDeps?: number; dependents?: string[]; retryAt?: number;
  holdAgent?: string; holdUntil?: number | null; admitted: boolean; doneBy?: string; base: number;
}

interface AgentSnap {
  id: string; caps: string[]; capacity: number; alive: boolean; registeredAt: number; lastSeenAt: number;
  idleSince: number; speed: number; speedSamples: number; completed: number; failed: number; running: string[];
}

/** The dispatcher state as plain data. Indexes are not saved: restore rebuilds them. */
export interface StateSnapshot {
  format: 1;
  policy: unknown;
  lastAt: number;
  seq: number;
  reqSets: string[][];
  agents: AgentSnap[];
  tasks: TaskSnap[];
  sessions: [string, string][];
  /**
   * The fairness window, one dispatch per entry, oldest first, packed: it holds every dispatch of
   * the last `fairness.windowMs` (3.6M at 1,000/s over the default hour), so `[at, tenant]` pairs
   * made it most of a large snapshot. `dt` is each dispatch's time minus the one before (the first
   * minus 0), `tenant` an index into `tenants`.
   */
  windowPacked?: { tenants: string[]; dt: number[]; tenant: number[] };
  /** The window as `[at, tenant]` pairs: snapshots written before `windowPacked`. */
  window?: [number, string][];
  /**
   * Sum of the active tenants' weights as the state accumulated it. Floating-point addition is not
   * associative, so a fresh sum can differ in the last bit and flip a fairness decision at its limit.
   * Absent in older snapshots (then recomputed).
   */
  activeWeight?: number;
  /** Ids of the finished tasks still kept, in the order they finished (retention evicts the first). */
  finished?: string[];
}

export function toSnapshot(s: DispatcherState): StateSnapshot {
  const tasks: TaskSnap[] = [];
  for (const t of s.tasks.values()) {
    if (TERMINAL.has(t.status)) {
      tasks.push({
        spec: t.spec, seq: t.seq, base: t.base, level: t.level, status: t.status, attempt: t.attempt, agentId: t.agentId,
        submittedAt: t.submittedAt, assignedAt: t.assignedAt, admitted: t.admitted, doneBy: t.doneBy,
      });
      continue;
    }
    tasks.push({
      spec: t.spec, seq: t.seq, base: t.base, level: t.level, status: t.status, wait: t.wait, attempt: t.attempt, agentId: t.agentId,
      submittedAt: t.submittedAt, queuedAt: t.queuedAt, assignedAt: t.assignedAt, ageAt: t.ageAt, escalated: t.escalated,
      deferred: t.deferred, fallback: t.fallback, pendingDeps: t.pendingDeps, dependents: t.dependents, retryAt: t.retryAt,
      holdAgent: t.holdAgent, holdUntil: t.holdUntil === Infinity ? null : t.holdUntil, admitted: t.admitted, doneBy: t.doneBy,
    });
  }
  const windowPacked = { tenants: [] as string[], dt: [] as number[], tenant: [] as number[] };
  const index = new Map<string, number>();
  let prev = 0;
  for (let i = s.windowHead; i < s.windowAt.length; i++) {
    const name = s.windowTenant[i];
    let k = index.get(name);
    if (k === undefined) { k = windowPacked.tenants.push(name) - 1; index.set(name, k); }
    windowPacked.dt.push(s.windowAt[i] - prev);
    windowPacked.tenant.push(k);
    prev = s.windowAt[i];
  }
  return {
    format: 1,
    policy: s.policy,
    lastAt: s.lastAt,
    seq: s.seq,
    reqSets: [...s.reqSets.values()].map((r) => [...r.requires]),
    agents: [...s.agents.values()].map((a) => ({
      id: a.id, caps: a.caps, capacity: a.capacity, alive: a.alive, registeredAt: a.registeredAt, lastSeenAt: a.lastSeenAt,
      idleSince: a.idleSince, speed: a.speed, speedSamples: a.speedSamples, completed: a.completed, failed: a.failed, running: [...a.running],
    })),
    tasks,
    sessions: [...s.sessions.entries()],
    windowPacked,
    activeWeight: s.activeWeight,
    finished: s.finishedQ.slice(s.finishedHead).filter((t) => s.tasks.get(t.id) === t).map((t) => t.id),
  };
}

/** Rebuild a state from a snapshot; it decides exactly as the state the snapshot was taken from. */
export function fromSnapshot(snap: StateSnapshot): DispatcherState {
  if (snap.format !== 1) throw new Error(`unknown snapshot format ${String(snap.format)}`);
  const s = initialState(recordedPolicy(snap.policy));
  s.lastAt = snap.lastAt;
  for (const r of snap.reqSets) reqSetOf(s, r.join('\u0000'), r);
  for (const x of snap.agents) {
    const a = registerAgent(s, x.id, x.caps, x.capacity, x.registeredAt);
    Object.assign(a, { lastSeenAt: x.lastSeenAt, idleSince: x.idleSince, speed: x.speed, speedSamples: x.speedSamples, completed: x.completed, failed: x.failed });
    s.seen.update(a);
    if (!x.alive) markDead(s, a);
  }
  if (snap.windowPacked) {
    const w = snap.windowPacked;
    const tenants = w.tenants.map((name) => tenantOf(s, name));
    let at = 0;
    for (let i = 0; i < w.dt.length; i++) countDispatch(s, tenants[w.tenant[i]], (at += w.dt[i]));
  } else {
    for (const [at, tenant] of snap.window ?? []) countDispatch(s, tenantOf(s, tenant), at);
  }
  const holds: [TaskRec, string, number | undefined][] = [];
  for (const x of snap.tasks) {
    const t = newTask(s, x.spec, priorityAt(x.base), x.submittedAt);
    Object.assign(t, {
      seq: x.seq, level: x.level, status: x.status, attempt: x.attempt, agentId: x.agentId, queuedAt: x.queuedAt ?? x.submittedAt,
      assignedAt: x.assignedAt, ageAt: x.ageAt ?? t.ageAt, escalated: x.escalated ?? false, deferred: x.deferred === true ? 'fairness' : x.deferred || undefined, fallback: x.fallback ?? false,
      pendingDeps: x.pendingDeps ?? 0, dependents: x.dependents, retryAt: x.retryAt ?? 0, admitted: x.admitted, doneBy: x.doneBy,
    });
    s.tasks.set(t.id, t);
    if (!t.admitted) continue;
    const tenant = tenantOf(s, t.tenant);
    if (t.status === 'assigned') tenant.running++;
    if (x.wait != null) { tenant.waiting++; s.waiting++; touchActive(s, tenant); }
    switch (x.wait) {
      case 'ready': enqueueReady(s, t); break;
      case 'retry': t.wait = 'retry'; s.retries.push(t); break;
      case 'blocked': t.wait = 'blocked'; s.blocked++; break;
      case 'hold': holds.push([t, x.holdAgent as string, x.holdUntil ?? undefined]); break;
      case null: break;
    }
  }
  s.seq = snap.seq;
  for (const x of snap.agents) {
    const a = s.agents.get(x.id) as AgentRec;
    for (const id of x.running) a.running.add(id);
    refreshAgent(s, a);
  }
  for (const [t, agentId, until] of holds) hold(s, t, s.agents.get(agentId) as AgentRec, until);
  for (const [ref, agentId] of snap.sessions) s.sessions.set(ref, agentId);
  if (snap.activeWeight !== undefined) s.activeWeight = snap.activeWeight;
  // Snapshots before retention listed no order: their finished tasks retire in map order.
  const finished = snap.finished ?? snap.tasks.filter((x) => TERMINAL.has(x.status)).map((x) => x.spec.id);
  for (const id of finished) s.finishedQ.push(s.tasks.get(id) as TaskRec);
  s.finishedLive = s.finishedQ.length;
  return s;
}
