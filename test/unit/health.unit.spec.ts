import { describe, expect, it } from 'vitest';
import { assignments, at, dispatcher, ofType, only, statusOf, task, types } from './support/dispatcher.js';

const QUIET = { health: { agentTimeoutMs: 1e9 } };

describe('agent timeouts', () => {
  const policy = { health: { agentTimeoutMs: 1000 }, retry: { maxAttempts: 2 } };

  /** a1 runs t1 from t=0 and stays silent; a2 sends a heartbeat at 600. */
  const a1RunsT1 = () => dispatcher(policy).given(
    at(0).ready('a1', []),
    at(0).ready('a2', []),
    at(0).submit(task('t1')),
    at(600).heartbeat('a2'),
  );

  it('times out an agent silent for agentTimeoutMs and requeues its tasks with the next attempt', () => {
    const d = a1RunsT1();

    expect(d.when(at(999).tick())).toEqual([]);
    const events = d.when(at(1000).tick());

    expect(types(events)).toEqual(['AgentTimedOut', 'TaskRequeued', 'TaskAssigned']);
    const timedOut = only(events, 'AgentTimedOut');
    expect([timedOut.agentId, timedOut.lastSeenAt, timedOut.tasks]).toEqual(['a1', 0, ['t1']]);
    expect(timedOut.why).toMatchObject({ rule: 'agent-timeout', silentMs: 1000, agentTimeoutMs: 1000 });
    const requeued = only(events, 'TaskRequeued', 't1');
    expect([requeued.attempt, requeued.reason, requeued.why.rule]).toEqual([2, 'agent-timed-out', 'agent-timed-out']);
    const assigned = only(events, 'TaskAssigned', 't1');
    expect([assigned.agentId, assigned.attempt]).toEqual(['a2', 2]);
  });

  it('does not blame agents for the dispatcher\'s own silence: a resume gives every live agent a fresh timeout period', () => {
    // The dispatcher heard nothing from 100 (it was down, or taking over) until 5000.
    const d = a1RunsT1().given(at(700).remove('a2'));

    const resumed = d.when(at(5000).resume(100));
    expect(resumed).toEqual([{ type: 'DispatcherResumed', v: 1, at: 5000, since: 100, agents: 1 }]);
    expect(d.state.agents.get('a1')?.lastSeenAt).toBe(5000);
    // a1 keeps t1; it is timed out only if it stays silent a whole period after the resume.
    expect(d.when(at(5999).tick())).toEqual([]);
    expect(statusOf(d.state, 't1')).toBe('assigned');
    expect(types(d.when(at(6000).tick()))).toEqual(['AgentTimedOut', 'TaskRequeued']);
  });

  it('records no resume when there is no live agent to credit', () => {
    const d = dispatcher(policy).given(at(0).ready('a1', []), at(1000).tick());

    expect(d.state.agents.get('a1')?.alive).toBe(false);
    expect(d.when(at(9000).resume(1000))).toEqual([]);
  });

  it('dead-letters a task whose last attempt was lost with its agent', () => {
    const d = a1RunsT1().given(at(1000).tick()); // t1 attempt 2 → a2, last seen at 600

    const events = d.when(at(1600).tick());

    expect(types(events)).toEqual(['AgentTimedOut', 'TaskDeadLettered']);
    const dead = only(events, 'TaskDeadLettered', 't1');
    expect([dead.attempt, dead.reason]).toEqual([2, 'agent-timed-out']);
    expect(dead.why).toMatchObject({ rule: 'max-attempts', attempts: 2, maxAttempts: 2, agentId: 'a2' });
    expect(statusOf(d.state, 't1')).toBe('dead-lettered');
  });

  it('keeps an agent that sends heartbeats alive', () => {
    const d = a1RunsT1().given(at(300).heartbeat('a1'), at(800).heartbeat('a1'), at(1200).heartbeat('a1'));

    expect(ofType(d.when(at(1600).tick()), 'AgentTimedOut').map((e) => e.agentId)).toEqual(['a2']);
    expect(d.state.agents.get('a1')?.alive).toBe(true);
  });

  it('counts a completion as a sign of life', () => {
    const d = a1RunsT1().given(at(900).succeed('t1', 'a1'), at(1500).heartbeat('a2'));

    expect(d.state.agents.get('a1')?.alive).toBe(true);
    expect(ofType(d.when(at(1899).tick()), 'AgentTimedOut')).toEqual([]);
    expect(ofType(d.when(at(1900).tick()), 'AgentTimedOut').map((e) => e.agentId)).toEqual(['a1']);
  });

  it('counts a repeated ready as a sign of life', () => {
    const d = a1RunsT1().given(at(900).ready('a1', []));

    expect(d.state.agents.get('a1')?.lastSeenAt).toBe(900);
  });

  it('registers a timed-out agent again when it sends ready, and gives it work', () => {
    const d = dispatcher(policy).given(at(0).ready('a1', []), at(1000).tick(), at(1001).submit(task('t1')));
    expect(d.state.agents.get('a1')?.alive).toBe(false);

    const events = d.when(at(1100).ready('a1', []));

    expect(types(events)).toEqual(['AgentRegistered', 'TaskAssigned']);
  });

  it('refuses a heartbeat from a timed-out agent and from an unknown one', () => {
    const d = dispatcher(policy).given(at(0).ready('a1', []), at(1000).tick());

    expect(d.refused(at(1001).heartbeat('a1')).code).toBe('agent-not-alive');
    expect(d.refused(at(1001).heartbeat('ghost')).code).toBe('not-found');
  });
});

