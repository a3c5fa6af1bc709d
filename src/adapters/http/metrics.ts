import { PRIORITIES } from '../../domain/priority.js';
import { queueDepth, unroutable } from '../../domain/state.js';
import { bucketRange, type LogHistogram } from '../../projections/logHistogram.js';
import type { DashboardView } from '../../projections/dashboardProjection.js';
import type { DispatcherRuntime } from '../../runtime/dispatcherRuntime.js';

/** Upper bounds (seconds) of the wait-time histogram's Prometheus buckets. */
const LE = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

/**
 * Cumulative counts at each bound. A log-scale bucket is counted under a bound when its upper edge
 * is within it, so a bound may undercount samples in the one bucket it splits (≤ 1.6 % of the value).
 */
function cumulative(h: LogHistogram): number[] {
  const out = new Array<number>(LE.length).fill(0);
  for (let i = 0; i < h.buckets.length; i++) {
    const n = h.buckets[i];
    if (!n) continue;
    const { lo, width } = bucketRange(i);
    const upperS = (lo + width - 1) / 1000;
    for (let j = 0; j < LE.length; j++) if (upperS <= LE[j]) out[j] += n;
  }
  return out;
}

/** Prometheus text exposition (format 0.0.4) of the dispatcher's state and counters. */
export function renderMetrics(rt: DispatcherRuntime): string {
  const s = rt.state;
  const v = rt.view<DashboardView>('dashboard');
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  const depth = queueDepth(s);
  metric('switchyard_queue_depth', 'gauge', 'Tasks waiting to be assigned, by priority.', PRIORITIES.map((p) => [`{priority="${p}"}`, depth[p]]));
  metric('switchyard_tasks_blocked', 'gauge', 'Tasks waiting on dependencies.', [['', s.blocked]]);
  metric('switchyard_tasks_unroutable', 'gauge', 'Ready tasks no alive agent is capable of.', [['', unroutable(s)]]);
  let busy = 0; let idle = 0; let dead = 0;
  for (const a of s.agents.values()) { if (!a.alive) dead++; else if (a.running.size > 0) busy++; else idle++; }
  metric('switchyard_agents', 'gauge', 'Agents by state.', [['{state="busy"}', busy], ['{state="idle"}', idle], ['{state="dead"}', dead]]);
  const c = v.counts;
  metric('switchyard_assignments_total', 'counter', 'Tasks assigned to agents.', [['', c.assigned]]);
  metric('switchyard_tasks_submitted_total', 'counter', 'Tasks accepted.', [['', c.submitted]]);
  metric('switchyard_tasks_completed_total', 'counter', 'Tasks completed successfully.', [['', c.completed]]);
  metric('switchyard_task_failures_total', 'counter', 'Failed attempts.', [['', c.failed]]);
  metric('switchyard_tasks_shed_total', 'counter', 'Tasks shed under overload.', [['', c.shed]]);
  metric('switchyard_tasks_rejected_total', 'counter', 'Submissions rejected at admission.', [['', c.rejected]]);
  metric('switchyard_tasks_deferred_total', 'counter', 'Deferrals for fairness or quota.', [['', c.deferrals]]);
  metric('switchyard_tasks_dead_lettered_total', 'counter', 'Tasks dead-lettered.', [['', c.deadLettered]]);
  metric('switchyard_agent_timeouts_total', 'counter', 'Agents timed out.', [['', c.agentTimeouts]]);
  lines.push('# HELP switchyard_wait_seconds Time from entering the queue to assignment, by priority at assignment.', '# TYPE switchyard_wait_seconds histogram');
  for (const p of PRIORITIES) {
    const w = v.wait[p];
    const cum = cumulative(w.hist);
    LE.forEach((le, j) => lines.push(`switchyard_wait_seconds_bucket{priority="${p}",le="${le}"} ${cum[j]}`));
    lines.push(`switchyard_wait_seconds_bucket{priority="${p}",le="+Inf"} ${w.hist.count}`);
    lines.push(`switchyard_wait_seconds_sum{priority="${p}"} ${w.avg.sumMs / 1000}`);
    lines.push(`switchyard_wait_seconds_count{priority="${p}"} ${w.avg.count}`);
  }
  metric('switchyard_log_version', 'gauge', 'Events in the dispatcher stream.', [['', rt.version]]);
  return `${lines.join('\n')}\n`;
}
