import { z } from 'zod';
import { PrioritySchema } from './priority.js';

/** Ids, tenants, capabilities: short printable strings. */
const Name = z.string().min(1, 'must not be empty').max(256, 'must be at most 256 characters');

export const SOURCES = ['user', 'cron', 'webhook', 'subagent', 'hitl', 'api'] as const;

/**
 * A task submission, the same for an HTTP body and a Kafka message value (contract).
 * Unknown fields are rejected; `id` makes a submission idempotent.
 */
export const TaskSubmissionSchema = z.strictObject({
  id: Name.optional(),
  tenant: Name,
  source: z.enum(SOURCES),
  type: Name,
  priority: PrioritySchema.optional(),
  requires: z.array(Name).max(64).optional(),
  sessionRef: Name.optional(),
  affinity: z.enum(['soft', 'hard']).optional(),
  deadline: z.iso.datetime({ offset: true, message: 'must be an ISO-8601 date-time' }).optional(),
  estimatedDurationMs: z.number().int().positive().optional(),
  dependsOn: z.array(Name).max(1000).optional(),
  payload: z.json().optional(),
});
export type TaskSubmission = z.infer<typeof TaskSubmissionSchema>;

/** `POST /v1/agents/:id/ready` body, and `{kind: "ready"}` on the agents topic. */
export const AgentReadySchema = z.strictObject({
  capabilities: z.array(Name).max(256),
  capacity: z.number().int().min(1).max(10_000).optional(),
});
export type AgentReady = z.infer<typeof AgentReadySchema>;

/** `POST /v1/tasks/:id/complete` body (without the task id, which is in the path). */
export const CompletionSchema = z.strictObject({
  agentId: Name,
  attempt: z.number().int().min(1),
  outcome: z.enum(['succeeded', 'failed']),
  result: z.json().optional(),
  error: z.string().max(10_000).optional(),
  retryable: z.boolean().optional(),
});
export type Completion = z.infer<typeof CompletionSchema>;

/** `POST /v1/tasks/:id/cancel` body (optional). */
export const CancelSchema = z.strictObject({ reason: z.string().max(1000).optional() });

/** One message on the agents topic. */
export const AgentMessageSchema = z.discriminatedUnion('kind', [
  AgentReadySchema.extend({ kind: z.literal('ready'), agentId: Name }),
  z.strictObject({ kind: z.literal('heartbeat'), agentId: Name }),
  CompletionSchema.extend({ kind: z.literal('complete'), taskId: Name }),
  z.strictObject({ kind: z.literal('leave'), agentId: Name }),
]);
export type AgentMessage = z.infer<typeof AgentMessageSchema>;

/** A zod issue as users see it: the field path and the problem. */
export interface FieldIssue { path: string; message: string }

export function fieldIssues(error: z.ZodError): FieldIssue[] {
  return error.issues.map((i) => {
    const base = i.path.map(String).join('.');
    if (i.code === 'unrecognized_keys') {
      const keys = (i as { keys: string[] }).keys;
      return { path: keys.map((k) => (base ? `${base}.${k}` : k)).join(', '), message: `unknown field${keys.length > 1 ? 's' : ''}` };
    }
    return { path: base || '(root)', message: i.message };
  });
}
