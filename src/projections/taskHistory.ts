import { taskIdOf, type DispatchEvent, type TaskSpec, type Why } from '../domain/events.js';
import { priorityAt, type Priority } from '../domain/priority.js';
import type { DispatcherState, TaskStatus } from '../domain/state.js';

/**
 * One task's story, for `GET /v1/tasks/:id` and `switchyard explain`: a fold over the events about
 * it. Decisions are explained by the `why` they were recorded with; nothing is recomputed, so the
 * explanation stays true even after the rules change.
 */

export interface TaskHistoryEntry {
  /** ISO-8601. */
  at: string;
  type: DispatchEvent['type'];
  summary: string;
  /** The recorded reasons of a decision. */
  why?: Why;
}

export interface TaskView {
  id: string;
  status: TaskStatus;
  /** The attempt running now, or the one the next assignment will carry. */
  attempt: number;
  /** The agent it is running on, or the last one it ran on; null if never assigned. */
  agent: string | null;
  tenant: string;
  /** Priority now (after aging or escalation). */
  priority: Priority;
  /** ISO-8601: when the current submission was recorded. */
  submittedAt: string;
  history: TaskHistoryEntry[];
}

/** Events as decided, or as read back from a log (a `StoredEvent` wraps its event with positions). */
type EventsIn = readonly DispatchEvent[] | readonly { version: number; event: DispatchEvent }[];

function eventsOf(events: EventsIn): DispatchEvent[] {
  return events.map((e) => ('event' in e && 'version' in e ? e.event : e));
}

/** The event is about the task (AgentTimedOut is, for the tasks it was running). */
function concerns(e: DispatchEvent, taskId: string): boolean {
  if (e.type === 'AgentTimedOut') return e.tasks.includes(taskId);
  return taskIdOf(e) === taskId;
}

const iso = (at: number): string => new Date(at).toISOString();
const secs = (ms: number): string => `${Math.round(ms) / 1000} s`;

interface Folded {
  spec: TaskSpec;
  view: TaskView;
}

/**
 * Fold the events into the task's view. `events` may be the whole log or only the task's events
 * (an adapter's `readTask`); others are ignored. Without `state`, the status of a task submitted
 * with dependencies is `blocked` until a TaskUnblocked unless the events passed include the
 * completions of all its dependencies. With `state` (after the same events), its status, attempt,
 * agent and priority are the dispatcher's own.
 */
export function taskView(taskId: string, events: EventsIn, state?: DispatcherState): TaskView | undefined {
  return build(taskId, eventsOf(events), state)?.view;
}

function build(taskId: string, all: DispatchEvent[], state: DispatcherState | undefined): Folded | undefined {
  const f = fold(taskId, all);
  const rec = state?.tasks.get(taskId);
  if (f && rec) {
    f.view.status = rec.status;
    f.view.attempt = rec.attempt;
    f.view.agent = rec.agentId ?? f.view.agent;
    f.view.priority = priorityAt(rec.level);
  }
  return f;
}

function fold(taskId: string, all: DispatchEvent[]): Folded | undefined {
  let f: Folded | undefined;
  const succeeded = new Set<string>();
  for (const e of all) {
    if (e.type === 'TaskCompleted') succeeded.add(e.taskId);
    if (!concerns(e, taskId)) continue;
    if (e.type === 'TaskSubmitted' || e.type === 'TaskRejected' || (e.type === 'TaskShed' && e.task)) {
      // A (re)submission starts the view; a rejected or shed id may be submitted again later.
      const spec = e.type === 'TaskShed' ? e.task! : e.task;
      const history = f?.view.history ?? [];
      f = {
        spec,
        view: {
          id: taskId, status: 'queued', attempt: 1, agent: null, tenant: spec.tenant,
          priority: e.type === 'TaskSubmitted' ? e.priority : e.type === 'TaskShed' ? e.priority : spec.priority ?? 'normal',
          submittedAt: iso(e.at), history,
        },
      };
      if (e.type === 'TaskSubmitted' && spec.dependsOn.some((d) => !succeeded.has(d))) f.view.status = 'blocked';
    }
    if (!f) continue; // events before the submission (a partial log): nothing to attach them to
    step(f.view, e);
    f.view.history.push(entry(e, f.spec));
  }
  return f;
}

