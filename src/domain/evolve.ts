import type { DispatchEvent } from './events.js';
import { recordedPolicy } from './policy.js';
import { NORMAL, LOW, levelOf } from './priority.js';
import {
  countDispatch, enqueueReady, evictWindow, hold, markDead, newTask, refreshAgent, registerAgent, reqSetOf,
  resortTenants, retire, sawAgent, tenantOf, touchActive, unplace, unretire, TERMINAL,
  type AgentRec, type DispatcherState, type TaskRec, type TaskStatus,
} from './state.js';

const SPEED_ALPHA = 0.3;

/**
 * Apply one event to the state. The state is owned by one writer and updated in place (a million
 * queued tasks cannot be copied per event); replay starts from `initialState()`. Deterministic:
 * the same events in the same order give the same state, and so the same later decisions.
 */
export function evolve(s: DispatcherState, e: DispatchEvent): DispatcherState {
  if (e.at > s.lastAt) s.lastAt = e.at;
  evictWindow(s, e.at);
  switch (e.type) {
    case 'TaskSubmitted': {
      const prev = s.tasks.get(e.task.id);
      if (prev) { unretire(s, prev); s.tasks.delete(prev.id); } // a rejected or shed submission being tried again
      reqSetOf(s, e.task.requires.join('\u0000'), e.task.requires);
      const t = newTask(s, e.task, e.priority, e.at);
      s.tasks.set(t.id, t);
      const tenant = tenantOf(s, t.tenant);
      for (const d of e.task.dependsOn) {
        const dep = s.tasks.get(d);
        if (!dep || dep.status === 'succeeded') continue;
        t.pendingDeps++;
        (dep.dependents ??= []).push(t.id);
      }
      tenant.waiting++;
      s.waiting++;
      touchActive(s, tenant);
      if (t.pendingDeps > 0) { t.status = 'blocked'; t.wait = 'blocked'; s.blocked++; } else enqueueReady(s, t);
      return s;
    }
    case 'TaskRejected':
    case 'TaskShed': {
      if (e.type === 'TaskRejected' || e.task) {
        const spec = e.type === 'TaskRejected' ? e.task : e.task!;
        const prev = s.tasks.get(spec.id);
        if (prev?.admitted) return s; // never replaces an accepted task
        if (prev) unretire(s, prev);
        const t = newTask(s, spec, spec.priority ?? 'normal', e.at);
        t.status = e.type === 'TaskRejected' ? 'rejected' : 'shed';
        t.admitted = false;
        s.tasks.set(t.id, t);
        retire(s, t);
        return s;
      }
      finish(s, task(s, e.taskId), 'shed');
      return s;
    }
    case 'AgentRegistered':
      registerAgent(s, e.agentId, e.capabilities, e.capacity, e.at);
      return s;
    case 'AgentIdle':
    case 'AgentHeartbeat':
      sawAgent(s, e.agentId, e.at);
      return s;
    case 'DispatcherResumed':
      for (const a of s.agents.values()) if (a.alive && a.lastSeenAt < e.at) sawAgent(s, a.id, e.at);
      return s;
    case 'TaskCompleted': {
      const t = task(s, e.taskId);
      const a = s.agents.get(e.agentId);
      if (a) {
        a.completed++;
        const est = t.spec.estimatedDurationMs;
        if (est !== undefined) {
          const ratio = e.durationMs / est;
          a.speed = a.speedSamples === 0 ? (1 - SPEED_ALPHA) + SPEED_ALPHA * ratio : (1 - SPEED_ALPHA) * a.speed + SPEED_ALPHA * ratio;
          a.speedSamples++;
        }
      }
      t.doneBy = `${e.agentId}#${e.attempt}#succeeded`;
      finish(s, t, 'succeeded', e.at);
      sawAgent(s, e.agentId, e.at);
      for (const id of t.dependents ?? []) {
        const d = s.tasks.get(id);
        if (d && d.pendingDeps > 0) d.pendingDeps--;
      }
      return s;
    }
    case 'TaskFailed': {
      const t = task(s, e.taskId);
      const a = s.agents.get(e.agentId);
      if (a) a.failed++;
      t.doneBy = `${e.agentId}#${e.attempt}#failed`;
      if (e.retryAt === undefined) {
        finish(s, t, 'failed', e.at);
      } else {
        releaseSlot(s, t, e.at);
        t.status = 'queued';
        t.wait = 'retry';
        t.retryAt = e.retryAt;
        s.retries.push(t);
        addWaiting(s, t);
      }
      sawAgent(s, e.agentId, e.at);
      return s;
    }
    case 'TaskCancelled':
      finish(s, task(s, e.taskId), 'cancelled', e.at);
      return s;
    case 'AgentLeft':
    case 'AgentTimedOut': {
      const a = s.agents.get(e.agentId);
      if (a) markDead(s, a);
      return s;
    }
    case 'PolicyChanged':
      s.policy = recordedPolicy(e.policy);
      resortTenants(s);
      return s;
    case 'TaskAssigned': {
      const t = task(s, e.taskId);
      const a = s.agents.get(e.agentId) as AgentRec;
      unplace(s, t);
      const tenant = tenantOf(s, t.tenant);
      tenant.waiting--;
      s.waiting--;
      tenant.running++;
      t.status = 'assigned';
      t.agentId = a.id;
      t.attempt = e.attempt;
      t.assignedAt = e.at;
      t.deferred = undefined;
      a.running.add(t.id);
      refreshAgent(s, a);
      if (t.spec.sessionRef !== undefined) s.sessions.set(t.spec.sessionRef, a.id);
      countDispatch(s, tenant, e.at);
      return s;
    }
    case 'TaskDeferred': {
      const t = task(s, e.taskId);
      if (e.why.rule === 'affinity-wait') {
        unplace(s, t);
        hold(s, t, s.agents.get(e.agentId as string) as AgentRec, e.until);
      } else {
        t.deferred = e.why.rule === 'quota' ? 'quota' : 'fairness';
      }
      return s;
    }
    case 'TaskEscalated': {
      const t = task(s, e.taskId);
      const wasReady = t.wait === 'ready';
      if (wasReady) unplace(s, t);
      t.level = levelOf(e.to);
      if (e.why.rule === 'aging') t.ageAt += s.policy.aging.stepMs;
      else t.escalated = true;
      if (wasReady) enqueueReady(s, t);
      return s;
    }
    case 'TaskRequeued': {
      const t = task(s, e.taskId);
      if (t.status === 'assigned') {
        releaseSlot(s, t, e.at);
        addWaiting(s, t);
      } else {
        unplace(s, t);
      }
      if (e.reason === 'affinity-wait-expired' || e.reason === 'affinity-agent-lost') t.fallback = true;
      else {
        t.queuedAt = e.at;
        if (t.level === NORMAL || t.level === LOW) t.ageAt = e.at + s.policy.aging.stepMs;
      }
      t.attempt = e.attempt;
      t.status = 'queued';
      enqueueReady(s, t);
      return s;
    }
    case 'TaskDeadLettered':
      finish(s, task(s, e.taskId), 'dead-lettered', e.at);
      return s;
    case 'TaskUnblocked': {
      const t = task(s, e.taskId);
      unplace(s, t);
      t.status = 'queued';
      t.queuedAt = e.at;
      if (t.level === NORMAL || t.level === LOW) t.ageAt = e.at + s.policy.aging.stepMs;
      enqueueReady(s, t);
      return s;
    }
    default: {
      const never: never = e;
      throw new Error(`unknown event ${JSON.stringify(never)}`);
    }
  }
}

