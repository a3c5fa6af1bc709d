import {
  PRIORITIES, isInputFact, queueDepth,
  type DispatchEvent, type DispatcherState, type Policy, type TaskStatus,
} from '../../../src/domain/index.js';

/**
 * An independent reading of the event log: what every task and agent must be, folded from events
 * alone with the simplest possible bookkeeping. The property tests compare the dispatcher's indexed
 * state against it, and check each decision against the contract as it is applied.
 */
export interface ModelTask {
  id: string;
  tenant: string;
  requires: string[];
  dependsOn: string[];
  status: TaskStatus;
  /** Where a waiting task sits; null when it is not waiting. */
  place: 'ready' | 'hold' | 'retry' | 'blocked' | null;
  holdAgent?: string;
  /** Current dispatch rank, 0 = critical. */
  level: number;
  attempt: number;
  agentId?: string;
  admitted: boolean;
  /** A fairness or quota TaskDeferred was recorded since the task was last assigned. */
  deferred: boolean;
}

export interface ModelAgent {
  id: string;
  alive: boolean;
  caps: Set<string>;
  capacity: number;
  running: Set<string>;
}

export class Model {
  readonly tasks = new Map<string, ModelTask>();
  readonly agents = new Map<string, ModelAgent>();
  /** Every assignment ever recorded: the source of duplicate and stale completions. */
  readonly assignmentsEver: { taskId: string; agentId: string; attempt: number }[] = [];

  constructor(public policy: Policy) {}

  /** Current assignments, in a stable order. */
  running(): { taskId: string; agentId: string; attempt: number }[] {
    return [...this.tasks.values()]
      .filter((t) => t.status === 'assigned')
      .sort((a, b) => (a.id < b.id ? -1 : 1))
      .map((t) => ({ taskId: t.id, agentId: t.agentId as string, attempt: t.attempt }));
  }

  tenantRunning(tenant: string): number {
    let n = 0;
    for (const t of this.tasks.values()) if (t.tenant === tenant && t.status === 'assigned') n++;
    return n;
  }

  atQuota(tenant: string): boolean {
    const q = this.policy.quotas[tenant]?.maxConcurrent;
    return q !== undefined && this.tenantRunning(tenant) >= q;
  }

  tenantDeferred(tenant: string): boolean {
    for (const t of this.tasks.values()) if (t.tenant === tenant && t.deferred && t.status === 'queued') return true;
    return false;
  }

