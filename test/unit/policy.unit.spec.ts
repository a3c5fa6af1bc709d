import { describe, expect, it } from 'vitest';
import {
  AgentMessageSchema, AgentReadySchema, CompletionSchema, DEFAULT_POLICY, PolicyError, TaskSubmissionSchema, fieldIssues, hardCapOf,
  parseEvent, parsePolicy, recordedPolicy, resolvePriority, weightOf,
} from '../../src/domain/index.js';

function policyIssues(input: unknown): { path: string; message: string }[] {
  try {
    parsePolicy(input);
  } catch (e) {
    if (e instanceof PolicyError) return e.issues;
    throw e;
  }
  throw new Error('expected the policy to be refused');
}

function submissionIssues(input: unknown): { path: string; message: string }[] {
  const r = TaskSubmissionSchema.safeParse(input);
  if (r.success) throw new Error('expected the submission to be refused');
  return fieldIssues(r.error);
}

const submission = { tenant: 'acme', source: 'user', type: 'summarise' };

describe('parsePolicy', () => {
  it('fills every default of the documented policy file', () => {
    expect(parsePolicy({})).toEqual({
      tickMs: 250,
      health: { agentTimeoutMs: 15_000 },
      retry: { maxAttempts: 3, backoffMs: 1000 },
      affinity: { maxWaitMs: 5000 },
      aging: { stepMs: 600_000 },
      fairness: { windowMs: 3_600_000, deferFactor: 1.5, minSamples: 20, weights: {} },
      quotas: {},
      shedding: { highWatermark: 100_000 },
      retention: { finishedTasks: 100_000 },
      deadlines: { marginMs: 1000 },
      priorityRules: [],
    });
  });

  it('reads a policy recorded before the deadline margin existed with no margin, as it was decided then', () => {
    const recorded = JSON.parse(JSON.stringify(parsePolicy({}))) as Record<string, unknown>;
    delete recorded.deadlines;

    expect(recordedPolicy(recorded).deadlines).toEqual({ marginMs: 0 });
    expect(recordedPolicy(parsePolicy({ deadlines: { marginMs: 250 } })).deadlines).toEqual({ marginMs: 250 });
    // The event catalogue reads recorded PolicyChanged events the same way.
    const e = parseEvent({ type: 'PolicyChanged', v: 1, at: 0, policy: recorded });
    expect(e.type === 'PolicyChanged' && e.policy.deadlines).toEqual({ marginMs: 0 });
  });

  it('treats a missing document as the default policy', () => {
    expect(parsePolicy(undefined)).toEqual(DEFAULT_POLICY);
    expect(parsePolicy(null)).toEqual(DEFAULT_POLICY);
  });

  it('keeps given values and fills the rest of a section', () => {
    const p = parsePolicy({ retry: { maxAttempts: 5 }, fairness: { weights: { hooli: 2 } } });

    expect(p.retry).toEqual({ maxAttempts: 5, backoffMs: 1000 });
    expect(p.fairness).toMatchObject({ deferFactor: 1.5, weights: { hooli: 2 } });
  });

  it('defaults the hard cap to twice the high watermark', () => {
    expect(hardCapOf(parsePolicy({ shedding: { highWatermark: 7 } }))).toBe(14);
    expect(hardCapOf(parsePolicy({ shedding: { highWatermark: 7, hardCap: 9 } }))).toBe(9);
  });

  it('weighs an unlisted tenant 1', () => {
    const p = parsePolicy({ fairness: { weights: { hooli: 3 } } });

    expect([weightOf(p, 'hooli'), weightOf(p, 'acme')]).toEqual([3, 1]);
  });

  it('names an unknown top-level key', () => {
    expect(policyIssues({ tickMs: 100, bogus: 1 })).toEqual([{ path: 'bogus', message: 'unknown key' }]);
  });

  it('names an unknown nested key with its section', () => {
    expect(policyIssues({ fairness: { bogus: true } })).toEqual([{ path: 'fairness.bogus', message: 'unknown key' }]);
  });

  it('names unknown keys inside quotas and priority rules', () => {
    expect(policyIssues({ quotas: { acme: { maxRunning: 3 } } })).toEqual([{ path: 'quotas.acme.maxRunning', message: 'unknown key' }]);
    expect(policyIssues({ priorityRules: [{ match: { queue: 'x' }, priority: 'low' }] }))
      .toEqual([{ path: 'priorityRules.0.match.queue', message: 'unknown key' }]);
  });

  it('puts the issues in the error message too', () => {
    expect(() => parsePolicy({ fairness: { bogus: true } })).toThrow(/invalid policy: fairness\.bogus: unknown key/);
  });

  it.each([
    [{ tickMs: 0 }, 'tickMs'],
    [{ tickMs: 'fast' }, 'tickMs'],
    [{ health: { agentTimeoutMs: -5 } }, 'health.agentTimeoutMs'],
    [{ retry: { maxAttempts: 0 } }, 'retry.maxAttempts'],
    [{ retry: { backoffMs: 1.5 } }, 'retry.backoffMs'],
    [{ affinity: { maxWaitMs: -1 } }, 'affinity.maxWaitMs'],
    [{ fairness: { deferFactor: 0.5 } }, 'fairness.deferFactor'],
    [{ fairness: { weights: { acme: 0 } } }, 'fairness.weights.acme'],
    [{ quotas: { acme: { maxConcurrent: 0 } } }, 'quotas.acme.maxConcurrent'],
    [{ shedding: { highWatermark: 0 } }, 'shedding.highWatermark'],
    [{ priorityRules: [{ match: {}, priority: 'urgent' }] }, 'priorityRules.0.priority'],
    [{ health: 'yes' }, 'health'],
  ])('names the field of a bad value: %j', (input, path) => {
    const issues = policyIssues(input);

    expect(issues.map((i) => i.path)).toEqual([path]);
    expect(issues[0].message.length).toBeGreaterThan(0);
  });

  it('reports every bad field at once', () => {
    expect(policyIssues({ tickMs: -1, retry: { maxAttempts: 0 }, nope: 1 }).map((i) => i.path).sort())
      .toEqual(['nope', 'retry.maxAttempts', 'tickMs']);
  });
});

