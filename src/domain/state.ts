import { IndexedHeap } from './heap.js';
import type { TaskSpec } from './events.js';
import { CRITICAL, HIGH, LOW, NORMAL, PRIORITIES, levelOf, type Priority } from './priority.js';
import { DEFAULT_POLICY, weightOf, type Policy } from './policy.js';

export type TaskStatus =
  | 'queued' | 'blocked' | 'assigned' | 'succeeded' | 'failed' | 'cancelled' | 'shed' | 'rejected' | 'dead-lettered';

export const TERMINAL: ReadonlySet<TaskStatus> = new Set(['succeeded', 'failed', 'cancelled', 'shed', 'rejected', 'dead-lettered']);

/** Where a waiting task sits: a ready queue, a retry backoff, an affinity hold, or blocked on dependencies. */
export type WaitPlace = 'ready' | 'retry' | 'hold' | 'blocked' | null;

/** A task as the dispatcher tracks it. Heap positions live on the record (see IndexedHeap). */
export interface TaskRec {
  /** The task as submitted; a finished task keeps it without its payload (the log has it). */
  spec: TaskSpec;
  readonly id: string;
  readonly tenant: string;
  /** Submission order; the FIFO and every tie-break. */
  readonly seq: number;
  readonly reqKey: string;
  /** Level the task was submitted at (0 = critical). */
  readonly base: number;
  level: number;
  status: TaskStatus;
  wait: WaitPlace;
  /** The attempt of the current assignment, or of the next one while waiting. Starts at 1. */
  attempt: number;
  agentId: string | undefined;
  submittedAt: number;
  /** When the task last entered a waiting place (wait time counts from here). */
  queuedAt: number;
  assignedAt: number;
  /** When the task next rises one level by aging. */
  ageAt: number;
  /** Escalated because its deadline is at risk. */
  escalated: boolean;
  /** The rule of the TaskDeferred (fairness or quota) recorded since its last assignment, if any. */
  deferred: 'fairness' | 'quota' | undefined;
  /** Its affinity wait ended: it may go to any capable agent. */
  fallback: boolean;
  pendingDeps: number;
  dependents: string[] | undefined;
  retryAt: number;
  holdAgent: string | undefined;
  holdUntil: number;
  /** Rejected or shed at admission: never accepted, so its id may be submitted again. */
  admitted: boolean;
  /** Last completion recorded, so a duplicate is recognised as one. */
  doneBy: string | undefined;
  // Heap positions.
  qPos: number; agePos: number; dlPos: number; retryPos: number; holdPos: number; lowPos: number; waiterPos: number;
}

/** Agents with the same capability set share a group; a group's free heap orders its agents for load balancing. */
export interface CapGroup {
  readonly key: string;
  readonly caps: ReadonlySet<string>;
  readonly free: IndexedHeap<AgentRec>;
  alive: number;
  readonly reqSets: ReqSet[];
}

/** The tasks that require one set of capabilities, and the groups able to serve them. */
export interface ReqSet {
  readonly key: string;
  readonly requires: readonly string[];
  readonly groups: CapGroup[];
  /** Groups in `groups` with a free agent. */
  freeGroups: number;
  /** Groups in `groups` with an alive agent (0 → the tasks are unroutable). */
  capableGroups: number;
  /** Ready tasks needing this set. */
  ready: number;
}

export interface AgentRec {
  readonly id: string;
  caps: string[];
  group: CapGroup;
  capacity: number;
  readonly running: Set<string>;
  alive: boolean;
  registeredAt: number;
  lastSeenAt: number;
  /** When a slot last became free (or the agent registered): "longest idle" is the smallest. */
  idleSince: number;
  /** EWMA of actual ÷ estimated duration; lower is faster. 1.0 when unknown. */
  speed: number;
  speedSamples: number;
  completed: number;
  failed: number;
  /** Tasks waiting for this agent by session affinity, best first. */
  waiters: IndexedHeap<TaskRec> | undefined;
  freePos: number;
  seenPos: number;
}