  /** Apply one event, checking it against the contract first. Throws on a violation. */
  apply(e: DispatchEvent): void {
    if (!isInputFact(e)) {
      const why = (e as { why?: { rule?: unknown } }).why;
      check(typeof why?.rule === 'string' && why.rule.length > 0, `${e.type} without why.rule`, e);
    }
    switch (e.type) {
      case 'TaskSubmitted': {
        const prev = this.tasks.get(e.task.id);
        check(!prev?.admitted, `task ${e.task.id} submitted twice`, e);
        const blocked = e.task.dependsOn.some((d) => this.tasks.get(d)?.status !== 'succeeded');
        this.tasks.set(e.task.id, {
          id: e.task.id, tenant: e.task.tenant, requires: e.task.requires, dependsOn: e.task.dependsOn,
          status: blocked ? 'blocked' : 'queued', place: blocked ? 'blocked' : 'ready', level: PRIORITIES.indexOf(e.priority),
          attempt: 1, admitted: true, deferred: false,
        });
        return;
      }
      case 'TaskRejected':
      case 'TaskShed': {
        if (e.type === 'TaskRejected' || e.task) {
          const spec = e.type === 'TaskRejected' ? e.task : e.task!;
          if (this.tasks.get(spec.id)?.admitted) return; // a stale rejection never replaces an accepted task
          this.tasks.set(spec.id, {
            id: spec.id, tenant: spec.tenant, requires: spec.requires, dependsOn: spec.dependsOn,
            status: e.type === 'TaskRejected' ? 'rejected' : 'shed', place: null, level: 2, attempt: 1, admitted: false, deferred: false,
          });
          return;
        }
        const t = this.task(e.taskId, e);
        check(t.status === 'queued' && t.place === 'ready' && t.level === 3, `shed ${t.id} that is not a ready low task`, e);
        this.end(t, 'shed');
        return;
      }
      case 'AgentRegistered': {
        const a = this.agents.get(e.agentId);
        if (a) check(a.alive || a.running.size === 0, `dead agent ${a.id} re-registered with tasks`, e);
        this.agents.set(e.agentId, { id: e.agentId, alive: true, caps: new Set(e.capabilities), capacity: e.capacity, running: a?.running ?? new Set() });
        return;
      }
      case 'AgentIdle':
      case 'AgentHeartbeat':
        check(this.agents.get(e.agentId)?.alive === true, `sign of life recorded for a dead or unknown agent ${e.agentId}`, e);
        return;
      case 'TaskCompleted':
      case 'TaskFailed': {
        const t = this.task(e.taskId, e);
        check(t.status === 'assigned' && t.agentId === e.agentId && t.attempt === e.attempt, `completion of ${t.id} that is not the current attempt`, e);
        if (e.type === 'TaskFailed' && e.retryAt !== undefined) {
          this.release(t);
          t.status = 'queued';
          t.place = 'retry';
        } else {
          this.end(t, e.type === 'TaskCompleted' ? 'succeeded' : 'failed');
        }
        return;
      }
      case 'TaskCancelled': {
        const t = this.task(e.taskId, e);
        check(!isTerminal(t.status), `cancelled ${t.id} which had already ended`, e);
        this.end(t, 'cancelled');
        return;
      }
      case 'AgentLeft':
      case 'AgentTimedOut': {
        const a = this.agents.get(e.agentId);
        check(a?.alive === true, `${e.type} for an agent not alive`, e);
        (a as ModelAgent).alive = false;
        return;
      }
      case 'PolicyChanged':
        this.policy = e.policy;
        return;
      case 'DispatcherResumed':
        check([...this.agents.values()].some((a) => a.alive), 'resumed with no live agent to credit', e);
        return;
      case 'TaskAssigned': {
        const t = this.task(e.taskId, e);
        const a = this.agents.get(e.agentId);
        check(t.status === 'queued' && (t.place === 'ready' || t.place === 'hold'), `assigned ${t.id} which is ${t.status}/${t.place}`, e);
        check(a?.alive === true, `assigned ${t.id} to an agent not alive`, e);
        const agent = a as ModelAgent;
        check(agent.running.size < agent.capacity, `assigned ${t.id} to ${agent.id}, which is full (${agent.running.size}/${agent.capacity})`, e);
        check(t.requires.every((r) => agent.caps.has(r)), `assigned ${t.id} requiring [${t.requires}] to ${agent.id} with [${[...agent.caps]}]`, e);
        check(e.attempt === t.attempt, `assigned ${t.id} with attempt ${e.attempt}, expected ${t.attempt}`, e);
        check(e.tenant === t.tenant && e.priority === PRIORITIES[t.level], `assigned ${t.id} with wrong tenant or priority`, e);
        // Held tasks are bound by the quota too; strict priority does not apply to them (their hold is recorded).
        const quota = this.policy.quotas[t.tenant]?.maxConcurrent;
        check(quota === undefined || this.tenantRunning(t.tenant) < quota, `assigned ${t.id} beyond tenant ${t.tenant}'s maxConcurrent ${quota}`, e);
        if (t.place === 'ready') this.checkStrictPriority(t, agent, e);
        t.status = 'assigned';
        t.place = null;
        t.holdAgent = undefined;
        t.agentId = agent.id;
        t.deferred = false;
        agent.running.add(t.id);
        this.assignmentsEver.push({ taskId: t.id, agentId: agent.id, attempt: t.attempt });
        return;
      }
      case 'TaskDeferred': {
        const t = this.task(e.taskId, e);
        check(t.status === 'queued' && t.place === 'ready', `deferred ${t.id} which is ${t.status}/${t.place}`, e);
        if (e.why.rule === 'affinity-wait') {
          const owner = this.agents.get(e.agentId as string);
          check(owner?.alive === true && owner.running.size >= owner.capacity, `affinity wait for ${e.agentId}, which is not busy and alive`, e);
          t.place = 'hold';
          t.holdAgent = e.agentId;
        } else {
          check(e.why.rule === 'fairness' || e.why.rule === 'quota', `unknown deferral rule ${e.why.rule}`, e);
          check(t.level !== 0 || e.why.rule !== 'fairness', `deferred critical ${t.id} for fairness`, e);
          t.deferred = true;
        }
        return;
      }
      case 'TaskEscalated': {
        const t = this.task(e.taskId, e);
        check(t.status === 'queued' && t.place === 'ready', `escalated ${t.id} which is not ready`, e);
        check(e.from === PRIORITIES[t.level] && PRIORITIES.indexOf(e.to) < t.level, `escalation of ${t.id} does not raise it`, e);
        check(e.why.rule !== 'aging' || (e.to !== 'critical' && PRIORITIES.indexOf(e.to) === t.level - 1), `aging of ${t.id} skipped a level or reached critical`, e);
        t.level = PRIORITIES.indexOf(e.to);
        return;
      }
      case 'TaskRequeued': {
        const t = this.task(e.taskId, e);
        if (e.reason === 'agent-left' || e.reason === 'agent-timed-out') {
          check(t.status === 'assigned' && this.agents.get(t.agentId as string)?.alive === false, `requeued ${t.id} from an agent still alive`, e);
          check(e.attempt === t.attempt + 1, 'requeue after agent loss must start the next attempt', e);
          this.release(t);
        } else if (e.reason === 'retry') {
          check(t.place === 'retry' && e.attempt === t.attempt + 1, `retry of ${t.id} not in backoff or wrong attempt`, e);
        } else {
          check(t.place === 'hold' && e.attempt === t.attempt, `affinity requeue of ${t.id} not held or wrong attempt`, e);
        }
        t.status = 'queued';
        t.place = 'ready';
        t.holdAgent = undefined;
        t.attempt = e.attempt;
        return;
      }
      case 'TaskDeadLettered': {
        const t = this.task(e.taskId, e);
        check(t.status === 'assigned' || t.status === 'failed', `dead-lettered ${t.id} which is ${t.status}`, e);
        this.end(t, 'dead-lettered');
        return;
      }
      case 'TaskUnblocked': {
        const t = this.task(e.taskId, e);
        check(t.status === 'blocked', `unblocked ${t.id} which is ${t.status}`, e);
        check(t.dependsOn.every((d) => this.tasks.get(d)?.status === 'succeeded'), `unblocked ${t.id} before every dependency succeeded`, e);
        t.status = 'queued';
        t.place = 'ready';
        return;
      }
      default: {
        const never: never = e;
        throw new Error(`unknown event ${JSON.stringify(never)}`);
      }
    }
  }