function step(v: TaskView, e: DispatchEvent): void {
  switch (e.type) {
    case 'TaskRejected': v.status = 'rejected'; return;
    case 'TaskShed': v.status = 'shed'; return;
    case 'TaskAssigned': v.status = 'assigned'; v.attempt = e.attempt; v.agent = e.agentId; v.priority = e.priority; return;
    case 'TaskCompleted': v.status = 'succeeded'; return;
    case 'TaskFailed': if (v.status !== 'dead-lettered') v.status = e.retryAt === undefined ? 'failed' : 'queued'; return;
    case 'TaskCancelled': v.status = 'cancelled'; return;
    case 'TaskDeadLettered': v.status = 'dead-lettered'; return;
    case 'TaskRequeued': v.status = 'queued'; v.attempt = e.attempt; return;
    case 'TaskUnblocked': v.status = 'queued'; return;
    case 'TaskEscalated': v.priority = e.to; return;
    default: return;
  }
}

function entry(e: DispatchEvent, spec: TaskSpec): TaskHistoryEntry {
  const out: TaskHistoryEntry = { at: iso(e.at), type: e.type, summary: summarise(e, spec) };
  if ('why' in e && e.why !== undefined) out.why = e.why;
  return out;
}

function summarise(e: DispatchEvent, spec: TaskSpec): string {
  switch (e.type) {
    case 'TaskSubmitted': {
      const parts = [`submitted by tenant ${spec.tenant} (source ${spec.source}, type ${spec.type}) at priority ${e.priority} (from ${e.prioritySource})`];
      if (spec.requires.length > 0) parts.push(`requires ${spec.requires.join(', ')}`);
      if (spec.sessionRef !== undefined) parts.push(`session ${spec.sessionRef} (${spec.affinity} affinity)`);
      if (spec.deadline !== undefined) {
        parts.push(`deadline ${iso(spec.deadline)}${spec.estimatedDurationMs === undefined ? '' : `, estimated ${secs(spec.estimatedDurationMs)}`}`);
      }
      if (spec.dependsOn.length > 0) parts.push(`depends on ${spec.dependsOn.join(', ')}`);
      return parts.join('; ');
    }
    case 'TaskRejected': return `rejected (${e.reason}): ${e.message}`;
    case 'TaskShed': return e.task ? `shed at admission at priority ${e.priority}` : `shed from the ${e.priority} queue`;
    case 'TaskAssigned': return `assigned to ${e.agentId} (attempt ${e.attempt}, priority ${e.priority})`;
    case 'TaskCompleted': return `completed by ${e.agentId} (attempt ${e.attempt}) in ${secs(e.durationMs)}`;
    case 'TaskFailed': {
      const what = `failed on ${e.agentId} (attempt ${e.attempt}) after ${secs(e.durationMs)}${e.error === undefined ? '' : `: ${e.error}`}`;
      if (e.retryAt !== undefined) return `${what}; retry from ${iso(e.retryAt)}`;
      return `${what}; ${e.retryable ? 'no attempts left' : 'not retryable'}`;
    }
    case 'TaskCancelled':
      return `cancelled ${e.by === 'request' ? 'by request' : 'because of a dependency'}: ${e.reason}${e.agentId === undefined ? '' : ` (was running on ${e.agentId})`}`;
    case 'TaskDeferred':
      if (e.why.rule === 'affinity-wait') {
        return `held for ${e.agentId ?? 'its session agent'} (session affinity) ${e.until === undefined ? 'while that agent lives' : `until ${iso(e.until)}`}`;
      }
      return `deferred (${e.why.rule})`;
    case 'TaskEscalated': return `raised from ${e.from} to ${e.to} (${e.why.rule})`;
    case 'TaskRequeued': return `requeued for attempt ${e.attempt} (${e.reason})`;
    case 'TaskDeadLettered': return `dead-lettered after attempt ${e.attempt} (${e.reason})`;
    case 'TaskUnblocked': return 'unblocked: every dependency succeeded';
    case 'AgentTimedOut': return `agent ${e.agentId} timed out while running it (last seen ${iso(e.lastSeenAt)})`;
    case 'AgentRegistered':
    case 'AgentIdle':
    case 'AgentHeartbeat':
    case 'AgentLeft':
    case 'PolicyChanged':
    case 'DispatcherResumed':
      return e.type;
    default: {
      const never: never = e;
      throw new Error(`unknown event ${JSON.stringify(never)}`);
    }
  }
}

