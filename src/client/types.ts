import type { Assignment, Cancellation } from '../runtime/delivery.js';
import type { TaskSubmission } from '../domain/inputs.js';

export type { Assignment, Cancellation, TaskSubmission };

/** What a handler gets besides the assignment. */
export interface HandlerContext {
  /** Aborted when the dispatcher cancels the task or the agent stops. */
  signal: AbortSignal;
}

/**
 * Does one task. Its resolved value is the result (outcome succeeded); a throw is a failure,
 * retryable unless the error carries `retryable: false`.
 */
export type TaskHandler = (assignment: Assignment, ctx: HandlerContext) => Promise<unknown>;

/** Options of `createAgent`. */
export interface AgentOptions {
  agentId: string;
  capabilities: string[];
  /** Tasks handled at once. Default 1. */
  capacity?: number;
  handler: TaskHandler;
  /** Heartbeat interval in ms. Default 5000 (keep it well under the dispatcher's agentTimeoutMs). */
  heartbeatMs?: number;
  /** Called with errors the agent recovers from (a failed poll, a refused completion). Default: none. */
  onError?: (err: Error) => void;
}

/** A failure the dispatcher should not retry. */
export class PermanentTaskError extends Error {
  readonly retryable = false;
}
