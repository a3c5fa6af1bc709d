import { describe, expect, it } from 'vitest';
import { assignments, at, dispatcher, ofType, only, task, types } from './support/dispatcher.js';

const policy = { health: { agentTimeoutMs: 1e9 }, affinity: { maxWaitMs: 1000 } };

/** Agents `a1` and `a2`; session "S" was last handled by a1, which is now `busy` or free. */
function sessionOwnedByA1(busy: boolean) {
  const d = dispatcher(policy).given(
    at(0).ready('a1', ['llm']),
    at(0).ready('a2', ['llm']),
    at(0).submit(task('s1', { sessionRef: 'S', requires: ['llm'] })),
  );
  if (!busy) d.given(at(10).succeed('s1', 'a1'));
  return d;
}

describe('session affinity', () => {
  it('routes a follow-up to the agent that owns the session', () => {
    const d = sessionOwnedByA1(false);

    const events = d.when(at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })));

    // a2 has been idle longer, so load balancing alone would pick it.
    expect(assignments(events)).toEqual(['f1→a1']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({ rule: 'affinity', sessionRef: 'S' });
  });

  it('records the agent that first handles a session as its owner', () => {
    const d = sessionOwnedByA1(true);

    expect(d.state.sessions.get('S')).toBe('a1');
  });

  it('defers a follow-up while the owner is busy instead of sending it elsewhere', () => {
    const d = sessionOwnedByA1(true);

    const events = d.when(at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })));

    expect(types(events)).toEqual(['TaskSubmitted', 'TaskDeferred']);
    const deferred = only(events, 'TaskDeferred', 'f1');
    expect([deferred.agentId, deferred.until]).toEqual(['a1', 1020]);
    expect(deferred.why).toMatchObject({ rule: 'affinity-wait', sessionRef: 'S', agentId: 'a1', hard: false, maxWaitMs: 1000 });
  });

  it('gives the waiting follow-up to the owner when it frees up within the wait', () => {
    const d = sessionOwnedByA1(true).given(at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })));

    const events = d.when(at(900).succeed('s1', 'a1'));

    expect(assignments(events)).toEqual(['f1→a1']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({ rule: 'affinity', sessionRef: 'S', waitedMs: 880 });
  });

  it('serves the session owner\'s waiters before other queued work', () => {
    const d = sessionOwnedByA1(true).given(
      at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })),
      at(21).submit(task('other', { requires: ['llm'] })), // goes to a2
      at(22).submit(task('queued', { priority: 'high', requires: ['llm'] })),
    );

    expect(assignments(d.when(at(30).succeed('s1', 'a1')))).toEqual(['f1→a1']);
  });

  it('gives a freed owner the next waiter whose tenant is not at its quota when the first one\'s is', () => {
    const d = dispatcher({ ...policy, quotas: { q: { maxConcurrent: 1 } } }).given(
      at(0).ready('a2', []),
      at(0).submit(task('sess', { sessionRef: 'S' })), // a2 owns S
      at(1).submit(task('q-held', { tenant: 'q', priority: 'critical', sessionRef: 'S' })), // held for a2
      at(2).submit(task('acme-held', { sessionRef: 'S' })), // held for a2, behind q-held
      at(3).ready('a1', []),
      at(3).submit(task('q-run', { tenant: 'q' })), // a1: q is now at its quota
    );

    const events = d.when(at(4).succeed('sess', 'a2'));

    expect(assignments(events)).toEqual(['acme-held→a2']);
    expect(only(events, 'TaskAssigned', 'acme-held').why.rule).toBe('affinity');
  });

  it('falls back to another agent when the owner stays busy past maxWaitMs', () => {
    const d = sessionOwnedByA1(true).given(at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })));

    expect(d.when(at(1019).tick())).toEqual([]);
    const events = d.when(at(1020).tick());

    expect(types(events)).toEqual(['TaskRequeued', 'TaskAssigned']);
    const requeued = only(events, 'TaskRequeued', 'f1');
    expect([requeued.reason, requeued.attempt, requeued.why.rule]).toEqual(['affinity-wait-expired', 1, 'affinity-fallback']);
    expect(assignments(events)).toEqual(['f1→a2']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({ rule: 'affinity-fallback', sessionRef: 'S', previousAgent: 'a1' });
  });

  it('moves the session to the agent that took the fallback', () => {
    const d = sessionOwnedByA1(true).given(
      at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })),
      at(1020).tick(),
    );

    expect(d.state.sessions.get('S')).toBe('a2');
  });

  it('never falls back from hard affinity while the owner is alive', () => {
    const d = sessionOwnedByA1(true);

    const submitted = d.when(at(20).submit(task('f1', { sessionRef: 'S', affinity: 'hard', requires: ['llm'] })));
    const muchLater = d.when(at(1_000_000).tick());
    const freed = d.when(at(1_000_001).succeed('s1', 'a1'));

    const deferred = only(submitted, 'TaskDeferred', 'f1');
    expect(deferred.until).toBeUndefined();
    expect(deferred.why).toMatchObject({ rule: 'affinity-wait', hard: true, maxWaitMs: null });
    expect(muchLater).toEqual([]);
    expect(assignments(freed)).toEqual(['f1→a1']);
  });

  it('falls back at once when the owner has left', () => {
    const d = sessionOwnedByA1(false).given(at(15).remove('a1'));

    const events = d.when(at(20).submit(task('f1', { sessionRef: 'S', affinity: 'hard', requires: ['llm'] })));

    expect(ofType(events, 'TaskDeferred')).toEqual([]);
    expect(assignments(events)).toEqual(['f1→a2']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({ rule: 'affinity-fallback', previousAgent: 'a1' });
  });

  it('falls back at once when the owner has timed out', () => {
    const d = dispatcher({ ...policy, health: { agentTimeoutMs: 1000 } }).given(
      at(0).ready('a1', []),
      at(0).ready('a2', []),
      at(0).submit(task('s1', { sessionRef: 'S' })),
      at(10).succeed('s1', 'a1'),
      at(600).heartbeat('a2'),
      at(1200).heartbeat('a2'),
    );
    expect(d.state.agents.get('a1')?.alive).toBe(false);

    const events = d.when(at(1300).submit(task('f1', { sessionRef: 'S' })));

    expect(assignments(events)).toEqual(['f1→a2']);
    expect(only(events, 'TaskAssigned').why.rule).toBe('affinity-fallback');
  });

  it('releases tasks waiting for an owner that leaves, even hard ones', () => {
    const d = dispatcher(policy).given(
      at(0).ready('a1', []),
      at(0).ready('a2', [], 2),
      at(0).submit(task('s1', { sessionRef: 'S' })), // a2 has more free slots: it owns S
      at(1).ready('a2', [], 1),
      at(1).submit(task('filler')), // a1 → both busy
      at(2).submit(task('f1', { sessionRef: 'S', affinity: 'hard' })),
      at(3).ready('a3', []),
    );
    expect(d.state.tasks.get('f1')?.holdAgent).toBe('a2');

    const events = d.when(at(50).remove('a2'));

    const requeued = ofType(events, 'TaskRequeued');
    expect(requeued.map((e) => `${e.taskId}:${e.reason}`)).toEqual(['s1:agent-left', 'f1:affinity-agent-lost']);
    expect(requeued[1].why.rule).toBe('affinity-fallback');
    expect(assignments(events)).toEqual(['s1→a3']);
    expect(d.state.tasks.get('f1')?.status).toBe('queued');
  });

  it('does not wait for an owner that lacks a capability the follow-up requires', () => {
    const d = sessionOwnedByA1(true).given(at(1).ready('gpu', ['gpu', 'llm']));

    const events = d.when(at(20).submit(task('f1', { sessionRef: 'S', requires: ['gpu'] })));

    expect(assignments(events)).toEqual(['f1→gpu']);
    expect(only(events, 'TaskAssigned').why.rule).toBe('affinity-fallback');
  });

  it('does not give a waiting follow-up to an owner that re-registered without a capability it requires', () => {
    const d = sessionOwnedByA1(true).given(at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })));

    const events = d.when(at(30).ready('a1', ['other'], 2));

    expect(types(events)).toEqual(['AgentRegistered', 'TaskRequeued', 'TaskAssigned']);
    expect(only(events, 'TaskRequeued', 'f1')).toMatchObject({ reason: 'affinity-agent-lost', attempt: 1, why: { rule: 'affinity-fallback', agentState: 'capabilities-changed' } });
    expect(assignments(events)).toEqual(['f1→a2']);
  });

  it('keeps a follow-up waiting for an owner that re-registers with capabilities still covering it', () => {
    const d = sessionOwnedByA1(true).given(at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })));

    const events = d.when(at(30).ready('a1', ['llm', 'other'], 2));

    expect(types(events)).toEqual(['AgentRegistered', 'TaskAssigned']);
    expect(assignments(events)).toEqual(['f1→a1']);
  });
});