/** What each rule means, in one line, for readers of `explain`. */
const RULES: Record<string, string> = {
  'load-balance': 'the capable agent with the most free slots, then the longest idle, then the lowest id',
  affinity: 'the agent that last handled its session',
  'affinity-wait': 'its session agent was busy, so it waited for it',
  'affinity-fallback': 'its session agent stayed busy or was lost, so any capable agent may take it',
  'deadline-tight-fastest': 'its deadline was tight (remaining ≤ 2 × estimate), so the fastest capable agent',
  'deadline-at-risk-fastest': 'its deadline was at risk (remaining ≤ estimate), so the fastest capable agent',
  'deadline-at-risk': 'its deadline was at risk (remaining ≤ estimate), so it was raised to critical',
  aging: 'it waited a full aging step, so it rose one level',
  fairness: 'its tenant was above its fair share while other tenants had work',
  quota: 'its tenant was at its maxConcurrent quota',
  'overload-shed': 'the queue was above the shedding watermark for its priority',
  'make-room-for-critical': 'the queue was at its hard cap and a critical task needed room',
  'dependency-failed': 'a task it depends on ended without success',
  'dependencies-met': 'every task it depends on succeeded',
  'agent-timeout': 'its agent sent no sign of life within agentTimeoutMs',
  'agent-timed-out': 'its agent timed out, so it was requeued with a new attempt',
  'agent-left': 'its agent left, so it was requeued with a new attempt',
  'retry-backoff': 'its retry backoff ended',
  'max-attempts': 'it used all its attempts',
};

/** `key value` pairs of a why, in recorded order; `…Ms` values shown in seconds. */
function formatFacts(o: Record<string, unknown>, skip: ReadonlySet<string>): string {
  const parts: string[] = [];
  for (const [k, val] of Object.entries(o)) {
    if (skip.has(k) || val === undefined) continue;
    if (typeof val === 'number' && k.endsWith('Ms')) parts.push(`${k.slice(0, -2)} ${secs(val)}`);
    else if (val !== null && typeof val === 'object' && !Array.isArray(val)) parts.push(`${k} {${formatFacts(val as Record<string, unknown>, new Set())}}`);
    else parts.push(`${k} ${Array.isArray(val) ? val.join(',') : String(val)}`);
  }
  return parts.join(', ');
}

export function formatWhy(why: Why): string {
  const meaning = RULES[why.rule];
  const facts = formatFacts(why, new Set(['rule']));
  return `${why.rule}${meaning === undefined ? '' : ` — ${meaning}`}${facts === '' ? '' : ` [${facts}]`}`;
}

/**
 * A human-readable account of where the task went and why, one line per event, each decision
 * followed by its recorded reasons. Undefined when no event is about the task.
 */
export function explainText(taskId: string, events: EventsIn, state?: DispatcherState): string | undefined {
  const f = build(taskId, eventsOf(events), state);
  if (!f) return undefined;
  const { spec, view: v } = f;
  const lines: string[] = [];
  const where = v.agent === null ? '' : v.status === 'assigned' ? ` on ${v.agent}` : ` (last agent ${v.agent})`;
  lines.push(`Task ${v.id}: ${v.status}, attempt ${v.attempt}${where}, priority ${v.priority}`);
  lines.push(`  tenant ${spec.tenant}, source ${spec.source}, type ${spec.type}, submitted ${v.submittedAt}`);
  const extra: string[] = [];
  if (spec.requires.length > 0) extra.push(`requires ${spec.requires.join(', ')}`);
  if (spec.sessionRef !== undefined) extra.push(`session ${spec.sessionRef} (${spec.affinity})`);
  if (spec.deadline !== undefined) extra.push(`deadline ${iso(spec.deadline)}`);
  if (spec.estimatedDurationMs !== undefined) extra.push(`estimated ${secs(spec.estimatedDurationMs)}`);
  if (spec.dependsOn.length > 0) extra.push(`depends on ${spec.dependsOn.join(', ')}`);
  if (extra.length > 0) lines.push(`  ${extra.join('; ')}`);
  lines.push('History:');
  for (const h of v.history) {
    lines.push(`  ${h.at}  ${h.summary}`);
    if (h.why) lines.push(`      why: ${formatWhy(h.why)}`);
  }
  return lines.join('\n');
}
