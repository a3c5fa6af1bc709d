import type { Command, CommandOf } from './commands.js';
import { DomainError } from './errors.js';
import type { DispatchEvent, EventOf, TaskSpec } from './events.js';
import { hardCapOf, quotaOf, resolvePriority } from './policy.js';
import { CRITICAL, HIGH, LOW, NORMAL, levelOf } from './priority.js';
import { TERMINAL, normalizeNames, type DispatcherState, type TaskRec } from './state.js';

/**
 * Decide what an input command means: the facts to record and their immediate consequences.
 * Reads the state, never changes it. Time-driven decisions and dispatch come from `decideNext`.
 * @throws DomainError when the command is refused (nothing is recorded).
 */
export function decide(cmd: Command, s: DispatcherState): DispatchEvent[] {
  switch (cmd.type) {
    case 'SubmitTask': return submit(cmd, s);
    case 'CancelTask': return cancel(cmd, s);
    case 'MarkAgentReady': return ready(cmd, s);
    case 'RecordHeartbeat': return heartbeat(cmd, s);
    case 'CompleteTask': return complete(cmd, s);
    case 'RemoveAgent': return removeAgent(cmd, s);
    case 'ChangePolicy':
      return JSON.stringify(cmd.policy) === JSON.stringify(s.policy)
        ? [] : [{ type: 'PolicyChanged', v: 1, at: cmd.at, policy: cmd.policy }];
    case 'Tick': return [];
    case 'Resume': {
      let agents = 0;
      for (const a of s.agents.values()) if (a.alive && a.lastSeenAt < cmd.at) agents++;
      return agents === 0 ? [] : [{ type: 'DispatcherResumed', v: 1, at: cmd.at, since: cmd.since, agents }];
    }
    default: { const never: never = cmd; throw new Error(`unknown command ${JSON.stringify(never)}`); }
  }
}

/** Normalise a submission's names so equal requirement sets share one queue. */
export function normalizeSpec(spec: TaskSpec): TaskSpec {
  if (isNormal(spec.requires, true) && isNormal(spec.dependsOn, false)) return spec;
  return { ...spec, requires: normalizeNames(spec.requires), dependsOn: [...new Set(spec.dependsOn)] };
}

/** Already free of duplicates (and sorted, when asked): most submissions are, so no copy. */
function isNormal(xs: readonly string[], sorted: boolean): boolean {
  if (xs.length <= 1) return true;
  if (sorted) {
    for (let i = 1; i < xs.length; i++) if (!(xs[i - 1] < xs[i])) return false;
    return true;
  }
  return new Set(xs).size === xs.length;
}

function submit(cmd: CommandOf<'SubmitTask'>, s: DispatcherState): DispatchEvent[] {
  const spec = normalizeSpec(cmd.task);
  const at = cmd.at;
  const existing = s.tasks.get(spec.id);
  if (existing?.admitted) return []; // idempotent: the id was accepted before
  const reject = (reason: string, message: string): DispatchEvent[] => [{ type: 'TaskRejected', v: 1, at, task: spec, reason, message }];

  for (let i = 0; i < spec.dependsOn.length; i++) {
    const dep = s.tasks.get(spec.dependsOn[i]);
    if (!dep || !dep.admitted) return reject('unknown-dependency', `dependsOn.${i}: unknown task id "${spec.dependsOn[i]}"`);
  }
  const p = s.policy;
  const { priority, from } = resolvePriority(p, spec);
  const level = levelOf(priority);
  const tenant = s.tenants.get(spec.tenant);
  const maxQueued = quotaOf(p, spec.tenant)?.maxQueued;
  if (maxQueued !== undefined && (tenant?.waiting ?? 0) >= maxQueued) {
    return reject('quota-max-queued', `tenant "${spec.tenant}" already has ${tenant?.waiting} waiting tasks (maxQueued ${maxQueued})`);
  }

  const hw = p.shedding.highWatermark;
  const threshold = level === LOW ? hw : level === NORMAL ? hw * 1.25 : level === HIGH ? hw * 1.5 : Infinity;
  // Shed when admitting it would take the waiting count above the threshold.
  if (s.waiting >= threshold) {
    return [{
      type: 'TaskShed', v: 1, at, taskId: spec.id, tenant: spec.tenant, priority, task: spec,
      why: { rule: 'overload-shed', waiting: s.waiting, threshold, highWatermark: hw },
    }];
  }
  const events: DispatchEvent[] = [{ type: 'TaskSubmitted', v: 1, at, task: spec, priority, prioritySource: from }];
  let victim: TaskRec | undefined;
  const ended = new Set<string>();
  if (level === CRITICAL && s.waiting >= hardCapOf(p)) {
    victim = s.newestLow.peek();
    if (victim) {
      events.push({
        type: 'TaskShed', v: 1, at, taskId: victim.id, tenant: victim.tenant, priority: 'low',
        why: { rule: 'make-room-for-critical', waiting: s.waiting, hardCap: hardCapOf(p), admitted: spec.id },
      });
      cascade(s, victim, 'shed', at, events, ended);
    }
  }
  for (const d of spec.dependsOn) {
    const dep = s.tasks.get(d) as TaskRec;
    // The victim shed just above, and what its shed cancels, still wait in `s`: they end with this command all the same.
    const depStatus = dep === victim ? 'shed' : ended.has(d) && !TERMINAL.has(dep.status) ? 'cancelled' : dep.status;
    if (TERMINAL.has(depStatus) && depStatus !== 'succeeded') {
      events.push({
        type: 'TaskCancelled', v: 1, at, taskId: spec.id, by: 'dependency',
        reason: `dependency ${d} ${depStatus}`, why: { rule: 'dependency-failed', dependency: d, dependencyStatus: depStatus },
      });
      break;
    }
  }
  return events;
}

