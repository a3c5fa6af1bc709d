import { describe, expect, it } from 'vitest';
import { queueDepth } from '../../src/domain/index.js';
import { assignments, at, dispatcher, ofType, only, statusOf, task, types } from './support/dispatcher.js';

const QUIET = { health: { agentTimeoutMs: 1e9 } };

describe('quotas', () => {
  const policy = { ...QUIET, quotas: { acme: { maxConcurrent: 1 } } };

  it('defers a tenant\'s work beyond maxConcurrent instead of assigning it', () => {
    const d = dispatcher(policy).given(at(0).ready('a', [], 3), at(1).submit(task('first')));

    const events = d.when(at(2).submit(task('second')));

    expect(types(events)).toEqual(['TaskSubmitted', 'TaskDeferred']);
    expect(only(events, 'TaskDeferred', 'second').why).toMatchObject({ rule: 'quota', running: 1, maxConcurrent: 1, level: 'normal' });
    expect(statusOf(d.state, 'second')).toBe('queued');
  });

  it('records the quota deferral once, not on every later dispatch', () => {
    const d = dispatcher(policy).given(at(0).ready('a', [], 3), at(1).submit(task('first')), at(2).submit(task('second')));

    expect(ofType(d.when(at(3).submit(task('other', { tenant: 'globex' }))), 'TaskDeferred')).toEqual([]);
  });

  it('lets other tenants use the free slots meanwhile', () => {
    const d = dispatcher(policy).given(at(0).ready('a', [], 3), at(1).submit(task('first')), at(2).submit(task('second')));

    expect(assignments(d.when(at(3).submit(task('other', { tenant: 'globex' }))))).toEqual(['other→a']);
  });

  it('assigns the deferred work once a running task of the tenant ends', () => {
    const d = dispatcher(policy).given(at(0).ready('a', [], 3), at(1).submit(task('first')), at(2).submit(task('second')));

    expect(assignments(d.when(at(3).succeed('first', 'a')))).toEqual(['second→a']);
  });

  it('applies a raised quota from a policy change at once', () => {
    const d = dispatcher(policy).given(at(0).ready('a', [], 3), at(1).submit(task('first')), at(2).submit(task('second')));

    const events = d.when(at(3).changePolicy({ ...QUIET, quotas: { acme: { maxConcurrent: 2 } } }));

    expect(types(events)).toEqual(['PolicyChanged', 'TaskAssigned']);
  });

  // Open bug: the affinity waiter is handed to its owner without the quota check (scheduling.ts affinityDispatch).
  it('does not let a task held for its session owner exceed maxConcurrent', () => {
    const d = dispatcher({ ...policy, affinity: { maxWaitMs: 1000 } }).given(
      at(0).ready('a1', []),
      at(0).ready('a2', []),
      at(0).submit(task('theirs', { tenant: 'globex', sessionRef: 'S' })), // a1 owns S
      at(1).submit(task('follow-up', { sessionRef: 'S' })), // waits for a1
      at(2).submit(task('mine')), // a2: acme at its quota of 1
    );

    const events = d.when(at(3).succeed('theirs', 'a1'));

    expect(assignments(events)).toEqual([]);
    expect(d.state.tenants.get('acme')?.running).toBe(1);
  });

  it('rejects a submission beyond maxQueued and names the quota', () => {
    const d = dispatcher({ ...QUIET, quotas: { acme: { maxQueued: 2 } } }).given(
      at(0).submit(task('q1')),
      at(0).submit(task('q2')),
    );

    const events = d.when(at(1).submit(task('q3')));

    const rejected = only(events, 'TaskRejected');
    expect([rejected.task.id, rejected.reason]).toEqual(['q3', 'quota-max-queued']);
    expect(rejected.message).toContain('maxQueued 2');
    expect(statusOf(d.state, 'q3')).toBe('rejected');
    expect(types(d.when(at(1).submit(task('g1', { tenant: 'globex' }))))).toEqual(['TaskSubmitted']);
  });

  it('counts blocked work against maxQueued but not running work', () => {
    const d = dispatcher({ ...QUIET, quotas: { acme: { maxQueued: 2 } } }).given(
      at(0).ready('a', []),
      at(0).submit(task('running')),
      at(0).submit(task('blocked', { dependsOn: ['running'] })),
      at(0).submit(task('queued')),
    );

    expect(types(d.when(at(1).submit(task('one-too-many'))))).toEqual(['TaskRejected']);
  });

  it('accepts a rejected id again once there is room', () => {
    const d = dispatcher({ ...QUIET, quotas: { acme: { maxQueued: 1 } } }).given(
      at(0).submit(task('q1')),
      at(0).submit(task('q2')),
      at(1).cancel('q1'),
    );

    expect(types(d.when(at(2).submit(task('q2'))))).toEqual(['TaskSubmitted']);
    expect(statusOf(d.state, 'q2')).toBe('queued');
  });
});

