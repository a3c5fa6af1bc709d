import { releaseAgentWork } from './decide.js';
import type { DispatchEvent, Why } from './events.js';
import { quotaOf } from './policy.js';
import { CRITICAL, priorityAt } from './priority.js';
import {
  freeLess, freeSlots, heldBefore, latestStart, windowSize,
  type AgentRec, type DispatcherState, type ReqSet, type TaskRec, type TenantRec,
} from './state.js';

/**
 * The dispatcher's next decision at time `now`, or `[]` when there is none: first what time has
 * made due (agent timeouts, retry backoffs, affinity waits, deadline escalation, aging), then one
 * dispatch. Reads the state, never changes it; `handle` evolves the events and asks again until
 * nothing is left. One call costs O(log n) in queue depth (plus tenants × requirement sets in the
 * worst case), never a scan of the queue.
 */
export function decideNext(s: DispatcherState, now: number): DispatchEvent[] {
  return due(s, now) ?? dispatch(s, now) ?? [];
}

function due(s: DispatcherState, now: number): DispatchEvent[] | undefined {
  const p = s.policy;
  const lost = s.seen.peek();
  if (lost && lost.lastSeenAt + p.health.agentTimeoutMs <= now) {
    const out: DispatchEvent[] = [{
      type: 'AgentTimedOut', v: 1, at: now, agentId: lost.id, lastSeenAt: lost.lastSeenAt, tasks: [...lost.running],
      why: { rule: 'agent-timeout', silentMs: now - lost.lastSeenAt, agentTimeoutMs: p.health.agentTimeoutMs },
    }];
    releaseAgentWork(s, lost.id, now, 'agent-timed-out', out);
    return out;
  }
  const retry = s.retries.peek();
  if (retry && retry.retryAt <= now) {
    return [{ type: 'TaskRequeued', v: 1, at: now, taskId: retry.id, attempt: retry.attempt + 1, reason: 'retry', why: { rule: 'retry-backoff', previousAttempt: retry.attempt, retryAt: retry.retryAt } }];
  }
  const held = s.holds.peek();
  if (held && held.holdUntil <= now) {
    return [{ type: 'TaskRequeued', v: 1, at: now, taskId: held.id, attempt: held.attempt, reason: 'affinity-wait-expired', why: { rule: 'affinity-fallback', agentId: held.holdAgent, waitedMs: now - held.queuedAt, maxWaitMs: p.affinity.maxWaitMs } }];
  }
  const risky = s.deadlines.peek();
  const marginMs = s.policy.deadlines.marginMs;
  if (risky && latestStart(risky) - marginMs <= now) {
    const remainingMs = (risky.spec.deadline as number) - now;
    return [{
      type: 'TaskEscalated', v: 1, at: now, taskId: risky.id, from: priorityAt(risky.level), to: 'critical',
      why: { rule: 'deadline-at-risk', remainingMs, estimatedDurationMs: risky.spec.estimatedDurationMs, slackMs: remainingMs - (risky.spec.estimatedDurationMs as number), ...(marginMs > 0 ? { marginMs } : {}) },
    }];
  }
  const old = s.aging.peek();
  if (old && old.ageAt <= now) {
    return [{
      type: 'TaskEscalated', v: 1, at: now, taskId: old.id, from: priorityAt(old.level), to: priorityAt(old.level - 1),
      why: { rule: 'aging', waitedMs: now - old.queuedAt, stepMs: p.aging.stepMs },
    }];
  }
  return undefined;
}

/** Share of the window and fair target of a tenant. */
function fairness(s: DispatcherState, t: TenantRec): { share: number; target: number; over: boolean } {
  const total = windowSize(s);
  const share = total === 0 ? 0 : t.window / total;
  const target = s.activeWeight === 0 ? 1 : t.weight / s.activeWeight;
  return { share, target, over: isOver(s, t) };
}

/** Above deferFactor × its fair target (with enough dispatches in the window to tell). */
function isOver(s: DispatcherState, t: TenantRec): boolean {
  const total = windowSize(s);
  const f = s.policy.fairness;
  if (s.activeTenants <= 1 || total < f.minSamples || total === 0) return false;
  const target = s.activeWeight === 0 ? 1 : t.weight / s.activeWeight;
  return t.window / total > f.deferFactor * target;
}