export interface TenantRec {
  readonly name: string;
  weight: number;
  /** Dispatches in the fairness window. */
  window: number;
  running: number;
  /** Waiting tasks (ready, blocked, retry, hold): what maxQueued bounds. */
  waiting: number;
  /** Ready tasks per level, by requirement set. */
  readonly queues: Map<string, IndexedHeap<TaskRec>>[];
  readonly readyAt: number[];
  active: boolean;
  orderPos: number;
}

export interface DispatcherState {
  policy: Policy;
  /** Latest `at` seen; commands are stamped no earlier. */
  lastAt: number;
  seq: number;
  readonly tasks: Map<string, TaskRec>;
  readonly agents: Map<string, AgentRec>;
  readonly groups: Map<string, CapGroup>;
  readonly reqSets: Map<string, ReqSet>;
  readonly tenants: Map<string, TenantRec>;
  /** Tenants by (window ÷ weight, name): the fair-share order. */
  readonly tenantOrder: TenantRec[];
  activeWeight: number;
  activeTenants: number;
  readonly readyAt: number[];
  /** Ready + blocked + retry + hold: the depth shedding watches. */
  waiting: number;
  blocked: number;
  /** Agents alive with a free slot. */
  freeAgents: number;
  readonly sessions: Map<string, string>;
  /** The fairness window: dispatch times and tenants, oldest first from `windowHead`. */
  readonly windowAt: number[];
  readonly windowTenant: string[];
  windowHead: number;
  /** Agents alive, with a free slot and someone waiting for them. */
  readonly readyWaiters: Set<AgentRec>;
  readonly aging: IndexedHeap<TaskRec>;
  readonly deadlines: IndexedHeap<TaskRec>;
  readonly retries: IndexedHeap<TaskRec>;
  readonly holds: IndexedHeap<TaskRec>;
  /** Ready low tasks, newest on top (the first to shed to make room for critical work). */
  readonly newestLow: IndexedHeap<TaskRec>;
  /** Alive agents by last sign of life. */
  readonly seen: IndexedHeap<AgentRec>;
  /** Finished tasks in the order they finished, oldest first from `finishedHead` (may hold replaced records). */
  readonly finishedQ: TaskRec[];
  finishedHead: number;
  /** Finished tasks still in `tasks`: what `retention.finishedTasks` bounds. */
  finishedLive: number;
}

const bySeq = (a: TaskRec, b: TaskRec) => a.seq < b.seq;

/** Order of the tasks held for one session agent: higher level first, then first in. */
export function heldBefore(a: TaskRec, b: TaskRec): boolean {
  return a.level < b.level || (a.level === b.level && bySeq(a, b));
}

/** Latest start that still meets the deadline. */
export function latestStart(t: TaskRec): number {
  return (t.spec.deadline as number) - (t.spec.estimatedDurationMs ?? 0);
}

/** Order of a ready queue: critical work with a deadline by least slack, everything else first in, first out. */
function queueLess(a: TaskRec, b: TaskRec): boolean {
  if (a.level === CRITICAL) {
    const ka = a.spec.deadline === undefined ? Infinity : latestStart(a);
    const kb = b.spec.deadline === undefined ? Infinity : latestStart(b);
    if (ka !== kb) return ka < kb;
  }
  return a.seq < b.seq;
}

/** Load balancing: most free slots, then longest idle, then lowest id. */
export function freeLess(a: AgentRec, b: AgentRec): boolean {
  const fa = freeSlots(a);
  const fb = freeSlots(b);
  if (fa !== fb) return fa > fb;
  if (a.idleSince !== b.idleSince) return a.idleSince < b.idleSince;
  return a.id < b.id;
}

export function freeSlots(a: AgentRec): number {
  return a.alive ? Math.max(0, a.capacity - a.running.size) : 0;
}

