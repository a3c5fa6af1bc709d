import type { Policy } from './policy.js';
import type { TaskSpec } from './events.js';

/**
 * Commands ask the dispatcher to do something. Each carries `at` (epoch ms), stamped by the
 * adapter that received it: the domain never reads a clock.
 */
export type Command =
  | { type: 'SubmitTask'; at: number; task: TaskSpec }
  | { type: 'CancelTask'; at: number; taskId: string; reason?: string }
  | { type: 'MarkAgentReady'; at: number; agentId: string; capabilities: string[]; capacity?: number }
  | { type: 'RecordHeartbeat'; at: number; agentId: string }
  | {
    type: 'CompleteTask'; at: number; taskId: string; agentId: string; attempt: number;
    outcome: 'succeeded' | 'failed'; result?: unknown; error?: string; retryable?: boolean;
  }
  | { type: 'RemoveAgent'; at: number; agentId: string }
  | { type: 'ChangePolicy'; at: number; policy: Policy }
  | { type: 'Tick'; at: number }
  /**
   * The dispatcher could not hear anyone from `since` until `at`: it was down, was taking over from
   * another, or was stuck in a commit. Agents are not blamed for that silence.
   */
  | { type: 'Resume'; at: number; since: number };

export type CommandType = Command['type'];
export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;
