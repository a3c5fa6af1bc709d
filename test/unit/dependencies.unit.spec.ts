import { describe, expect, it } from 'vitest';
import { assignments, at, dispatcher, ofType, only, statusOf, task, types } from './support/dispatcher.js';

const QUIET = { health: { agentTimeoutMs: 1e9 } };

describe('dependencies', () => {
  it('rejects a task that depends on an unknown id, naming the field', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('known')));

    const events = d.when(at(1).submit(task('child', { dependsOn: ['known', 'nope'] })));

    const rejected = only(events, 'TaskRejected');
    expect(rejected.reason).toBe('unknown-dependency');
    expect(rejected.message).toContain('dependsOn.1');
    expect(rejected.message).toContain('"nope"');
  });

  it('treats a rejected submission as unknown to depend on', () => {
    const d = dispatcher({ ...QUIET, quotas: { acme: { maxQueued: 1 } } }).given(
      at(0).submit(task('q1')),
      at(0).submit(task('q2')), // rejected
    );

    expect(only(d.when(at(1).submit(task('child', { tenant: 'other', dependsOn: ['q2'] }))), 'TaskRejected').reason)
      .toBe('unknown-dependency');
  });

  it('holds a task back until every dependency has succeeded', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('a', [], 3),
      at(0).submit(task('p1')),
      at(0).submit(task('p2')),
    );

    const submitted = d.when(at(1).submit(task('child', { dependsOn: ['p1', 'p2'] })));
    const afterFirst = d.when(at(2).succeed('p1', 'a'));

    expect(types(submitted)).toEqual(['TaskSubmitted']); // a has a free slot, yet child waits
    expect(statusOf(d.state, 'child')).toBe('blocked');
    expect(types(afterFirst)).toEqual(['TaskCompleted']);
    expect(statusOf(d.state, 'child')).toBe('blocked');
  });

  it('unblocks and dispatches the task when its last dependency succeeds', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('a', [], 3),
      at(0).submit(task('p1')),
      at(0).submit(task('p2')),
      at(1).submit(task('child', { dependsOn: ['p1', 'p2'] })),
      at(2).succeed('p1', 'a'),
    );

    const events = d.when(at(3).succeed('p2', 'a'));

    expect(types(events)).toEqual(['TaskCompleted', 'TaskUnblocked', 'TaskAssigned']);
    expect(only(events, 'TaskUnblocked', 'child').why).toMatchObject({ rule: 'dependencies-met', dependsOn: ['p1', 'p2'], last: 'p2' });
    expect(assignments(events)).toEqual(['child→a']);
  });

  it('queues at once a task whose dependencies already succeeded', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('p1')), at(1).succeed('p1', 'a'));

    expect(assignments(d.when(at(2).submit(task('child', { dependsOn: ['p1'] }))))).toEqual(['child→a']);
  });

  it('cancels the dependents of a failed task transitively', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('a', []),
      at(0).submit(task('p1')),
      at(1).submit(task('child', { dependsOn: ['p1'] })),
      at(1).submit(task('grandchild', { dependsOn: ['child'] })),
      at(1).submit(task('bystander')),
    );

    const events = d.when(at(2).fail('p1', 'a'));

    expect(types(events)).toEqual(['TaskFailed', 'TaskCancelled', 'TaskCancelled', 'TaskAssigned']);
    const [child, grandchild] = ofType(events, 'TaskCancelled');
    expect([child.taskId, child.by, child.reason]).toEqual(['child', 'dependency', 'dependency p1 failed']);
    expect(child.why).toMatchObject({ rule: 'dependency-failed', dependency: 'p1', dependencyStatus: 'failed' });
    expect([grandchild.taskId, grandchild.reason]).toEqual(['grandchild', 'dependency child cancelled']);
    expect([statusOf(d.state, 'child'), statusOf(d.state, 'grandchild')]).toEqual(['cancelled', 'cancelled']);
    expect(assignments(events)).toEqual(['bystander→a']);
  });

  it('cancels the dependents of a cancelled task', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('p1')), at(1).submit(task('child', { dependsOn: ['p1'] })));

    const events = d.when(at(2).cancel('p1', 'not needed'));

    expect(ofType(events, 'TaskCancelled').map((e) => `${e.taskId}:${e.by}:${e.reason}`))
      .toEqual(['p1:request:not needed', 'child:dependency:dependency p1 cancelled']);
  });

  it('cancels the dependents of a dead-lettered task', () => {
    const d = dispatcher({ ...QUIET, retry: { maxAttempts: 1 } }).given(
      at(0).ready('a', []),
      at(0).submit(task('p1')),
      at(1).submit(task('child', { dependsOn: ['p1'] })),
    );

    const events = d.when(at(2).fail('p1', 'a', 1, true));

    expect(types(events)).toEqual(['TaskFailed', 'TaskDeadLettered', 'TaskCancelled']);
    expect(only(events, 'TaskCancelled', 'child').reason).toBe('dependency p1 dead-lettered');
  });

  it('cancels at submission a task whose dependency already failed', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', []), at(0).submit(task('p1')), at(1).fail('p1', 'a'));

    const events = d.when(at(2).submit(task('child', { dependsOn: ['p1'] })));

    expect(types(events)).toEqual(['TaskSubmitted', 'TaskCancelled']);
    expect(only(events, 'TaskCancelled', 'child')).toMatchObject({ by: 'dependency', reason: 'dependency p1 failed' });
    expect(statusOf(d.state, 'child')).toBe('cancelled');
  });

  it('keeps waiting on the remaining dependencies when one is retried', () => {
    const d = dispatcher({ ...QUIET, retry: { maxAttempts: 3, backoffMs: 100 } }).given(
      at(0).ready('a', []),
      at(0).submit(task('p1')),
      at(1).submit(task('child', { dependsOn: ['p1'] })),
      at(2).fail('p1', 'a', 1, true),
      at(102).tick(), // attempt 2 → a
    );

    const events = d.when(at(200).succeed('p1', 'a', 2));

    expect(statusOf(d.state, 'child')).not.toBe('cancelled');
    expect(types(events)).toEqual(['TaskCompleted', 'TaskUnblocked', 'TaskAssigned']);
  });

  it('cancels a critical task whose dependency is the low task shed to make room for it', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 2, hardCap: 3 } }).given(
      at(0).submit(task('l1', { priority: 'low' })),
      at(1).submit(task('h1', { priority: 'high' })),
      at(2).submit(task('h2', { priority: 'high' })),
    );

    const events = d.when(at(3).submit(task('c1', { priority: 'critical', dependsOn: ['l1'] })));

    expect(types(events)).toEqual(['TaskSubmitted', 'TaskShed', 'TaskCancelled']);
    expect(only(events, 'TaskCancelled', 'c1').reason).toBe('dependency l1 shed');
    expect(statusOf(d.state, 'c1')).toBe('cancelled');
  });

  it('cancels a dependent once when two of its dependencies are lost together', () => {
    const d = dispatcher({ health: { agentTimeoutMs: 1000 }, retry: { maxAttempts: 1 } }).given(
      at(0).ready('a', [], 2),
      at(0).submit(task('p1')),
      at(0).submit(task('p2')),
      at(1).submit(task('child', { dependsOn: ['p1', 'p2'] })),
    );

    const events = d.when(at(1000).tick());

    expect(types(events)).toEqual(['AgentTimedOut', 'TaskDeadLettered', 'TaskCancelled', 'TaskDeadLettered']);
    expect(ofType(events, 'TaskCancelled').map((e) => e.taskId)).toEqual(['child']);
  });

  it('cancels a critical task whose dependency is cancelled by the shed that makes room for it', () => {
    const d = dispatcher({ ...QUIET, shedding: { highWatermark: 2, hardCap: 3 } }).given(
      at(0).submit(task('l1', { priority: 'low' })),
      at(1).submit(task('mid', { priority: 'high', dependsOn: ['l1'] })),
      at(2).submit(task('h1', { priority: 'high' })),
    );

    const events = d.when(at(3).submit(task('c1', { priority: 'critical', dependsOn: ['mid'] })));

    expect(ofType(events, 'TaskCancelled').map((e) => `${e.taskId}:${e.reason}`)).toEqual(['mid:dependency l1 shed', 'c1:dependency mid cancelled']);
    expect(statusOf(d.state, 'c1')).toBe('cancelled');
  });
});