export function initialState(policy: Policy = DEFAULT_POLICY): DispatcherState {
  return {
    policy,
    lastAt: 0,
    seq: 0,
    tasks: new Map(),
    agents: new Map(),
    groups: new Map(),
    reqSets: new Map(),
    tenants: new Map(),
    tenantOrder: [],
    activeWeight: 0,
    activeTenants: 0,
    readyAt: [0, 0, 0, 0],
    waiting: 0,
    blocked: 0,
    freeAgents: 0,
    sessions: new Map(),
    windowAt: [],
    windowTenant: [],
    windowHead: 0,
    readyWaiters: new Set(),
    aging: new IndexedHeap<TaskRec>((a, b) => a.ageAt < b.ageAt || (a.ageAt === b.ageAt && a.seq < b.seq), (t) => t.agePos, (t, p) => { t.agePos = p; }),
    deadlines: new IndexedHeap<TaskRec>((a, b) => {
      const ka = latestStart(a); const kb = latestStart(b);
      return ka < kb || (ka === kb && a.seq < b.seq);
    }, (t) => t.dlPos, (t, p) => { t.dlPos = p; }),
    retries: new IndexedHeap<TaskRec>((a, b) => a.retryAt < b.retryAt || (a.retryAt === b.retryAt && a.seq < b.seq), (t) => t.retryPos, (t, p) => { t.retryPos = p; }),
    holds: new IndexedHeap<TaskRec>((a, b) => a.holdUntil < b.holdUntil || (a.holdUntil === b.holdUntil && a.seq < b.seq), (t) => t.holdPos, (t, p) => { t.holdPos = p; }),
    newestLow: new IndexedHeap<TaskRec>((a, b) => a.seq > b.seq, (t) => t.lowPos, (t, p) => { t.lowPos = p; }),
    seen: new IndexedHeap<AgentRec>((a, b) => a.lastSeenAt < b.lastSeenAt || (a.lastSeenAt === b.lastSeenAt && a.id < b.id), (a) => a.seenPos, (a, p) => { a.seenPos = p; }),
    finishedQ: [],
    finishedHead: 0,
    finishedLive: 0,
  };
}

/**
 * A task has finished: remember it, and forget the oldest finished tasks beyond
 * `retention.finishedTasks`, so memory and snapshots grow with live work, not with history.
 */
export function retire(s: DispatcherState, t: TaskRec): void {
  // The payload was for the agent; a finished task need not hold it (the log does).
  if (t.spec.payload !== undefined) t.spec = { ...t.spec, payload: undefined };
  s.finishedQ.push(t);
  s.finishedLive++;
  const limit = s.policy.retention.finishedTasks;
  while (s.finishedLive > limit && s.finishedHead < s.finishedQ.length) {
    const old = s.finishedQ[s.finishedHead++];
    // A record replaced by a new submission of its id was already uncounted.
    if (s.tasks.get(old.id) === old) { s.tasks.delete(old.id); s.finishedLive--; }
  }
  if (s.finishedHead > 4096 && s.finishedHead * 2 > s.finishedQ.length) {
    s.finishedQ.splice(0, s.finishedHead);
    s.finishedHead = 0;
  }
}

/** A finished record is being replaced (its id submitted again): it no longer counts. */
export function unretire(s: DispatcherState, t: TaskRec): void {
  if (TERMINAL.has(t.status)) s.finishedLive--;
}

// ---------------------------------------------------------------------------------------------
// Index maintenance. evolve and snapshot restore both place tasks and agents through these.

export function reqKeyOf(requires: readonly string[]): string {
  return requires.join('\u0000');
}

export function normalizeNames(xs: readonly string[] | undefined): string[] {
  return [...new Set(xs ?? [])].sort();
}

function covers(caps: ReadonlySet<string>, requires: readonly string[]): boolean {
  for (const r of requires) if (!caps.has(r)) return false;
  return true;
}