function cancel(cmd: CommandOf<'CancelTask'>, s: DispatcherState): DispatchEvent[] {
  const t = s.tasks.get(cmd.taskId);
  if (!t || !t.admitted) throw new DomainError('not-found', `unknown task ${cmd.taskId}`);
  if (TERMINAL.has(t.status)) return [];
  const events: DispatchEvent[] = [{
    type: 'TaskCancelled', v: 1, at: cmd.at, taskId: t.id, by: 'request', reason: cmd.reason ?? 'cancelled by request',
    agentId: t.status === 'assigned' ? t.agentId : undefined,
  }];
  cascade(s, t, 'cancelled', cmd.at, events);
  return events;
}

/**
 * Cancel every task that (transitively) waits on `root`, which ended without success. Cascades
 * decided together share `seen`, so a task that waits on two of their roots is cancelled once.
 */
export function cascade(
  s: DispatcherState, root: TaskRec, status: string, at: number, out: DispatchEvent[], seen = new Set<string>(),
): void {
  seen.add(root.id);
  const queue: [TaskRec, string][] = [[root, status]];
  while (queue.length > 0) {
    const [dep, depStatus] = queue.shift() as [TaskRec, string];
    for (const id of dep.dependents ?? []) {
      if (seen.has(id)) continue;
      seen.add(id);
      const t = s.tasks.get(id);
      if (!t || TERMINAL.has(t.status)) continue;
      out.push({
        type: 'TaskCancelled', v: 1, at, taskId: id, by: 'dependency', reason: `dependency ${dep.id} ${depStatus}`,
        agentId: t.status === 'assigned' ? t.agentId : undefined,
        why: { rule: 'dependency-failed', dependency: dep.id, dependencyStatus: depStatus },
      });
      queue.push([t, 'cancelled']);
    }
  }
}

function coalesceMs(s: DispatcherState): number {
  return Math.floor(s.policy.health.agentTimeoutMs / 4);
}

function ready(cmd: CommandOf<'MarkAgentReady'>, s: DispatcherState): DispatchEvent[] {
  const caps = normalizeNames(cmd.capabilities);
  const capacity = cmd.capacity ?? 1;
  const a = s.agents.get(cmd.agentId);
  if (!a || !a.alive || a.capacity !== capacity || a.caps.join('\u0000') !== caps.join('\u0000')) {
    const events: DispatchEvent[] = [{ type: 'AgentRegistered', v: 1, at: cmd.at, agentId: cmd.agentId, capabilities: caps, capacity }];
    // Session followers waiting for this agent that its new capabilities no longer cover fall back now.
    if (a?.alive && a.waiters) {
      const has = new Set(caps);
      const lost = [...a.waiters.values()].filter((t) => !t.spec.requires.every((r) => has.has(r))).sort((x, y) => x.seq - y.seq);
      for (const t of lost) {
        events.push({
          type: 'TaskRequeued', v: 1, at: cmd.at, taskId: t.id, attempt: t.attempt, reason: 'affinity-agent-lost',
          why: { rule: 'affinity-fallback', agentId: a.id, agentState: 'capabilities-changed', requires: t.spec.requires, capabilities: caps },
        });
      }
    }
    return events;
  }
  return cmd.at - a.lastSeenAt >= coalesceMs(s) ? [{ type: 'AgentIdle', v: 1, at: cmd.at, agentId: a.id }] : [];
}