function task(s: DispatcherState, id: string): TaskRec {
  const t = s.tasks.get(id);
  if (!t) throw new Error(`event refers to unknown task ${id}`);
  return t;
}

function addWaiting(s: DispatcherState, t: TaskRec): void {
  const tenant = tenantOf(s, t.tenant);
  tenant.waiting++;
  s.waiting++;
  touchActive(s, tenant);
}

/** Free the slot a running task held. */
function releaseSlot(s: DispatcherState, t: TaskRec, at: number): void {
  const a = s.agents.get(t.agentId as string);
  const tenant = tenantOf(s, t.tenant);
  tenant.running--;
  if (a && a.running.delete(t.id)) {
    a.idleSince = at;
    refreshAgent(s, a);
  }
}

/** Move a task to a terminal status from wherever it is. */
function finish(s: DispatcherState, t: TaskRec, status: TaskStatus, at = t.assignedAt): void {
  if (TERMINAL.has(t.status)) { t.status = status; return; }
  if (t.status === 'assigned') {
    releaseSlot(s, t, at);
  } else {
    unplace(s, t);
    const tenant = tenantOf(s, t.tenant);
    tenant.waiting--;
    s.waiting--;
    touchActive(s, tenant);
  }
  t.status = status;
  t.wait = null;
  retire(s, t);
}