export function reqSetOf(s: DispatcherState, key: string, requires: readonly string[]): ReqSet {
  let rs = s.reqSets.get(key);
  if (rs) return rs;
  rs = { key, requires, groups: [], freeGroups: 0, capableGroups: 0, ready: 0 };
  for (const g of s.groups.values()) {
    if (!covers(g.caps, requires)) continue;
    rs.groups.push(g);
    g.reqSets.push(rs);
    if (g.free.size > 0) rs.freeGroups++;
    if (g.alive > 0) rs.capableGroups++;
  }
  s.reqSets.set(key, rs);
  return rs;
}

function groupOf(s: DispatcherState, caps: string[]): CapGroup {
  const key = caps.join('\u0000');
  let g = s.groups.get(key);
  if (g) return g;
  g = {
    key,
    caps: new Set(caps),
    free: new IndexedHeap<AgentRec>(freeLess, (a) => a.freePos, (a, p) => { a.freePos = p; }),
    alive: 0,
    reqSets: [],
  };
  for (const rs of s.reqSets.values()) {
    if (covers(g.caps, rs.requires)) { rs.groups.push(g); g.reqSets.push(rs); }
  }
  s.groups.set(key, g);
  return g;
}

export function tenantOf(s: DispatcherState, name: string): TenantRec {
  let t = s.tenants.get(name);
  if (t) return t;
  t = {
    name, weight: weightOf(s.policy, name), window: 0, running: 0, waiting: 0,
    queues: [new Map(), new Map(), new Map(), new Map()], readyAt: [0, 0, 0, 0], active: false,
    orderPos: s.tenantOrder.length,
  };
  s.tenants.set(name, t);
  s.tenantOrder.push(t);
  reorderTenant(s, t);
  return t;
}

function tenantLess(a: TenantRec, b: TenantRec): boolean {
  const ka = a.window / a.weight; const kb = b.window / b.weight;
  return ka < kb || (ka === kb && a.name < b.name);
}

/** Move a tenant to its place in the fair-share order after its window count changed. */
export function reorderTenant(s: DispatcherState, t: TenantRec): void {
  const o = s.tenantOrder;
  let i = t.orderPos;
  while (i > 0 && tenantLess(t, o[i - 1])) { o[i] = o[i - 1]; o[i].orderPos = i; i--; }
  while (i < o.length - 1 && tenantLess(o[i + 1], t)) { o[i] = o[i + 1]; o[i].orderPos = i; i++; }
  o[i] = t; t.orderPos = i;
}

export function resortTenants(s: DispatcherState): void {
  for (const t of s.tenants.values()) t.weight = weightOf(s.policy, t.name);
  s.tenantOrder.sort((a, b) => (tenantLess(a, b) ? -1 : tenantLess(b, a) ? 1 : 0));
  s.tenantOrder.forEach((t, i) => { t.orderPos = i; });
  // Summed in the fair-share order, which is the same in a state restored from a snapshot (the map's
  // insertion order is not): floating-point sums depend on their order.
  s.activeWeight = 0;
  for (const t of s.tenantOrder) if (t.active) s.activeWeight += t.weight;
}

/** A tenant is active while it has waiting work or dispatches in the window; fair targets split among active tenants. */
export function touchActive(s: DispatcherState, t: TenantRec): void {
  const active = t.waiting > 0 || t.window > 0;
  if (active === t.active) return;
  t.active = active;
  s.activeTenants += active ? 1 : -1;
  s.activeWeight += active ? t.weight : -t.weight;
}

export function countDispatch(s: DispatcherState, tenant: TenantRec, at: number): void {
  s.windowAt.push(at);
  s.windowTenant.push(tenant.name);
  tenant.window++;
  reorderTenant(s, tenant);
  touchActive(s, tenant);
}