  /**
   * Strict priority under backlog: no task goes to an agent while a more urgent ready task that agent
   * could serve waits — unless that task's tenant is at its quota or was deferred (recorded).
   */
  private checkStrictPriority(t: ModelTask, agent: ModelAgent, e: DispatchEvent): void {
    for (const x of this.tasks.values()) {
      if (x.status !== 'queued' || x.place !== 'ready' || x.level >= t.level) continue;
      if (!x.requires.every((r) => agent.caps.has(r))) continue;
      if (this.atQuota(x.tenant) || this.tenantDeferred(x.tenant)) continue;
      check(false, `assigned ${t.id} (${PRIORITIES[t.level]}) to ${agent.id} while ${x.id} (${PRIORITIES[x.level]}, tenant ${x.tenant}) waits for it`, e);
    }
  }

  /** After a command: what must hold of the whole state once the dispatcher is quiescent. */
  checkQuiescent(s: DispatcherState): void {
    const places = { ready: 0, hold: 0, retry: 0, blocked: 0 };
    const tenantWaiting = new Map<string, number>();
    const tenantRunning = new Map<string, number>();
    const onAgent = new Map<string, string>();
    for (const a of this.agents.values()) {
      if (!a.alive) check(a.running.size === 0, `dead agent ${a.id} still holds tasks [${[...a.running]}]`);
      for (const id of a.running) {
        check(!onAgent.has(id), `task ${id} runs on ${onAgent.get(id)} and ${a.id}`);
        onAgent.set(id, a.id);
      }
    }
    for (const t of this.tasks.values()) {
      const rec = s.tasks.get(t.id);
      check(rec !== undefined, `task ${t.id} lost from the state`);
      check(rec!.status === t.status, `task ${t.id} is ${rec!.status} in the state, ${t.status} by the log`);
      if (!t.admitted) continue;
      if (t.place !== null) {
        places[t.place]++;
        tenantWaiting.set(t.tenant, (tenantWaiting.get(t.tenant) ?? 0) + 1);
        check(rec!.wait === t.place, `task ${t.id} waits in ${rec!.wait} in the state, ${t.place} by the log`);
        check(rec!.level === t.level, `task ${t.id} at level ${rec!.level} in the state, ${t.level} by the log`);
      }
      if (t.status === 'assigned') {
        tenantRunning.set(t.tenant, (tenantRunning.get(t.tenant) ?? 0) + 1);
        check(onAgent.get(t.id) === t.agentId, `assigned task ${t.id} not on its agent`);
      }
      if (t.status === 'blocked') {
        const deps = t.dependsOn.map((d) => this.tasks.get(d)?.status);
        check(deps.some((d) => d !== 'succeeded'), `task ${t.id} stays blocked though every dependency succeeded`);
        check(deps.every((d) => d === 'succeeded' || !isTerminal(d as TaskStatus)), `task ${t.id} stays blocked on a dependency that ended without success [${deps}]`);
      }
      if (t.place === 'hold') {
        const owner = this.agents.get(t.holdAgent as string);
        check(owner?.alive === true, `task ${t.id} waits for ${t.holdAgent}, which is gone`);
        if (owner!.running.size < owner!.capacity) {
          check(this.atQuota(t.tenant), `task ${t.id} waits for ${owner!.id}, which has a free slot`);
        }
      }
    }
    check(s.waiting === places.ready + places.hold + places.retry + places.blocked, `state counts ${s.waiting} waiting, log ${JSON.stringify(places)}`);
    check(s.readyAt.reduce((x, y) => x + y, 0) === places.ready, 'ready count differs');
    check(s.blocked === places.blocked, 'blocked count differs');
    check(s.retries.size === places.retry, 'retry count differs');
    const depth = queueDepth(s);
    check(depth.critical + depth.high + depth.normal + depth.low === places.ready + places.hold + places.retry, 'queueDepth differs');
    for (const tenant of s.tenants.values()) {
      check(tenant.waiting === (tenantWaiting.get(tenant.name) ?? 0), `tenant ${tenant.name} waiting count differs`);
      check(tenant.running === (tenantRunning.get(tenant.name) ?? 0), `tenant ${tenant.name} running count differs`);
    }
    for (const a of this.agents.values()) {
      const rec = s.agents.get(a.id);
      check(rec?.alive === a.alive && rec.running.size === a.running.size, `agent ${a.id} differs from the log`);
    }
    // Work conservation: a free agent never sits idle next to ready work it can serve.
    for (const a of this.agents.values()) {
      if (!a.alive || a.running.size >= a.capacity) continue;
      for (const t of this.tasks.values()) {
        if (t.status !== 'queued' || t.place !== 'ready' || !t.requires.every((r) => a.caps.has(r))) continue;
        check(this.atQuota(t.tenant), `agent ${a.id} is idle while ${t.id} waits for any agent with [${t.requires}]`);
      }
    }
  }

  private task(id: string, e: DispatchEvent): ModelTask {
    const t = this.tasks.get(id);
    check(t !== undefined && t.admitted, `${e.type} for unknown task ${id}`, e);
    return t as ModelTask;
  }

  private release(t: ModelTask): void {
    if (t.status === 'assigned') this.agents.get(t.agentId as string)?.running.delete(t.id);
    t.agentId = undefined;
  }

  private end(t: ModelTask, status: TaskStatus): void {
    this.release(t);
    t.status = status;
    t.place = null;
    t.holdAgent = undefined;
  }
}

const TERMINAL_STATUSES = new Set<TaskStatus>(['succeeded', 'failed', 'cancelled', 'shed', 'rejected', 'dead-lettered']);

function isTerminal(s: TaskStatus): boolean {
  return TERMINAL_STATUSES.has(s);
}

export class InvariantViolation extends Error {
  override readonly name = 'InvariantViolation';
}

function check(ok: boolean, message: string, e?: DispatchEvent): void {
  if (!ok) throw new InvariantViolation(e ? `${message}\n  at event ${JSON.stringify(e)}` : message);
}
