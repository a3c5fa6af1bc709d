import { z } from 'zod';
import { PrioritySchema } from './priority.js';
import { PolicySchema, upcastPolicy } from './policy.js';
import { SOURCES } from './inputs.js';

/**
 * Why a decision was taken: the rule that fired and the facts it weighed.
 * `explain` prints these and never recomputes them.
 */
export const WhySchema = z.looseObject({ rule: z.string() });
export type Why = z.infer<typeof WhySchema>;

/** A task as the log records it: normalised, with its id and its deadline as epoch ms. */
export const TaskSpecSchema = z.object({
  id: z.string(),
  tenant: z.string(),
  source: z.enum(SOURCES),
  type: z.string(),
  priority: PrioritySchema.optional(),
  requires: z.array(z.string()),
  sessionRef: z.string().optional(),
  affinity: z.enum(['soft', 'hard']),
  deadline: z.number().optional(),
  estimatedDurationMs: z.number().optional(),
  dependsOn: z.array(z.string()),
  payload: z.unknown().optional(),
});
export type TaskSpec = z.infer<typeof TaskSpecSchema>;

const base = <T extends string>(type: T) => ({ type: z.literal(type), v: z.literal(1), at: z.number() });

// Inputs recorded as facts.
export const TaskSubmitted = z.object({
  ...base('TaskSubmitted'),
  task: TaskSpecSchema,
  priority: PrioritySchema,
  prioritySource: z.enum(['task', 'rule', 'default']),
});
export const TaskRejected = z.object({ ...base('TaskRejected'), task: TaskSpecSchema, reason: z.string(), message: z.string() });
export const AgentRegistered = z.object({ ...base('AgentRegistered'), agentId: z.string(), capabilities: z.array(z.string()), capacity: z.number() });
export const AgentIdle = z.object({ ...base('AgentIdle'), agentId: z.string() });
export const AgentHeartbeat = z.object({ ...base('AgentHeartbeat'), agentId: z.string() });
export const TaskCompleted = z.object({
  ...base('TaskCompleted'), taskId: z.string(), agentId: z.string(), attempt: z.number(),
  result: z.unknown().optional(), durationMs: z.number(),
});
export const TaskFailed = z.object({
  ...base('TaskFailed'), taskId: z.string(), agentId: z.string(), attempt: z.number(),
  error: z.string().optional(), retryable: z.boolean(), durationMs: z.number(),
  /** When the next attempt may start; absent when the failure is final. */
  retryAt: z.number().optional(),
});
export const TaskCancelled = z.object({
  ...base('TaskCancelled'), taskId: z.string(), reason: z.string(),
  /** `request`: a cancel command (an input fact); `dependency`: a decision, with `why`. */
  by: z.enum(['request', 'dependency']),
  /** The agent it was running on, when it was cancelled mid-run (that agent is told to stop). */
  agentId: z.string().optional(),
  why: WhySchema.optional(),
});
export const AgentLeft = z.object({ ...base('AgentLeft'), agentId: z.string() });
/** The policy as recorded; one written before a key existed is read with the meaning it had then (upcastPolicy). */
export const PolicyChanged = z.object({ ...base('PolicyChanged'), policy: z.preprocess(upcastPolicy, PolicySchema) });
/**
 * The dispatcher heard nothing from `since` until `at` (it was down, taking over, or stuck): every
 * live agent counts as seen at `at`, so none is timed out for the dispatcher's own silence.
 * `agents`: how many were credited.
 */
export const DispatcherResumed = z.object({ ...base('DispatcherResumed'), since: z.number(), agents: z.number() });

