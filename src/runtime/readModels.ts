import { dashboard, dashboardProjection, type Dashboard, type DashboardView } from '../projections/dashboardProjection.js';
import { taskView } from '../projections/taskHistory.js';
import type { DispatcherRuntime } from './dispatcherRuntime.js';
import type { EventLog } from './eventLog.js';
import type { Projection } from './projection.js';

/** The projections the runtime keeps up to date after each commit. */
export function readModels(): Projection<unknown>[] {
  return [dashboardProjection as unknown as Projection<unknown>];
}

export function dashboardOf(rt: DispatcherRuntime): Dashboard {
  return dashboard(rt.view<DashboardView>('dashboard'), rt.state, rt.state.lastAt);
}

/** `GET /v1/tasks/:id`: the dispatcher's status of the task, with its history from the log. */
export async function taskDetails(rt: DispatcherRuntime, log: EventLog, id: string) {
  const rec = rt.state.tasks.get(id);
  if (!rec) return undefined;
  const events = log.readTask ? (await log.readTask(rt.stream, id)).map((se) => se.event) : [];
  return taskView(id, events, rt.state);
}
