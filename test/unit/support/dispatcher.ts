import {
  DomainError, handle, initialState, parsePolicy,
  type Command, type DispatchEvent, type DispatcherState, type EventOf, type EventType, type PolicyInput, type TaskSpec,
} from '../../../src/domain/index.js';

/**
 * Given/when/then for the Decider: `given` builds the state by handling commands, `when` handles
 * one more and returns its events. Every command goes through `handle`, the public entry.
 */
export interface Scenario {
  readonly state: DispatcherState;
  /** Every event handled so far, in order (the log as the runtime would append it). */
  readonly history: DispatchEvent[];
  given(...commands: Command[]): Scenario;
  when(command: Command): DispatchEvent[];
  /** Handle a command that must be refused; returns the DomainError. */
  refused(command: Command): DomainError;
}

export function dispatcher(policy: PolicyInput = {}): Scenario {
  const state = initialState(parsePolicy(policy));
  const history: DispatchEvent[] = [];
  const run = (c: Command) => {
    const events = handle(state, c);
    history.push(...events);
    return events;
  };
  const scenario: Scenario = {
    state,
    history,
    given(...commands) {
      for (const c of commands) run(c);
      return scenario;
    },
    when: run,
    refused(command) {
      try {
        run(command);
      } catch (e) {
        if (e instanceof DomainError) return e;
        throw e;
      }
      throw new Error(`expected ${command.type} to be refused`);
    },
  };
  return scenario;
}

/** A task spec with quiet defaults: tenant "acme", source "user", type "job", no requirements. */
export function task(id: string, fields: Partial<TaskSpec> = {}): TaskSpec {
  return { id, tenant: 'acme', source: 'user', type: 'job', requires: [], affinity: 'soft', dependsOn: [], ...fields };
}

/** Command builders stamped with the time they arrive: `at(100).submit(task('t1'))`. */
export function at(ms: number) {
  return {
    submit: (spec: TaskSpec): Command => ({ type: 'SubmitTask', at: ms, task: spec }),
    ready: (agentId: string, capabilities: string[] = [], capacity?: number): Command =>
      ({ type: 'MarkAgentReady', at: ms, agentId, capabilities, ...(capacity === undefined ? {} : { capacity }) }),
    heartbeat: (agentId: string): Command => ({ type: 'RecordHeartbeat', at: ms, agentId }),
    succeed: (taskId: string, agentId: string, attempt = 1): Command =>
      ({ type: 'CompleteTask', at: ms, taskId, agentId, attempt, outcome: 'succeeded' }),
    fail: (taskId: string, agentId: string, attempt = 1, retryable = false): Command =>
      ({ type: 'CompleteTask', at: ms, taskId, agentId, attempt, outcome: 'failed', error: 'boom', retryable }),
    cancel: (taskId: string, reason?: string): Command => ({ type: 'CancelTask', at: ms, taskId, ...(reason ? { reason } : {}) }),
    remove: (agentId: string): Command => ({ type: 'RemoveAgent', at: ms, agentId }),
    changePolicy: (policy: PolicyInput): Command => ({ type: 'ChangePolicy', at: ms, policy: parsePolicy(policy) }),
    tick: (): Command => ({ type: 'Tick', at: ms }),
    resume: (since: number): Command => ({ type: 'Resume', at: ms, since }),
  };
}

export function ofType<T extends EventType>(events: readonly DispatchEvent[], type: T): EventOf<T>[] {
  return events.filter((e): e is EventOf<T> => e.type === type);
}

/** The assignments in `events` as `taskId→agentId` pairs, in order: the shape most dispatch tests assert. */
export function assignments(events: readonly DispatchEvent[]): string[] {
  return ofType(events, 'TaskAssigned').map((e) => `${e.taskId}→${e.agentId}`);
}

/** The one event of `type` about `taskId` (fails the test when there is none or more than one). */
export function only<T extends EventType>(events: readonly DispatchEvent[], type: T, taskId?: string): EventOf<T> {
  const found = ofType(events, type).filter((e) => taskId === undefined || ('taskId' in e && e.taskId === taskId));
  if (found.length !== 1) {
    throw new Error(`expected exactly one ${type}${taskId ? ` for ${taskId}` : ''}, got ${found.length} in ${JSON.stringify(events.map((e) => e.type))}`);
  }
  return found[0];
}

export function types(events: readonly DispatchEvent[]): string[] {
  return events.map((e) => e.type);
}

export function statusOf(s: DispatcherState, taskId: string): string | undefined {
  return s.tasks.get(taskId)?.status;
}