describe('removing an agent', () => {
  it('records AgentLeft and requeues its running tasks with the next attempt', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a1', []), at(0).submit(task('t1')), at(1).ready('a2', []));

    const events = d.when(at(2).remove('a1'));

    expect(types(events)).toEqual(['AgentLeft', 'TaskRequeued', 'TaskAssigned']);
    expect(only(events, 'TaskRequeued', 't1')).toMatchObject({ attempt: 2, reason: 'agent-left' });
    expect(only(events, 'TaskAssigned', 't1')).toMatchObject({ agentId: 'a2', attempt: 2 });
  });

  it('ignores removing an agent that is already gone and refuses an unknown one', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a1', []), at(1).remove('a1'));

    expect(d.when(at(2).remove('a1'))).toEqual([]);
    expect(d.refused(at(2).remove('ghost')).code).toBe('not-found');
  });
});

describe('retries', () => {
  const policy = { ...QUIET, retry: { maxAttempts: 3, backoffMs: 1000 } };

  it('requeues a retryable failure after backoffMs × 2^(attempt-1)', () => {
    const d = dispatcher(policy).given(at(0).ready('a', []), at(0).submit(task('t1')));

    const failed = d.when(at(100).fail('t1', 'a', 1, true));
    const early = d.when(at(1099).tick());
    const due = d.when(at(1100).tick());

    expect(types(failed)).toEqual(['TaskFailed']);
    expect(only(failed, 'TaskFailed')).toMatchObject({ attempt: 1, retryable: true, retryAt: 1100, error: 'boom', durationMs: 100 });
    expect(early).toEqual([]);
    expect(types(due)).toEqual(['TaskRequeued', 'TaskAssigned']);
    expect(only(due, 'TaskRequeued')).toMatchObject({ attempt: 2, reason: 'retry', why: { rule: 'retry-backoff', previousAttempt: 1, retryAt: 1100 } });
    expect(only(due, 'TaskAssigned').attempt).toBe(2);
  });

  it('doubles the backoff with each attempt', () => {
    const d = dispatcher(policy).given(
      at(0).ready('a', []),
      at(0).submit(task('t1')),
      at(100).fail('t1', 'a', 1, true),
      at(1100).tick(),
    );

    expect(only(d.when(at(1200).fail('t1', 'a', 2, true)), 'TaskFailed').retryAt).toBe(1200 + 2000);
  });

  it('dead-letters a retryable failure of the last attempt', () => {
    const d = dispatcher(policy).given(
      at(0).ready('a', []),
      at(0).submit(task('t1')),
      at(100).fail('t1', 'a', 1, true),
      at(1100).tick(),
      at(1200).fail('t1', 'a', 2, true),
      at(3200).tick(),
    );

    const events = d.when(at(3300).fail('t1', 'a', 3, true));

    expect(types(events)).toEqual(['TaskFailed', 'TaskDeadLettered']);
    expect(only(events, 'TaskFailed').retryAt).toBeUndefined();
    expect(only(events, 'TaskDeadLettered')).toMatchObject({ attempt: 3, reason: 'max-attempts', why: { rule: 'max-attempts', attempts: 3, maxAttempts: 3 } });
    expect(statusOf(d.state, 't1')).toBe('dead-lettered');
  });

  it('fails a non-retryable failure for good and frees the slot', () => {
    const d = dispatcher(policy).given(at(0).ready('a', []), at(0).submit(task('t1')), at(0).submit(task('t2')));

    const events = d.when(at(100).fail('t1', 'a'));

    expect(only(events, 'TaskFailed')).toMatchObject({ retryable: false });
    expect(only(events, 'TaskFailed').retryAt).toBeUndefined();
    expect(statusOf(d.state, 't1')).toBe('failed');
    expect(assignments(events)).toEqual(['t2→a']);
    expect(d.when(at(5000).tick())).toEqual([]);
  });

  it('frees the agent for other work during the backoff', () => {
    const d = dispatcher(policy).given(at(0).ready('a', []), at(0).submit(task('t1')), at(0).submit(task('t2')));

    expect(assignments(d.when(at(100).fail('t1', 'a', 1, true)))).toEqual(['t2→a']);
  });
});

