import type { Command } from './commands.js';
import { decide } from './decide.js';
import { isInputFact, type DispatchEvent } from './events.js';
import { evolve } from './evolve.js';
import { decideNext } from './scheduling.js';
import type { DispatcherState } from './state.js';

/** More decisions than this from one command means a rule is looping, not deciding. */
const MAX_STEPS = 50_000_000;

/**
 * Handle one command: decide its facts, evolve them, then take every decision that follows
 * (timeouts, escalations, dispatches) until none is left. Returns all events, in order; the
 * state has them applied. A refused command throws a DomainError and changes nothing.
 * Time never runs backwards: a command stamped before the last event is handled at that time.
 */
export function handle(s: DispatcherState, command: Command): DispatchEvent[] {
  const cmd = command.at >= s.lastAt ? command : { ...command, at: s.lastAt };
  const out = decide(cmd, s);
  for (const e of out) evolve(s, e);
  for (let steps = 0; ; steps++) {
    const next = decideNext(s, cmd.at);
    if (next.length === 0) return out;
    if (steps > MAX_STEPS) throw new Error(`dispatcher did not settle after ${MAX_STEPS} decisions at ${cmd.at}`);
    for (const e of next) { evolve(s, e); out.push(e); }
  }
}

/**
 * Rebuild the command that produced a run of recorded events, from the run's first event and the
 * state before it. Input facts name their command; a run that starts with a decision came from a Tick.
 */
export function commandOf(first: DispatchEvent, s: DispatcherState): Command {
  const at = first.at;
  if (!isInputFact(first)) return { type: 'Tick', at };
  switch (first.type) {
    case 'TaskSubmitted':
    case 'TaskRejected':
      return { type: 'SubmitTask', at, task: first.task };
    case 'TaskShed':
      return { type: 'SubmitTask', at, task: first.task! };
    case 'AgentRegistered':
      return { type: 'MarkAgentReady', at, agentId: first.agentId, capabilities: first.capabilities, capacity: first.capacity };
    case 'AgentIdle': {
      const a = s.agents.get(first.agentId);
      return { type: 'MarkAgentReady', at, agentId: first.agentId, capabilities: a?.caps ?? [], capacity: a?.capacity ?? 1 };
    }
    case 'AgentHeartbeat':
      return { type: 'RecordHeartbeat', at, agentId: first.agentId };
    case 'TaskCompleted':
      return { type: 'CompleteTask', at, taskId: first.taskId, agentId: first.agentId, attempt: first.attempt, outcome: 'succeeded', result: first.result };
    case 'TaskFailed':
      return { type: 'CompleteTask', at, taskId: first.taskId, agentId: first.agentId, attempt: first.attempt, outcome: 'failed', error: first.error, retryable: first.retryable };
    case 'TaskCancelled':
      return { type: 'CancelTask', at, taskId: first.taskId, reason: first.reason };
    case 'AgentLeft':
      return { type: 'RemoveAgent', at, agentId: first.agentId };
    case 'PolicyChanged':
      return { type: 'ChangePolicy', at, policy: first.policy };
    case 'DispatcherResumed':
      return { type: 'Resume', at, since: first.since };
    default:
      return { type: 'Tick', at };
  }
}

/** Split a recorded history into the runs of events each command produced. */
export function* commandRuns(events: Iterable<DispatchEvent>): Generator<DispatchEvent[]> {
  let run: DispatchEvent[] = [];
  for (const e of events) {
    if (run.length > 0 && (isInputFact(e) || e.at !== run[run.length - 1].at)) {
      yield run;
      run = [];
    }
    run.push(e);
  }
  if (run.length > 0) yield run;
}

/** The first difference between recorded and re-decided events, if any. */
export interface Divergence {
  /** Where the diverging run starts, as the caller counts the history (`verify`: the stream version). */
  index: number;
  command: Command;
  recorded: DispatchEvent[];
  redecided: DispatchEvent[];
  error?: string;
}

/**
 * Re-decide a recorded run against the state before it: undefined when the dispatcher decides
 * exactly as recorded (the state then stands after the run), else the divergence (the state is
 * then no longer the recorded one, so checking stops there).
 */
export function redecideRun(s: DispatcherState, run: DispatchEvent[], index: number): Divergence | undefined {
  const command = commandOf(run[0], s);
  let redecided: DispatchEvent[] = [];
  let error: string | undefined;
  try {
    redecided = handle(s, command);
  } catch (e) {
    error = (e as Error).message;
  }
  if (error === undefined && sameEvents(run, redecided)) return undefined;
  return { index, command, recorded: run, redecided, error };
}

function sameEvents(a: DispatchEvent[], b: DispatchEvent[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (canonical(a[i]) !== canonical(b[i])) return false;
  return true;
}

/** JSON with sorted keys and undefined dropped: how two events are compared. */
export function canonical(x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      return Object.fromEntries(Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
    }
    return v;
  });
}