/**
 * The oldest ready task of a tenant at a level among the servable requirement sets (those with
 * a free capable agent): one map lookup per servable set, not a walk over all the tenant's queues.
 */
function headOf(t: TenantRec, level: number, servable: readonly ReqSet[]): TaskRec | undefined {
  let best: TaskRec | undefined;
  const queues = t.queues[level];
  for (let i = 0; i < servable.length; i++) {
    const q = queues.get(servable[i].key);
    if (q === undefined) continue;
    const head = q.peek() as TaskRec;
    if (!best || (level === CRITICAL ? criticalBefore(head, best) : head.seq < best.seq)) best = head;
  }
  return best;
}

function criticalBefore(a: TaskRec, b: TaskRec): boolean {
  const ka = a.spec.deadline === undefined ? Infinity : latestStart(a);
  const kb = b.spec.deadline === undefined ? Infinity : latestStart(b);
  return ka < kb || (ka === kb && a.seq < b.seq);
}

function dispatch(s: DispatcherState, now: number): DispatchEvent[] | undefined {
  if (s.freeAgents === 0) return undefined;
  const affine = affinityDispatch(s, now);
  if (affine) return affine;
  // Requirement sets with both ready work and a free capable agent; none → nothing to dispatch.
  let servable: ReqSet[] | undefined;
  for (const rs of s.reqSets.values()) if (rs.freeGroups > 0 && rs.ready > 0) (servable ??= []).push(rs);
  if (servable === undefined) return undefined;
  // First pass: tenants over their fair share wait while anyone else has work a free agent can take.
  // Every tenant passed over gets its deferral recorded before anyone is served instead.
  const skipped: { task: TaskRec; tenant: TenantRec }[] = [];
  for (let level = CRITICAL; level <= 3; level++) {
    if (s.readyAt[level] === 0) continue;
    for (const tenant of s.tenantOrder) {
      if (tenant.readyAt[level] === 0) continue;
      const head = headOf(tenant, level, servable);
      if (!head) continue;
      const quota = quotaOf(s.policy, tenant.name)?.maxConcurrent;
      if (quota !== undefined && tenant.running >= quota) {
        if (head.deferred !== 'quota') return [deferred(head, now, { rule: 'quota', running: tenant.running, maxConcurrent: quota })];
        continue;
      }
      if (level !== CRITICAL && isOver(s, tenant)) {
        skipped.push({ task: head, tenant });
        continue;
      }
      const pending = skipped.find((x) => x.task.deferred !== 'fairness');
      if (pending) {
        const f = fairness(s, pending.tenant);
        return [deferred(pending.task, now, {
          rule: 'fairness', share: f.share, target: f.target, deferFactor: s.policy.fairness.deferFactor, window: windowSize(s), servedInstead: tenant.name,
        })];
      }
      return assign(s, head, tenant, now);
    }
  }
  // Nobody else has servable work: over-share tenants are served after all.
  if (skipped.length > 0) return assign(s, skipped[0].task, skipped[0].tenant, now);
  return undefined;
}

function deferred(t: TaskRec, now: number, why: Why): DispatchEvent {
  return { type: 'TaskDeferred', v: 1, at: now, taskId: t.id, why: { ...why, level: priorityAt(t.level) } };
}

/** Agents that just freed a slot serve the tasks waiting for them by session affinity first. */
function affinityDispatch(s: DispatcherState, now: number): DispatchEvent[] | undefined {
  let best: { a: AgentRec; t: TaskRec } | undefined;
  for (const a of s.readyWaiters) {
    const waiters = a.waiters as NonNullable<AgentRec['waiters']>;
    let t = waiters.peek() as TaskRec;
    // A tenant at its maxConcurrent waits, held or not: the hold keeps its place for the owner.
    // The others held for this agent need not wait behind it.
    if (atQuota(s, t.tenant)) {
      let next: TaskRec | undefined;
      for (const w of waiters.values()) {
        if (!atQuota(s, w.tenant) && (!next || heldBefore(w, next))) next = w;
      }
      if (!next) continue;
      t = next;
    }
    if (!best || heldBefore(t, best.t)) best = { a, t };
  }
  if (!best) return undefined;
  const tenant = s.tenants.get(best.t.tenant) as TenantRec;
  return [assigned(s, best.t, best.a, tenant, now, { rule: 'affinity', sessionRef: best.t.spec.sessionRef, waitedMs: now - best.t.queuedAt })];
}

