import { parseEvent, type DispatchEvent, type EventOf } from '../../src/domain/events.js';

/**
 * Realistic events for log tests, each checked against the domain schema so a log test never
 * passes on data the dispatcher could not have written.
 */

const T0 = Date.parse('2025-03-03T09:00:00.000Z');

function valid<T extends DispatchEvent>(event: T): T {
  parseEvent(event);
  return event;
}

export function taskSubmitted(taskId: string, at = T0, tenant = 'acme'): EventOf<'TaskSubmitted'> {
  return valid({
    type: 'TaskSubmitted', v: 1, at,
    task: {
      id: taskId, tenant, source: 'webhook', type: 'summarise-ticket', priority: 'high',
      requires: ['llm:large', 'tool:jira'], sessionRef: `session-${taskId}`, affinity: 'hard',
      deadline: at + 60_000, estimatedDurationMs: 4_500, dependsOn: [],
      payload: { ticket: 'OPS-1432', lines: [1, 2, 3], note: 'naïve café ✓ — "quoted"', nested: { ok: true, none: null } },
    },
    priority: 'high', prioritySource: 'task',
  });
}

export function agentRegistered(agentId: string, at = T0): EventOf<'AgentRegistered'> {
  return valid({ type: 'AgentRegistered', v: 1, at, agentId, capabilities: ['llm:large', 'tool:jira'], capacity: 4 });
}

export function taskAssigned(taskId: string, agentId: string, at = T0, attempt = 1): EventOf<'TaskAssigned'> {
  return valid({
    type: 'TaskAssigned', v: 1, at, taskId, agentId, attempt, tenant: 'acme', priority: 'high',
    why: { rule: 'session-affinity', sessionRef: `session-${taskId}`, candidates: [agentId, 'agent-b'], load: 0.25 },
  });
}

export function taskFailed(taskId: string, agentId: string, at = T0): EventOf<'TaskFailed'> {
  return valid({
    type: 'TaskFailed', v: 1, at, taskId, agentId, attempt: 1, error: 'rate limited', retryable: true,
    durationMs: 812, retryAt: at + 1_000,
  });
}

export function taskCompleted(taskId: string, agentId: string, at = T0, attempt = 2): EventOf<'TaskCompleted'> {
  return valid({ type: 'TaskCompleted', v: 1, at, taskId, agentId, attempt, result: { summary: 'done', tokens: 1234 }, durationMs: 3_900 });
}

export function agentHeartbeat(agentId: string, at = T0): EventOf<'AgentHeartbeat'> {
  return valid({ type: 'AgentHeartbeat', v: 1, at, agentId });
}

/** `count` events cycling through submissions, assignments and heartbeats, at increasing times. */
export function workload(count: number, prefix = 'task'): DispatchEvent[] {
  const events: DispatchEvent[] = [];
  for (let i = 0; i < count; i++) {
    const at = T0 + i;
    const taskId = `${prefix}-${Math.floor(i / 3)}`;
    switch (i % 3) {
      case 0: events.push(taskSubmitted(taskId, at)); break;
      case 1: events.push(taskAssigned(taskId, 'agent-a', at)); break;
      default: events.push(agentHeartbeat('agent-a', at));
    }
  }
  return events;
}