function heartbeat(cmd: CommandOf<'RecordHeartbeat'>, s: DispatcherState): DispatchEvent[] {
  const a = s.agents.get(cmd.agentId);
  if (!a) throw new DomainError('not-found', `unknown agent ${cmd.agentId}: register it with ready first`);
  if (!a.alive) throw new DomainError('agent-not-alive', `agent ${cmd.agentId} timed out or left: send ready to register again`);
  // Heartbeats are coalesced: recording each would grow the log with no new fact.
  return cmd.at - a.lastSeenAt >= coalesceMs(s) ? [{ type: 'AgentHeartbeat', v: 1, at: cmd.at, agentId: a.id }] : [];
}

function complete(cmd: CommandOf<'CompleteTask'>, s: DispatcherState): DispatchEvent[] {
  const t = s.tasks.get(cmd.taskId);
  if (!t || !t.admitted) throw new DomainError('not-found', `unknown task ${cmd.taskId}`);
  if (t.status !== 'assigned' || t.agentId !== cmd.agentId || t.attempt !== cmd.attempt) {
    if (t.doneBy === `${cmd.agentId}#${cmd.attempt}#${cmd.outcome}`) return []; // duplicate completion
    throw new DomainError('stale-attempt',
      `task ${t.id} attempt ${cmd.attempt} by ${cmd.agentId} is not current (task is ${t.status}, attempt ${t.attempt}${t.agentId ? ` on ${t.agentId}` : ''})`);
  }
  const at = cmd.at;
  const durationMs = Math.max(0, at - t.assignedAt);
  const events: DispatchEvent[] = [];
  if (cmd.outcome === 'succeeded') {
    events.push({ type: 'TaskCompleted', v: 1, at, taskId: t.id, agentId: cmd.agentId, attempt: t.attempt, result: cmd.result, durationMs });
    for (const id of t.dependents ?? []) {
      const d = s.tasks.get(id);
      if (d && d.status === 'blocked' && d.pendingDeps === 1) {
        events.push({ type: 'TaskUnblocked', v: 1, at, taskId: id, why: { rule: 'dependencies-met', dependsOn: d.spec.dependsOn, last: t.id } });
      }
    }
    return events;
  }
  const retryable = cmd.retryable ?? false;
  const { maxAttempts, backoffMs } = s.policy.retry;
  const failed: EventOf<'TaskFailed'> = { type: 'TaskFailed', v: 1, at, taskId: t.id, agentId: cmd.agentId, attempt: t.attempt, error: cmd.error, retryable, durationMs };
  if (retryable && t.attempt < maxAttempts) {
    failed.retryAt = at + backoffMs * 2 ** (t.attempt - 1);
    return [failed];
  }
  events.push(failed);
  if (retryable) {
    events.push({ type: 'TaskDeadLettered', v: 1, at, taskId: t.id, attempt: t.attempt, reason: 'max-attempts', why: { rule: 'max-attempts', attempts: t.attempt, maxAttempts, lastError: cmd.error } });
    cascade(s, t, 'dead-lettered', at, events);
  } else {
    cascade(s, t, 'failed', at, events);
  }
  return events;
}

function removeAgent(cmd: CommandOf<'RemoveAgent'>, s: DispatcherState): DispatchEvent[] {
  const a = s.agents.get(cmd.agentId);
  if (!a) throw new DomainError('not-found', `unknown agent ${cmd.agentId}`);
  if (!a.alive) return [];
  const events: DispatchEvent[] = [{ type: 'AgentLeft', v: 1, at: cmd.at, agentId: a.id }];
  releaseAgentWork(s, a.id, cmd.at, 'agent-left', events);
  return events;
}

/** Requeue (or dead-letter) what a lost agent was running, and release the tasks waiting for it. */
export function releaseAgentWork(
  s: DispatcherState, agentId: string, at: number, reason: 'agent-left' | 'agent-timed-out', out: DispatchEvent[],
): void {
  const a = s.agents.get(agentId);
  if (!a) return;
  const { maxAttempts } = s.policy.retry;
  const cancelled = new Set<string>();
  for (const id of a.running) {
    const t = s.tasks.get(id) as TaskRec;
    if (t.attempt >= maxAttempts) {
      out.push({ type: 'TaskDeadLettered', v: 1, at, taskId: id, attempt: t.attempt, reason, why: { rule: 'max-attempts', attempts: t.attempt, maxAttempts, agentId } });
      cascade(s, t, 'dead-lettered', at, out, cancelled);
    } else {
      out.push({ type: 'TaskRequeued', v: 1, at, taskId: id, attempt: t.attempt + 1, reason, why: { rule: reason, agentId, previousAttempt: t.attempt } });
    }
  }
  if (a.waiters) {
    const waiting = [...a.waiters.values()].sort((x, y) => x.seq - y.seq);
    for (const t of waiting) {
      out.push({ type: 'TaskRequeued', v: 1, at, taskId: t.id, attempt: t.attempt, reason: 'affinity-agent-lost', why: { rule: 'affinity-fallback', agentId, agentState: reason } });
    }
  }
}
