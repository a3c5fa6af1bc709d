import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DispatchEvent } from '../src/domain/events.js';
import type { EventLog } from '../src/runtime/eventLog.js';
import type { Receipt } from './chaosAgent.js';

/**
 * The invariants of the chaos campaign, over the agents' receipts files and over the log.
 */
export type ViolationKind =
  | 'lost' // an acknowledged submission never reached a terminal state in the log
  | 'double-delivery' // one (taskId, attempt) was handled by two agents
  | 'double-assignment' // the log assigns one (taskId, attempt) to two agents
  | 'phantom-delivery' // an agent got an assignment the log does not have (an aborted commit leaked)
  | 'stuck' // an accepted task not terminal within the settle bound once the fleet was healthy
  | 'not-recovered' // the dispatcher (or the fleet, as it sees it) did not come back after the faults
  | 'verify'; // `switchyard verify` found a difference

export interface Violation {
  kind: ViolationKind;
  round: number;
  mode: string;
  message: string;
  examples: string[];
}

export interface DeliveryStats {
  /** Handler invocations (each incarnation of an agent handles a (taskId, attempt) at most once). */
  deliveries: number;
  /** Deliveries of a (taskId, attempt) the same agent had received before (a revived agent re-reading its topic, or a re-sent assignment). */
  redeliveries: number;
  /** Deliveries with attempt > 1: the task was requeued (a timed-out agent, a retry) and given out again. */
  reattempts: number;
  /** (taskId, attempt) → the agents that received it, for those received by more than one. */
  doubles: Map<string, Set<string>>;
  /** agent → every (taskId#attempt) it received. */
  byAgent: Map<string, Set<string>>;
}

/** Read every agent's receipts (one file per agent id, appended to by each of its incarnations). */
export function readReceipts(dir: string): DeliveryStats {
  const owner = new Map<string, Set<string>>();
  const byAgent = new Map<string, Set<string>>();
  let deliveries = 0;
  let redeliveries = 0;
  let reattempts = 0;
  if (existsSync(dir)) {
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()) {
      const agentId = file.slice(0, -'.jsonl'.length);
      const mine = new Set<string>();
      byAgent.set(agentId, mine);
      for (const line of readFileSync(join(dir, file), 'utf8').split('\n')) {
        if (line.trim() === '') continue;
        let r: Receipt;
        // A line cut short cannot happen with one write(2) per line; tolerate it anyway.
        try { r = JSON.parse(line) as Receipt; } catch { continue; }
        const key = `${r.t}#${r.a}`;
        deliveries++;
        if (r.a > 1) reattempts++;
        if (mine.has(key)) redeliveries++;
        mine.add(key);
        let agents = owner.get(key);
        if (!agents) owner.set(key, (agents = new Set()));
        agents.add(agentId);
      }
    }
  }
  const doubles = new Map([...owner].filter(([, agents]) => agents.size > 1));
  return { deliveries, redeliveries, reattempts, doubles, byAgent };
}

/** Terminal task states and how the log says a task got there. */
const TERMINAL_EVENT: Partial<Record<DispatchEvent['type'], string>> = {
  TaskCompleted: 'succeeded',
  TaskCancelled: 'cancelled',
  TaskShed: 'shed',
  TaskRejected: 'rejected',
  TaskDeadLettered: 'dead-lettered',
};

export interface LogFold {
  events: number;
  /** taskId → terminal status, for tasks the log finished. */
  terminal: Map<string, string>;
  submitted: Set<string>;
  /** (taskId#attempt) → agents the log assigned it to (more than one is a violation). */
  assigned: Map<string, string[]>;
}

/** Fold the whole stream into what the invariants need (no domain code: an independent reading). */
export async function foldLog(log: EventLog, stream: string): Promise<LogFold> {
  const terminal = new Map<string, string>();
  const submitted = new Set<string>();
  const assigned = new Map<string, string[]>();
  let events = 0;
  for await (const se of log.read(stream, 0)) {
    events++;
    const e = se.event;
    switch (e.type) {
      case 'TaskSubmitted': submitted.add(e.task.id); break;
      case 'TaskRejected': terminal.set(e.task.id, 'rejected'); break;
      case 'TaskFailed': if (e.retryAt === undefined) terminal.set(e.taskId, 'failed'); break;
      case 'TaskAssigned': {
        const key = `${e.taskId}#${e.attempt}`;
        const list = assigned.get(key);
        if (list) list.push(e.agentId);
        else assigned.set(key, [e.agentId]);
        break;
      }
      case 'TaskCompleted': case 'TaskCancelled': case 'TaskShed': case 'TaskDeadLettered':
        terminal.set(e.taskId, TERMINAL_EVENT[e.type]!);
        break;
      default: break;
    }
  }
  return { events, terminal, submitted, assigned };
}

/** Up to n items, for a violation's examples. */
export function some<T>(xs: Iterable<T>, n = 5): T[] {
  const out: T[] = [];
  for (const x of xs) { if (out.length >= n) break; out.push(x); }
  return out;
}