describe('completions', () => {
  it('records a success and frees the slot for the next task', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(0).submit(task('t2')));

    const events = d.when(at(250).succeed('t1', 'a'));

    expect(only(events, 'TaskCompleted')).toMatchObject({ taskId: 't1', agentId: 'a', attempt: 1, durationMs: 250 });
    expect(assignments(events)).toEqual(['t2→a']);
    expect(statusOf(d.state, 't1')).toBe('succeeded');
  });

  it('treats a duplicate completion as a no-op', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(1).succeed('t1', 'a'));

    expect(d.when(at(2).succeed('t1', 'a'))).toEqual([]);
  });

  it('treats a duplicate retryable failure as a no-op', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(1).fail('t1', 'a', 1, true));

    expect(d.when(at(2).fail('t1', 'a', 1, true))).toEqual([]);
  });

  it('refuses a completion for a stale attempt', () => {
    const d = dispatcher({ health: { agentTimeoutMs: 1000 } }).given(
      at(0).ready('a1', []),
      at(0).submit(task('t1')),
      at(500).ready('a2', []),
      at(1000).tick(), // a1 timed out: t1 attempt 2 → a2
    );

    const stale = d.refused(at(1100).succeed('t1', 'a1', 1));

    expect(stale.code).toBe('stale-attempt');
    expect(d.refused(at(1100).succeed('t1', 'a1', 2)).code).toBe('stale-attempt');
    expect(d.refused(at(1100).succeed('t1', 'a2', 1)).code).toBe('stale-attempt');
    expect(types(d.when(at(1100).succeed('t1', 'a2', 2)))).toEqual(['TaskCompleted']);
  });

  it('refuses a completion with another outcome than the one recorded', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(1).succeed('t1', 'a'));

    expect(d.refused(at(2).fail('t1', 'a')).code).toBe('stale-attempt');
  });

  it('refuses a completion for an unknown task', () => {
    expect(dispatcher(QUIET).refused(at(0).succeed('ghost', 'a')).code).toBe('not-found');
  });

  it('changes nothing when it refuses a command', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')));
    const before = d.history.length;

    d.refused(at(1).succeed('t1', 'a', 7));

    expect(d.history.length).toBe(before);
    expect(statusOf(d.state, 't1')).toBe('assigned');
    expect(types(d.when(at(2).succeed('t1', 'a', 1)))).toEqual(['TaskCompleted']);
  });
});

describe('cancellation', () => {
  it('cancels a queued task by request', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('t1')));

    const events = d.when(at(1).cancel('t1'));

    expect(events).toEqual([{ type: 'TaskCancelled', v: 1, at: 1, taskId: 't1', by: 'request', reason: 'cancelled by request' }]);
    expect(statusOf(d.state, 't1')).toBe('cancelled');
    expect(d.state.waiting).toBe(0);
  });

  it('cancels a running task and gives its slot to the next one', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(0).submit(task('t2')));

    const events = d.when(at(1).cancel('t1', 'user changed their mind'));

    expect(types(events)).toEqual(['TaskCancelled', 'TaskAssigned']);
    expect(only(events, 'TaskCancelled').reason).toBe('user changed their mind');
    expect(assignments(events)).toEqual(['t2→a']);
  });

  it('refuses a late completion of a cancelled task', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(1).cancel('t1'));

    expect(d.refused(at(2).succeed('t1', 'a')).code).toBe('stale-attempt');
  });

  it('ignores cancelling a finished task and refuses an unknown one', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('t1')), at(1).succeed('t1', 'a'));

    expect(d.when(at(2).cancel('t1'))).toEqual([]);
    expect(d.refused(at(2).cancel('ghost')).code).toBe('not-found');
  });

  it('cancels a task waiting out a retry backoff', () => {
    const d = dispatcher({ ...QUIET, retry: { backoffMs: 1000 } }).given(
      at(0).ready('a', []), at(0).submit(task('t1')), at(1).fail('t1', 'a', 1, true),
    );

    expect(types(d.when(at(2).cancel('t1')))).toEqual(['TaskCancelled']);
    expect(d.when(at(5000).tick())).toEqual([]);
  });
});

