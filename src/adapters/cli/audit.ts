import { evolve } from '../../domain/evolve.js';
import { initialState } from '../../domain/state.js';
import type { DispatchEvent } from '../../domain/events.js';
import { dashboard, dashboardProjection } from '../../projections/dashboardProjection.js';
import { explainText, taskView } from '../../projections/taskHistory.js';
import type { EventLog } from '../../runtime/eventLog.js';
import { describeDivergence, verifyStream } from './verify.js';

const print = (s: string) => process.stdout.write(`${s}\n`);

/** `switchyard replay`: fold the log (up to `until`) into the dashboard and print it. */
export async function replayLog(log: EventLog, stream: string, o: { until?: { version?: number; at?: number }; json: boolean }): Promise<number> {
  const t0 = performance.now();
  const s = initialState();
  const v = dashboardProjection.initial();
  let n = 0;
  for await (const se of log.read(stream, 0)) {
    if (o.until?.version !== undefined && se.version > o.until.version) break;
    if (o.until?.at !== undefined && se.event.at > o.until.at) break;
    evolve(s, se.event);
    dashboardProjection.apply(v, se.event);
    n++;
  }
  const d = dashboard(v, s, s.lastAt);
  if (o.json) { print(JSON.stringify(d, null, 2)); return 0; }
  const ms = performance.now() - t0;
  print(`replayed ${n} events of ${stream} in ${ms.toFixed(0)} ms${n > 0 ? ` (up to ${new Date(s.lastAt).toISOString()})` : ''}`);
  const q = d.queue_depth; const u = d.agent_utilization; const w = d.avg_wait_time_seconds;
  print(`queue depth       critical ${q.critical}  high ${q.high}  normal ${q.normal}  low ${q.low}`);
  print(`agents            busy ${u.busy}  idle ${u.idle}  total ${u.total}`);
  print(`avg wait (s)      critical ${w.critical}  high ${w.high}  normal ${w.normal}  low ${w.low}`);
  print(`avg duration (s)  ${d.avg_task_duration_seconds}`);
  print(`SLA compliance    ${d.sla_compliance_pct}%`);
  print(`fairness          ${Object.entries(d.fairness_distribution).map(([k, x]) => `${k} ${x}`).join('  ') || '-'}`);
  print(`counts            ${Object.entries(d.counts).map(([k, x]) => `${k} ${x}`).join('  ')}`);
  return 0;
}

/** `switchyard explain <taskId>`: the task's history and the recorded reasons of each decision. */
export async function explainTask(log: EventLog, stream: string, taskId: string, json: boolean): Promise<number> {
  const events: DispatchEvent[] = [];
  if (log.readTask) for (const se of await log.readTask(stream, taskId)) events.push(se.event);
  else for await (const se of log.read(stream, 0)) events.push(se.event);
  if (json) {
    const view = taskView(taskId, events);
    if (!view) { process.stderr.write(`switchyard explain: no task ${taskId} in ${stream}\n`); return 1; }
    print(JSON.stringify(view, null, 2));
    return 0;
  }
  const text = explainText(taskId, events);
  if (!text) { process.stderr.write(`switchyard explain: no task ${taskId} in ${stream}\n`); return 1; }
  print(text);
  return 0;
}

/** `switchyard verify`: re-decide every recorded input; 0 when identical, 1 on the first difference. */
export async function verifyLog(log: EventLog, stream: string): Promise<number> {
  const t0 = performance.now();
  const r = await verifyStream(log, stream);
  const ms = (performance.now() - t0).toFixed(0);
  if (r.divergence) {
    print(`verify: DIFFERENT after ${r.commands} commands (${r.events} events checked, ${ms} ms)`);
    print(describeDivergence(r.divergence));
    return 1;
  }
  print(`verify: identical — re-decided ${r.commands} commands and compared ${r.events} events of ${stream} in ${ms} ms`);
  return 0;
}
