import { randomUUID } from 'node:crypto';
import type { DispatchEvent, TaskSpec } from '../domain/events.js';
import type { AgentReady, Completion, TaskSubmission } from '../domain/inputs.js';
import { freeSlots, type DispatcherState, type TaskRec } from '../domain/state.js';
import type { CommandSource, DispatcherRuntime } from './dispatcherRuntime.js';
import { DispatchError } from './errors.js';
import type { Delivery } from './delivery.js';

export interface TaskStatusReply {
  id: string;
  status: string;
}

/** Turn a validated submission into the task the log records: id given or new, deadline as epoch ms. */
export function toTaskSpec(sub: TaskSubmission, defaultId?: string): TaskSpec {
  return {
    id: sub.id ?? defaultId ?? randomUUID(),
    tenant: sub.tenant,
    source: sub.source,
    type: sub.type,
    priority: sub.priority,
    requires: sub.requires ?? [],
    sessionRef: sub.sessionRef,
    affinity: sub.affinity ?? 'soft',
    deadline: sub.deadline === undefined ? undefined : Date.parse(sub.deadline),
    estimatedDurationMs: sub.estimatedDurationMs,
    dependsOn: sub.dependsOn ?? [],
    payload: sub.payload,
  };
}

function refusal(events: DispatchEvent[], task: TaskSpec, s: DispatcherState): DispatchError | undefined {
  const id = task.id;
  for (const e of events) {
    if (e.type === 'TaskRejected' && e.task.id === id) {
      if (e.reason === 'unknown-dependency') {
        // The domain counts in the de-duplicated list; name the entry as the client sent it.
        const i = Math.max(0, task.dependsOn.findIndex((d) => !s.tasks.get(d)?.admitted));
        return new DispatchError('validation', `dependsOn.${i}: unknown task id "${task.dependsOn[i]}"`, ['dependsOn', i]);
      }
      return new DispatchError('quota', e.message);
    }
    if (e.type === 'TaskShed' && e.taskId === id && e.task) {
      return new DispatchError('shed', `shed under overload: ${e.why.waiting} tasks waiting, ${e.priority} work is admitted below ${e.why.threshold}`);
    }
  }
  return undefined;
}

/**
 * The operations producers, agents and operators have, on top of the single writer. HTTP and
 * Kafka ingress both call these, so both validate, refuse and answer alike.
 */
export function createDispatchService(rt: DispatcherRuntime) {
  return {
    runtime: rt,

    /** Submit a task; resolves once it is durable. Refusals reject with a DispatchError (quota, shed, validation). */
    async submit(sub: TaskSubmission, source?: CommandSource & { defaultId?: string }): Promise<TaskStatusReply> {
      const task = toTaskSpec(sub, source?.defaultId);
      return rt.execute({ type: 'SubmitTask', task }, (s, events) => {
        const err = refusal(events, task, s);
        if (err) throw err;
        return { id: task.id, status: s.tasks.get(task.id)?.status ?? 'queued' };
      }, source);
    },

    cancel(taskId: string, reason?: string): Promise<TaskStatusReply> {
      return rt.execute({ type: 'CancelTask', taskId, reason }, (s) => ({ id: taskId, status: s.tasks.get(taskId)?.status ?? 'cancelled' }));
    },

    ready(agentId: string, body: AgentReady, source?: CommandSource) {
      return rt.execute({ type: 'MarkAgentReady', agentId, capabilities: body.capabilities, capacity: body.capacity }, (s) => agentView(s, agentId), source);
    },

    heartbeat(agentId: string, source?: CommandSource) {
      return rt.execute({ type: 'RecordHeartbeat', agentId }, (s) => agentView(s, agentId), source);
    },

    leave(agentId: string, source?: CommandSource) {
      return rt.execute({ type: 'RemoveAgent', agentId }, (s) => agentView(s, agentId), source);
    },

    complete(taskId: string, c: Completion, source?: CommandSource): Promise<TaskStatusReply & { attempt: number }> {
      return rt.execute({ type: 'CompleteTask', taskId, ...c }, (s) => {
        const t = s.tasks.get(taskId) as TaskRec;
        return { id: taskId, status: t.status, attempt: t.attempt };
      }, source);
    },

    /** Long-poll: resolves with deliveries as soon as there are any, or [] after waitMs. Counts as a sign of life. */
    async poll(agentId: string, waitMs: number, signal?: AbortSignal): Promise<Delivery[]> {
      const a = rt.state.agents.get(agentId);
      if (!a) throw new DispatchError('not-found', `unknown agent ${agentId}: register it with ready first`);
      // A poll is a sign of life. The domain records one only every agentTimeoutMs/4, so while the
      // last one is fresher than that, the poll need not queue behind the writer to say so.
      if (!a.alive || rt.now() - a.lastSeenAt >= rt.state.policy.health.agentTimeoutMs / 4) {
        await rt.execute({ type: 'RecordHeartbeat', agentId }, () => undefined).catch(() => undefined);
      }
      return rt.poll(agentId, waitMs, signal);
    },

    /** Deliveries a poll took but could not hand over (the agent hung up) wait for its next poll. */
    giveBack(agentId: string, deliveries: Delivery[]): void {
      rt.giveBack(agentId, deliveries);
    },

    agents() {
      const s = rt.state;
      return [...s.agents.keys()].sort().map((id) => agentView(s, id));
    },
  };
}
export type DispatchService = ReturnType<typeof createDispatchService>;

export function agentView(s: DispatcherState, id: string) {
  const a = s.agents.get(id);
  if (!a) throw new DispatchError('not-found', `unknown agent ${id}`);
  return {
    id: a.id,
    state: !a.alive ? 'dead' : a.running.size > 0 ? 'busy' : 'idle',
    capabilities: a.caps,
    capacity: a.capacity,
    running: [...a.running],
    freeSlots: freeSlots(a),
    lastSeenAt: new Date(a.lastSeenAt).toISOString(),
    speed: Math.round(a.speed * 1000) / 1000,
    completed: a.completed,
    failed: a.failed,
  };
}