// Decisions.
export const TaskAssigned = z.object({
  ...base('TaskAssigned'), taskId: z.string(), agentId: z.string(), attempt: z.number(),
  tenant: z.string(), priority: PrioritySchema, why: WhySchema,
});
export const TaskDeferred = z.object({
  ...base('TaskDeferred'), taskId: z.string(),
  /** For an affinity wait: the agent waited for, and until when (absent = while it lives). */
  agentId: z.string().optional(), until: z.number().optional(),
  why: WhySchema,
});
export const TaskEscalated = z.object({
  ...base('TaskEscalated'), taskId: z.string(), from: PrioritySchema, to: PrioritySchema, why: WhySchema,
});
export const TaskShed = z.object({
  ...base('TaskShed'), taskId: z.string(), tenant: z.string(), priority: PrioritySchema,
  /** Present when the task was shed at admission (it was never queued): the submission itself. */
  task: TaskSpecSchema.optional(),
  why: WhySchema,
});
export const TaskRequeued = z.object({
  ...base('TaskRequeued'), taskId: z.string(),
  /** The attempt number the next assignment will carry. */
  attempt: z.number(),
  reason: z.enum(['agent-timed-out', 'agent-left', 'retry', 'affinity-wait-expired', 'affinity-agent-lost']),
  why: WhySchema,
});
export const TaskDeadLettered = z.object({ ...base('TaskDeadLettered'), taskId: z.string(), attempt: z.number(), reason: z.string(), why: WhySchema });
export const AgentTimedOut = z.object({ ...base('AgentTimedOut'), agentId: z.string(), lastSeenAt: z.number(), tasks: z.array(z.string()), why: WhySchema });
export const TaskUnblocked = z.object({ ...base('TaskUnblocked'), taskId: z.string(), why: WhySchema });

export const DispatchEventSchema = z.discriminatedUnion('type', [
  TaskSubmitted, TaskRejected, AgentRegistered, AgentIdle, AgentHeartbeat, TaskCompleted, TaskFailed,
  TaskCancelled, AgentLeft, PolicyChanged, DispatcherResumed,
  TaskAssigned, TaskDeferred, TaskEscalated, TaskShed, TaskRequeued, TaskDeadLettered, AgentTimedOut, TaskUnblocked,
]);
export type DispatchEvent = z.infer<typeof DispatchEventSchema>;
export type EventType = DispatchEvent['type'];
export type EventOf<T extends EventType> = Extract<DispatchEvent, { type: T }>;

/** Event types that record an input; every other type is a decision of the dispatcher. */
export const INPUT_EVENT_TYPES: ReadonlySet<EventType> = new Set<EventType>([
  'TaskSubmitted', 'TaskRejected', 'AgentRegistered', 'AgentIdle', 'AgentHeartbeat', 'TaskCompleted',
  'TaskFailed', 'TaskCancelled', 'AgentLeft', 'PolicyChanged', 'DispatcherResumed',
]);

/** True when the event is the record of an input command (so it starts that command's events). */
export function isInputFact(e: DispatchEvent): boolean {
  if (e.type === 'TaskCancelled') return e.by === 'request';
  if (e.type === 'TaskShed') return e.task !== undefined;
  return INPUT_EVENT_TYPES.has(e.type);
}

/**
 * Read an event from the log. Old versions are upcast here (none yet: every type is v1);
 * an unknown type or a malformed body throws, naming the field.
 */
export function parseEvent(raw: unknown): DispatchEvent {
  return DispatchEventSchema.parse(raw);
}

/** The task an event is about, if any (used to index task histories). */
export function taskIdOf(e: DispatchEvent): string | undefined {
  switch (e.type) {
    case 'TaskSubmitted':
    case 'TaskRejected':
      return e.task.id;
    case 'AgentRegistered':
    case 'AgentIdle':
    case 'AgentHeartbeat':
    case 'AgentLeft':
    case 'AgentTimedOut':
    case 'PolicyChanged':
    case 'DispatcherResumed':
      return undefined;
    default:
      return e.taskId;
  }
}

/** The agent an event is about, if any. */
export function agentIdOf(e: DispatchEvent): string | undefined {
  return 'agentId' in e ? e.agentId : undefined;
}