describe('load shedding', () => {
  /** Four normal tasks waiting, no agents: exactly at the high watermark of 4. */
  const atWatermark = () => dispatcher({ ...QUIET, shedding: { highWatermark: 4 } }).given(
    ...[1, 2, 3, 4].map((i) => at(0).submit(task(`n${i}`))),
  );

  it('sheds new low work once the queue reaches the high watermark', () => {
    const d = atWatermark();

    const events = d.when(at(1).submit(task('l1', { priority: 'low' })));

    expect(types(events)).toEqual(['TaskShed']);
    const shed = only(events, 'TaskShed', 'l1');
    expect(shed.task?.id).toBe('l1');
    expect(shed.why).toMatchObject({ rule: 'overload-shed', waiting: 4, threshold: 4, highWatermark: 4 });
    expect(statusOf(d.state, 'l1')).toBe('shed');
  });

  it('admits low work below the high watermark', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 4 } }).given(
      ...[1, 2, 3].map((i) => at(0).submit(task(`n${i}`))),
    );

    expect(types(d.when(at(1).submit(task('l1', { priority: 'low' }))))).toEqual(['TaskSubmitted']);
  });

  it('sheds normal work above 1.25× and high work above 1.5× the watermark', () => {
    const d = atWatermark();

    const verdicts = [
      ['n5', 'normal'], ['n6', 'normal'], ['h1', 'high'], ['h2', 'high'], ['c1', 'critical'],
    ].map(([id, priority]) => types(d.when(at(1).submit(task(id, { priority: priority as 'normal' })))).join());

    // 4 waiting: normal admitted (threshold 5); 5: normal shed, high admitted (threshold 6); 6: high shed.
    expect(verdicts).toEqual(['TaskSubmitted', 'TaskShed', 'TaskSubmitted', 'TaskShed', 'TaskSubmitted']);
  });

  it('always admits critical work', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 1, hardCap: 2 } }).given(at(0).submit(task('n1')));

    const events = [1, 2, 3, 4].flatMap((i) => d.when(at(1).submit(task(`c${i}`, { priority: 'critical' }))));

    expect(ofType(events, 'TaskSubmitted')).toHaveLength(4);
    expect(ofType(events, 'TaskShed')).toEqual([]);
  });

  it('at the hard cap sheds the newest queued low task to make room for critical work', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 2, hardCap: 3 } }).given(
      at(0).submit(task('l1', { priority: 'low' })),
      at(1).submit(task('l2', { priority: 'low' })),
      at(2).submit(task('h1', { priority: 'high' })),
    );

    const events = d.when(at(3).submit(task('c1', { priority: 'critical' })));

    expect(types(events)).toEqual(['TaskSubmitted', 'TaskShed']);
    const shed = only(events, 'TaskShed', 'l2');
    expect(shed.task).toBeUndefined();
    expect(shed.why).toMatchObject({ rule: 'make-room-for-critical', waiting: 3, hardCap: 3, admitted: 'c1' });
    expect([statusOf(d.state, 'l1'), statusOf(d.state, 'l2'), statusOf(d.state, 'c1')]).toEqual(['queued', 'shed', 'queued']);
    expect(d.state.waiting).toBe(3);
  });

  it('defaults the hard cap to twice the high watermark', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 1 } }).given(
      at(0).submit(task('l1', { priority: 'low' })),
      at(0).submit(task('c1', { priority: 'critical' })),
    );

    expect(types(d.when(at(1).submit(task('c2', { priority: 'critical' }))))).toEqual(['TaskSubmitted', 'TaskShed']);
  });

  it('lets a task shed at admission be submitted again once the queue drains', () => {
    const d = atWatermark().given(at(1).submit(task('l1', { priority: 'low' })), at(2).cancel('n1'));

    expect(types(d.when(at(3).submit(task('l1', { priority: 'low' }))))).toEqual(['TaskSubmitted']);
    expect(statusOf(d.state, 'l1')).toBe('queued');
  });

  it('cancels the dependents of a task shed to make room', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 2, hardCap: 3 } }).given(
      at(0).submit(task('l1', { priority: 'low' })),
      at(1).submit(task('after-l1', { priority: 'high', dependsOn: ['l1'] })),
      at(2).submit(task('h1', { priority: 'high' })),
    );

    const events = d.when(at(3).submit(task('c1', { priority: 'critical' })));

    expect(types(events)).toEqual(['TaskSubmitted', 'TaskShed', 'TaskCancelled']);
    expect(only(events, 'TaskCancelled', 'after-l1').reason).toBe('dependency l1 shed');
  });
});

describe('idempotent submission', () => {
  it('records a resubmitted id once', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('t1')));

    expect(d.when(at(1).submit(task('t1')))).toEqual([]);
    expect(d.when(at(2).submit(task('t1', { priority: 'critical', tenant: 'other' })))).toEqual([]);
    expect(queueDepth(d.state).normal).toBe(1);
    expect(d.state.waiting).toBe(1);
  });

  it('does not run a resubmitted task a second time', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', [], 2), at(0).submit(task('t1')), at(1).succeed('t1', 'a'));

    expect(d.when(at(2).submit(task('t1')))).toEqual([]);
    expect(statusOf(d.state, 't1')).toBe('succeeded');
  });
});