describe('resolvePriority', () => {
  const p = parsePolicy({
    priorityRules: [
      { match: { source: 'cron', tenant: 'acme' }, priority: 'high' },
      { match: { source: 'cron' }, priority: 'low' },
    ],
  });

  it('prefers the task\'s own priority', () => {
    expect(resolvePriority(p, { priority: 'critical', source: 'cron', type: 'x', tenant: 'acme' })).toEqual({ priority: 'critical', from: 'task' });
  });

  it('takes the first rule whose every field matches', () => {
    expect(resolvePriority(p, { source: 'cron', type: 'x', tenant: 'acme' })).toEqual({ priority: 'high', from: 'rule', rule: 0 });
    expect(resolvePriority(p, { source: 'cron', type: 'x', tenant: 'globex' })).toEqual({ priority: 'low', from: 'rule', rule: 1 });
  });

  it('falls back to normal', () => {
    expect(resolvePriority(p, { source: 'user', type: 'x', tenant: 'acme' })).toEqual({ priority: 'normal', from: 'default' });
  });
});

describe('TaskSubmissionSchema', () => {
  it('accepts the documented submission with every field', () => {
    const r = TaskSubmissionSchema.safeParse({
      id: 'job-1', ...submission, priority: 'high', requires: ['llm'], sessionRef: 'conv-9', affinity: 'hard',
      deadline: '2025-03-03T09:00:00Z', estimatedDurationMs: 4500, dependsOn: ['job-0'], payload: { nested: [1, 'two', null] },
    });

    expect(r.success).toBe(true);
  });

  it('accepts the minimal submission', () => {
    expect(TaskSubmissionSchema.safeParse(submission).success).toBe(true);
  });

  it('rejects an unknown field and names it', () => {
    expect(submissionIssues({ ...submission, colour: 'red' })).toEqual([{ path: 'colour', message: 'unknown field' }]);
  });

  it.each([
    [{ ...submission, tenant: 7 }, 'tenant'],
    [{ ...submission, tenant: '' }, 'tenant'],
    [{ ...submission, source: 'email' }, 'source'],
    [{ ...submission, priority: 'urgent' }, 'priority'],
    [{ ...submission, requires: ['llm', 3] }, 'requires.1'],
    [{ ...submission, requires: 'llm' }, 'requires'],
    [{ ...submission, affinity: 'sticky' }, 'affinity'],
    [{ ...submission, deadline: 'tomorrow' }, 'deadline'],
    [{ ...submission, deadline: 1741000000000 }, 'deadline'],
    [{ ...submission, estimatedDurationMs: -1 }, 'estimatedDurationMs'],
    [{ ...submission, estimatedDurationMs: 1.5 }, 'estimatedDurationMs'],
    [{ ...submission, dependsOn: [''] }, 'dependsOn.0'],
    [{ tenant: 'acme', source: 'user' }, 'type'],
  ])('rejects a bad value with its field path: %j', (input, path) => {
    expect(submissionIssues(input).map((i) => i.path)).toEqual([path]);
  });

  it('says what is wrong with a deadline', () => {
    expect(submissionIssues({ ...submission, deadline: 'tomorrow' })).toEqual([{ path: 'deadline', message: 'must be an ISO-8601 date-time' }]);
  });

  it('names the root when the body is not an object', () => {
    expect(submissionIssues('hello').map((i) => i.path)).toEqual(['(root)']);
  });

  it('rejects a payload that is not JSON', () => {
    expect(submissionIssues({ ...submission, payload: { f: () => 1 } }).map((i) => i.path)).toEqual(['payload']);
  });
});

describe('agent inputs', () => {
  it('rejects a ready with a capacity out of range', () => {
    const r = AgentReadySchema.safeParse({ capabilities: [], capacity: 0 });

    expect(r.success).toBe(false);
    if (!r.success) expect(fieldIssues(r.error).map((i) => i.path)).toEqual(['capacity']);
  });

  it('rejects a completion without an attempt', () => {
    const r = CompletionSchema.safeParse({ agentId: 'a', outcome: 'succeeded' });

    expect(r.success).toBe(false);
    if (!r.success) expect(fieldIssues(r.error).map((i) => i.path)).toEqual(['attempt']);
  });

  it('reads each kind of agent message and rejects an unknown kind', () => {
    expect(AgentMessageSchema.safeParse({ kind: 'heartbeat', agentId: 'a' }).success).toBe(true);
    expect(AgentMessageSchema.safeParse({ kind: 'ready', agentId: 'a', capabilities: ['x'] }).success).toBe(true);
    expect(AgentMessageSchema.safeParse({ kind: 'complete', agentId: 'a', taskId: 't', attempt: 1, outcome: 'failed' }).success).toBe(true);
    expect(AgentMessageSchema.safeParse({ kind: 'leave', agentId: 'a' }).success).toBe(true);
    expect(AgentMessageSchema.safeParse({ kind: 'dance', agentId: 'a' }).success).toBe(false);
  });
});