/** Drop dispatches older than the fairness window. */
export function evictWindow(s: DispatcherState, now: number): void {
  const limit = now - s.policy.fairness.windowMs;
  let h = s.windowHead;
  while (h < s.windowAt.length && s.windowAt[h] <= limit) {
    const t = s.tenants.get(s.windowTenant[h]) as TenantRec;
    t.window--;
    reorderTenant(s, t);
    touchActive(s, t);
    h++;
  }
  if (h > 4096 && h * 2 > s.windowAt.length) {
    s.windowAt.splice(0, h);
    s.windowTenant.splice(0, h);
    h = 0;
  }
  s.windowHead = h;
}

export function windowSize(s: DispatcherState): number {
  return s.windowAt.length - s.windowHead;
}

export function enqueueReady(s: DispatcherState, t: TaskRec): void {
  const tenant = tenantOf(s, t.tenant);
  let q = tenant.queues[t.level].get(t.reqKey);
  if (!q) {
    q = new IndexedHeap<TaskRec>(queueLess, (x) => x.qPos, (x, p) => { x.qPos = p; });
    tenant.queues[t.level].set(t.reqKey, q);
  }
  t.wait = 'ready';
  q.push(t);
  tenant.readyAt[t.level]++;
  s.readyAt[t.level]++;
  (s.reqSets.get(t.reqKey) as ReqSet).ready++;
  if ((t.level === NORMAL || t.level === LOW) && !t.escalated) s.aging.push(t);
  if (t.spec.deadline !== undefined && t.spec.estimatedDurationMs !== undefined && t.level !== CRITICAL) s.deadlines.push(t);
  if (t.level === LOW) s.newestLow.push(t);
}

export function dequeueReady(s: DispatcherState, t: TaskRec): void {
  const tenant = s.tenants.get(t.tenant) as TenantRec;
  const q = tenant.queues[t.level].get(t.reqKey) as IndexedHeap<TaskRec>;
  q.remove(t);
  if (q.size === 0) tenant.queues[t.level].delete(t.reqKey);
  tenant.readyAt[t.level]--;
  s.readyAt[t.level]--;
  (s.reqSets.get(t.reqKey) as ReqSet).ready--;
  s.aging.remove(t);
  s.deadlines.remove(t);
  s.newestLow.remove(t);
  t.wait = null;
}

/** Take a waiting task out of wherever it waits; the waiting counts are the caller's. */
export function unplace(s: DispatcherState, t: TaskRec): void {
  switch (t.wait) {
    case 'ready': dequeueReady(s, t); break;
    case 'retry': s.retries.remove(t); break;
    case 'hold': unhold(s, t); break;
    case 'blocked': s.blocked--; break;
    case null: break;
    default: { const never: never = t.wait; throw new Error(`unknown wait place ${String(never)}`); }
  }
  t.wait = null;
}

export function hold(s: DispatcherState, t: TaskRec, agent: AgentRec, until: number | undefined): void {
  t.wait = 'hold';
  t.holdAgent = agent.id;
  t.holdUntil = until ?? Infinity;
  if (until !== undefined) s.holds.push(t);
  if (!agent.waiters) {
    agent.waiters = new IndexedHeap<TaskRec>(heldBefore, (x) => x.waiterPos, (x, p) => { x.waiterPos = p; });
  }
  agent.waiters.push(t);
  refreshAgent(s, agent);
}

function unhold(s: DispatcherState, t: TaskRec): void {
  s.holds.remove(t);
  const agent = s.agents.get(t.holdAgent as string);
  if (agent?.waiters) {
    agent.waiters.remove(t);
    refreshAgent(s, agent);
  }
  t.holdAgent = undefined;
  t.holdUntil = 0;
}

/** Keep an agent's place in its group's free heap (and the counts derived from it) true. */
export function refreshAgent(s: DispatcherState, a: AgentRec): void {
  const g = a.group;
  const shouldBeFree = freeSlots(a) > 0;
  const inHeap = g.free.has(a);
  if (shouldBeFree && inHeap) g.free.update(a);
  else if (shouldBeFree) {
    g.free.push(a);
    s.freeAgents++;
    if (g.free.size === 1) for (const rs of g.reqSets) rs.freeGroups++;
  } else if (inHeap) {
    g.free.remove(a);
    s.freeAgents--;
    if (g.free.size === 0) for (const rs of g.reqSets) rs.freeGroups--;
  }
  if (shouldBeFree && a.waiters && a.waiters.size > 0) s.readyWaiters.add(a);
  else s.readyWaiters.delete(a);
}