/** The tenant runs as many tasks as its maxConcurrent allows. */
function atQuota(s: DispatcherState, tenant: string): boolean {
  const quota = quotaOf(s.policy, tenant)?.maxConcurrent;
  return quota !== undefined && (s.tenants.get(tenant) as TenantRec).running >= quota;
}

function assign(s: DispatcherState, t: TaskRec, tenant: TenantRec, now: number): DispatchEvent[] {
  const rs = s.reqSets.get(t.reqKey) as ReqSet;
  const ref = t.spec.sessionRef;
  if (ref !== undefined && !t.fallback) {
    const owner = s.agents.get(s.sessions.get(ref) ?? '');
    if (owner && owner.alive && rs.groups.includes(owner.group)) {
      if (freeSlots(owner) > 0) {
        return [assigned(s, t, owner, tenant, now, { rule: 'affinity', sessionRef: ref })];
      }
      const hard = t.spec.affinity === 'hard';
      const until = hard ? undefined : now + s.policy.affinity.maxWaitMs;
      return [{
        type: 'TaskDeferred', v: 1, at: now, taskId: t.id, agentId: owner.id, until,
        why: { rule: 'affinity-wait', sessionRef: ref, agentId: owner.id, hard, maxWaitMs: hard ? null : s.policy.affinity.maxWaitMs },
      }];
    }
  }
  const previous = ref === undefined ? undefined : s.sessions.get(ref);
  const fallback = previous !== undefined ? { rule: 'affinity-fallback', sessionRef: ref, previousAgent: previous } : undefined;
  const deadline = t.spec.deadline;
  const est = t.spec.estimatedDurationMs;
  if (deadline !== undefined && est !== undefined && deadline - now <= 2 * est) {
    const a = fastest(rs);
    return [assigned(s, t, a, tenant, now, {
      rule: deadline - now > est ? 'deadline-tight-fastest' : 'deadline-at-risk-fastest',
      remainingMs: deadline - now, estimatedDurationMs: est, speed: round(a.speed), ...(fallback ? { affinity: fallback } : {}),
    })];
  }
  let best: AgentRec | undefined;
  for (const g of rs.groups) {
    const top = g.free.peek();
    if (top && (!best || freeLess(top, best))) best = top;
  }
  const a = best as AgentRec;
  return [assigned(s, t, a, tenant, now, {
    ...(fallback ?? { rule: 'load-balance' }), freeSlots: freeSlots(a), idleMs: now - a.idleSince,
  })];
}

function fastest(rs: ReqSet): AgentRec {
  let best: AgentRec | undefined;
  for (const g of rs.groups) {
    for (const a of g.free.values()) {
      if (!best || a.speed < best.speed || (a.speed === best.speed && freeLess(a, best))) best = a;
    }
  }
  return best as AgentRec;
}

function assigned(s: DispatcherState, t: TaskRec, a: AgentRec, tenant: TenantRec, now: number, why: Why): DispatchEvent {
  const rs = s.reqSets.get(t.reqKey) as ReqSet;
  let candidates = 0;
  let capable = 0;
  for (const g of rs.groups) { candidates += g.free.size; capable += g.alive; }
  const total = windowSize(s);
  return {
    type: 'TaskAssigned', v: 1, at: now, taskId: t.id, agentId: a.id, attempt: t.attempt, tenant: t.tenant,
    priority: priorityAt(t.level),
    why: {
      ...why,
      candidates,
      excluded: { busy: capable - candidates, incapable: s.seen.size - capable },
      waitedMs: now - t.queuedAt,
      tenantShare: round(total === 0 ? 0 : tenant.window / total),
      tenantTarget: round(s.activeWeight === 0 ? 1 : tenant.weight / s.activeWeight),
      ...(t.level < t.base ? { raisedFrom: priorityAt(t.base) } : {}),
    },
  };
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}


