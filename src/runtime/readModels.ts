import { taskIdOf, type DispatchEvent } from '../domain/events.js';
import { priorityAt } from '../domain/priority.js';
import { dashboard, dashboardProjection, type Dashboard, type DashboardView } from '../projections/dashboardProjection.js';
import { taskView } from '../projections/taskHistory.js';
import type { DispatcherRuntime } from './dispatcherRuntime.js';
import type { EventLog } from './eventLog.js';
import type { Projection } from './projection.js';

/** Task histories kept in memory for logs that cannot look a task up (Kafka): the most recent tasks only. */
export const RECENT_HISTORIES = 100_000;

type Histories = Map<string, DispatchEvent[]>;

/**
 * Recent task histories, for logs without `readTask`. Bounded (oldest tasks dropped first) and not
 * checkpointed: after a restart a task's history starts at the restart, and its status still
 * comes from the dispatcher's state.
 */
const recentHistories: Projection<Histories> = {
  name: 'recent-histories',
  initial: () => new Map(),
  apply(v, e) {
    const ids = e.type === 'AgentTimedOut' ? e.tasks : [taskIdOf(e)];
    for (const id of ids) {
      if (id === undefined) continue;
      let h = v.get(id);
      if (!h) {
        v.set(id, (h = []));
        if (v.size > RECENT_HISTORIES) v.delete(v.keys().next().value as string);
      }
      h.push(e);
    }
  },
  save: () => null,
  load: () => new Map(),
};

/** The projections the runtime keeps up to date after each commit. */
export function readModels(log: EventLog): Projection<unknown>[] {
  const models = [dashboardProjection as unknown as Projection<unknown>];
  if (!log.readTask) models.push(recentHistories as unknown as Projection<unknown>);
  return models;
}

export function dashboardOf(rt: DispatcherRuntime): Dashboard {
  return dashboard(rt.view<DashboardView>('dashboard'), rt.state, rt.state.lastAt);
}

/** `GET /v1/tasks/:id`: the dispatcher's status of the task, with its history from the log. */
export async function taskDetails(rt: DispatcherRuntime, log: EventLog, id: string) {
  const rec = rt.state.tasks.get(id);
  if (!rec) {
    // Finished long ago and forgotten by the dispatcher (retention): the log still knows it.
    if (!log.readTask) return undefined;
    return taskView(id, (await log.readTask(rt.stream, id)).map((se) => se.event));
  }
  let events = log.readTask
    ? (await log.readTask(rt.stream, id)).map((se) => se.event)
    : [...(rt.view<Histories>('recent-histories').get(id) ?? [])];
  if (!events.some((e) => (e.type === 'TaskSubmitted' || e.type === 'TaskRejected' || e.type === 'TaskShed') && taskIdOf(e) === id)) {
    // The history before this process started is not in memory: the submission is known from the state.
    events = [{ type: 'TaskSubmitted', v: 1, at: rec.submittedAt, task: rec.spec, priority: priorityAt(rec.base), prioritySource: rec.spec.priority ? 'task' : 'default' }, ...events];
  }
  return taskView(id, events, rt.state);
}