describe('heartbeats', () => {
  const policy = { health: { agentTimeoutMs: 1000 } };

  it('coalesces heartbeats closer than a quarter of agentTimeoutMs', () => {
    const d = dispatcher(policy).given(at(0).ready('a', []));

    const recorded = [100, 249, 250, 300, 499, 500].map((t) => types(d.when(at(t).heartbeat('a'))).join());

    expect(recorded).toEqual(['', '', 'AgentHeartbeat', '', '', 'AgentHeartbeat']);
  });
});

describe('ready', () => {
  it('registers a new agent with its capabilities and a capacity of 1 by default', () => {
    const d = dispatcher(QUIET);

    const events = d.when(at(0).ready('a', ['py', 'gpu', 'py']));

    expect(events).toEqual([{ type: 'AgentRegistered', v: 1, at: 0, agentId: 'a', capabilities: ['gpu', 'py'], capacity: 1 }]);
  });

  it('is idempotent: the same ready again records at most a sign of life', () => {
    const d = dispatcher({ health: { agentTimeoutMs: 1000 } }).given(at(0).ready('a', ['py']));

    expect(d.when(at(10).ready('a', ['py']))).toEqual([]);
    expect(types(d.when(at(300).ready('a', ['py'])))).toEqual(['AgentIdle']);
  });

  it('updates capabilities, and routes by the new ones', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', ['py']), at(1).submit(task('render', { requires: ['gpu'] })));

    const events = d.when(at(2).ready('a', ['gpu']));

    expect(types(events)).toEqual(['AgentRegistered', 'TaskAssigned']);
    expect(assignments(d.when(at(3).submit(task('script', { requires: ['py'] }))))).toEqual([]);
  });

  it('sets the capacity rather than adding to it', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('a', [], 1),
      ...[1, 2, 3].map((i) => at(0).submit(task(`t${i}`))),
    );

    const raised = d.when(at(1).ready('a', [], 2));
    const again = d.when(at(2).ready('a', [], 2));

    expect(assignments(raised)).toEqual(['t2→a']);
    expect(assignments(again)).toEqual([]);
    expect(d.state.agents.get('a')?.running.size).toBe(2);
  });

  it('keeps running tasks when capacity is lowered, and assigns nothing more until below it', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('a', [], 2),
      ...[1, 2, 3].map((i) => at(0).submit(task(`t${i}`))),
      at(1).ready('a', [], 1),
    );

    expect(assignments(d.when(at(2).succeed('t1', 'a')))).toEqual([]);
    expect(assignments(d.when(at(3).succeed('t2', 'a')))).toEqual(['t3→a']);
  });
});

describe('policy change', () => {
  it('records a changed policy and applies it to later submissions', () => {
    const d = dispatcher(QUIET);

    const changed = d.when(at(0).changePolicy({ ...QUIET, priorityRules: [{ match: { source: 'cron' }, priority: 'low' }] }));
    const submitted = d.when(at(1).submit(task('nightly', { source: 'cron' })));

    expect(types(changed)).toEqual(['PolicyChanged']);
    expect(only(submitted, 'TaskSubmitted').priority).toBe('low');
  });

  it('records nothing when the policy is unchanged', () => {
    const d = dispatcher(QUIET);

    expect(d.when(at(0).changePolicy(QUIET))).toEqual([]);
  });
});

describe('time', () => {
  it('handles a command stamped before the last event at the time of that event', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(1000).submit(task('t1')));

    const events = d.when(at(400).succeed('t1', 'a'));

    expect(only(events, 'TaskCompleted')).toMatchObject({ at: 1000, durationMs: 0 });
  });
});

describe('why', () => {
  it('gives every decision a rule', () => {
    const d = dispatcher({ health: { agentTimeoutMs: 1000 }, affinity: { maxWaitMs: 100 }, retry: { backoffMs: 10 } }).given(
      at(0).ready('a1', []),
      at(0).ready('a2', []),
      at(0).submit(task('s1', { sessionRef: 'S' })),
      at(0).submit(task('s2', { sessionRef: 'S' })),
      at(1).submit(task('s3', { sessionRef: 'S', deadline: 100, estimatedDurationMs: 80 })),
      at(200).tick(),
      at(300).fail('s1', 'a1', 1, true),
      at(400).tick(),
      at(2000).tick(),
    );
    const decisions = d.history.filter((e) => !['TaskSubmitted', 'AgentRegistered', 'TaskCompleted', 'TaskFailed', 'AgentHeartbeat'].includes(e.type));

    expect(new Set(decisions.map((e) => e.type)).size).toBeGreaterThan(3);
    for (const e of decisions) expect((e as { why?: { rule?: unknown } }).why?.rule, e.type).toEqual(expect.any(String));
  });
});