function setAlive(s: DispatcherState, a: AgentRec, alive: boolean): void {
  if (a.alive === alive) return;
  a.alive = alive;
  const g = a.group;
  g.alive += alive ? 1 : -1;
  if (alive && g.alive === 1) for (const rs of g.reqSets) rs.capableGroups++;
  if (!alive && g.alive === 0) for (const rs of g.reqSets) rs.capableGroups--;
  if (alive) s.seen.push(a); else s.seen.remove(a);
  refreshAgent(s, a);
}

export function registerAgent(s: DispatcherState, id: string, caps: string[], capacity: number, at: number): AgentRec {
  let a = s.agents.get(id);
  if (!a) {
    const g = groupOf(s, caps);
    a = {
      id, caps, group: g, capacity, running: new Set(), alive: false, registeredAt: at, lastSeenAt: at,
      idleSince: at, speed: 1, speedSamples: 0, completed: 0, failed: 0, waiters: undefined, freePos: -1, seenPos: -1,
    };
    s.agents.set(id, a);
    setAlive(s, a, true);
    return a;
  }
  const wasAlive = a.alive;
  setAlive(s, a, false);
  a.group.free.remove(a);
  const g = groupOf(s, caps);
  a.caps = caps;
  a.group = g;
  a.capacity = capacity;
  a.lastSeenAt = at;
  if (!wasAlive) { a.idleSince = at; a.registeredAt = at; }
  setAlive(s, a, true);
  return a;
}

export function markDead(s: DispatcherState, a: AgentRec): void {
  setAlive(s, a, false);
}

export function sawAgent(s: DispatcherState, id: string, at: number): void {
  const a = s.agents.get(id);
  if (!a || !a.alive) return;
  a.lastSeenAt = at;
  s.seen.update(a);
}

export function newTask(s: DispatcherState, spec: TaskSpec, priority: Priority, at: number): TaskRec {
  const level = levelOf(priority);
  return {
    spec, id: spec.id, tenant: spec.tenant, seq: ++s.seq, reqKey: reqKeyOf(spec.requires), base: level, level,
    status: 'queued', wait: null, attempt: 1, agentId: undefined, submittedAt: at, queuedAt: at, assignedAt: 0,
    ageAt: at + s.policy.aging.stepMs, escalated: false, deferred: undefined, fallback: false, pendingDeps: 0,
    dependents: undefined, retryAt: 0, holdAgent: undefined, holdUntil: 0, admitted: true, doneBy: undefined,
    qPos: -1, agePos: -1, dlPos: -1, retryPos: -1, holdPos: -1, lowPos: -1, waiterPos: -1,
  };
}

/** How many tasks wait at each level (ready, held for affinity or in retry backoff; not blocked). */
export function queueDepth(s: DispatcherState): Record<Priority, number> {
  const depth = { critical: s.readyAt[CRITICAL], high: s.readyAt[HIGH], normal: s.readyAt[NORMAL], low: s.readyAt[LOW] };
  for (const t of s.holds.values()) depth[PRIORITIES[t.level]]++;
  for (const a of s.agents.values()) {
    if (!a.waiters) continue;
    for (const t of a.waiters.values()) if (t.holdUntil === Infinity) depth[PRIORITIES[t.level]]++;
  }
  for (const t of s.retries.values()) depth[PRIORITIES[t.level]]++;
  return depth;
}

/** Ready tasks that no alive agent is capable of. */
export function unroutable(s: DispatcherState): number {
  let n = 0;
  for (const rs of s.reqSets.values()) if (rs.capableGroups === 0) n += rs.ready;
  return n;
}
