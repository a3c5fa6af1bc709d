import { describe, expect, it } from 'vitest';
import type { PolicyInput, Priority } from '../../src/domain/index.js';
import { assignments, at, dispatcher, ofType, only, task, types } from './support/dispatcher.js';

const base = { health: { agentTimeoutMs: 1e9 }, fairness: { minSamples: 4, deferFactor: 1.5 } };

/**
 * Tenant "hog" has had all 4 dispatches of the window (its tasks still run on agent `a`, full);
 * then hog submits `hog5` at `hogPriority` and tenant "small" submits `small1` at low priority.
 */
function hogFullFleet(policy: PolicyInput = base, hogPriority: Priority = 'normal') {
  return dispatcher(policy).given(
    at(0).ready('a', [], 4),
    ...[1, 2, 3, 4].map((i) => at(0).submit(task(`hog${i}`, { tenant: 'hog' }))),
    at(10).submit(task('hog5', { tenant: 'hog', priority: hogPriority })),
    at(11).submit(task('small1', { tenant: 'small', priority: 'low' })),
  );
}

describe('fairness', () => {
  it('defers a tenant above deferFactor × its fair target while another tenant has eligible work', () => {
    const d = hogFullFleet();

    const events = d.when(at(20).succeed('hog1', 'a'));

    expect(types(events)).toEqual(['TaskCompleted', 'TaskDeferred', 'TaskAssigned']);
    const deferred = only(events, 'TaskDeferred', 'hog5');
    expect(deferred.why).toMatchObject({ rule: 'fairness', share: 1, target: 0.5, deferFactor: 1.5, window: 4, servedInstead: 'small', level: 'normal' });
    expect(assignments(events)).toEqual(['small1→a']);
  });

  it('serves the over-share tenant when nobody else has eligible work', () => {
    const d = hogFullFleet().given(at(20).succeed('hog1', 'a'));

    const events = d.when(at(30).succeed('hog2', 'a'));

    expect(assignments(events)).toEqual(['hog5→a']);
    expect(ofType(events, 'TaskDeferred')).toEqual([]);
  });

  it('serves the over-share tenant when the others\' work has no free capable agent', () => {
    const d = dispatcher(base).given(
      at(0).ready('a', [], 4),
      ...[1, 2, 3, 4].map((i) => at(0).submit(task(`hog${i}`, { tenant: 'hog' }))),
      at(10).submit(task('hog5', { tenant: 'hog' })),
      at(11).submit(task('gpu-job', { tenant: 'small', requires: ['gpu'] })),
    );

    const events = d.when(at(20).succeed('hog1', 'a'));

    expect(ofType(events, 'TaskDeferred')).toEqual([]);
    expect(assignments(events)).toEqual(['hog5→a']);
  });

  it('does not defer before the window holds minSamples dispatches', () => {
    const d = hogFullFleet({ ...base, fairness: { minSamples: 5, deferFactor: 1.5 } });

    const events = d.when(at(20).succeed('hog1', 'a'));

    expect(assignments(events)).toEqual(['hog5→a']);
  });

  it('never defers critical work, even of an over-share tenant', () => {
    const d = hogFullFleet(base, 'critical');

    const events = d.when(at(20).succeed('hog1', 'a'));

    expect(ofType(events, 'TaskDeferred')).toEqual([]);
    expect(assignments(events)).toEqual(['hog5→a']);
  });

  it('raises a tenant\'s fair target by its weight', () => {
    // weight 3 of 4: target 0.75, deferred only above 1.125 — a share of 1 is fine.
    const d = hogFullFleet({ ...base, fairness: { ...base.fairness, weights: { hog: 3 } } });

    const events = d.when(at(20).succeed('hog1', 'a'));

    expect(ofType(events, 'TaskDeferred')).toEqual([]);
    expect(assignments(events)).toEqual(['hog5→a']);
  });

  it('forgets dispatches older than the window', () => {
    const d = hogFullFleet({ ...base, fairness: { ...base.fairness, windowMs: 1000 } });

    const events = d.when(at(1500).succeed('hog1', 'a'));

    expect(ofType(events, 'TaskDeferred')).toEqual([]);
    expect(assignments(events)).toEqual(['hog5→a']);
  });

  it('within a level serves tenants by lowest share of the window, not first come', () => {
    const d = dispatcher({ ...base, fairness: { minSamples: 1000 } }).given(
      at(0).ready('a', [], 4),
      at(0).submit(task('big1', { tenant: 'big' })),
      at(0).submit(task('big2', { tenant: 'big' })),
      at(0).submit(task('big3', { tenant: 'big' })),
      at(0).submit(task('mid1', { tenant: 'mid' })),
      at(10).submit(task('big4', { tenant: 'big' })),
      at(11).submit(task('mid2', { tenant: 'mid' })),
      at(12).submit(task('new1', { tenant: 'new' })),
    );

    const order = [20, 21, 22].flatMap((t, i) => assignments(d.when(at(t).succeed(`big${i + 1}`, 'a'))));

    expect(order).toEqual(['new1→a', 'mid2→a', 'big4→a']);
  });

  it('orders tenants by share ÷ weight', () => {
    const d = dispatcher({ ...base, fairness: { minSamples: 1000, weights: { big: 4 } } }).given(
      at(0).ready('a', [], 3),
      at(0).submit(task('big1', { tenant: 'big' })),
      at(0).submit(task('big2', { tenant: 'big' })),
      at(0).submit(task('mid1', { tenant: 'mid' })),
      at(10).submit(task('mid2', { tenant: 'mid' })),
      at(11).submit(task('big3', { tenant: 'big' })),
    );

    // big: 2 dispatches ÷ 4 = 0.5 < mid: 1 ÷ 1.
    expect(assignments(d.when(at(20).succeed('big1', 'a')))).toEqual(['big3→a']);
  });

  it('records a deferral for every over-share tenant passed over, not only the first', () => {
    // Four active tenants (fair target 0.25 each, deferred above 0.25); one and two are both over.
    const d = dispatcher({ ...base, fairness: { minSamples: 4, deferFactor: 1 } }).given(
      at(0).ready('a', [], 4),
      at(0).submit(task('one1', { tenant: 'one' })),
      at(0).submit(task('one2', { tenant: 'one' })),
      at(0).submit(task('two1', { tenant: 'two' })),
      at(0).submit(task('two2', { tenant: 'two' })),
      at(10).submit(task('one3', { tenant: 'one', priority: 'high' })),
      at(10).submit(task('two3', { tenant: 'two', priority: 'high' })),
      at(10).submit(task('three1', { tenant: 'three', priority: 'low' })),
      at(10).submit(task('four1', { tenant: 'four', priority: 'low' })),
    );

    const events = d.when(at(20).succeed('one1', 'a'));

    expect(assignments(events)).toEqual(['four1→a']);
    expect(ofType(events, 'TaskDeferred').map((e) => `${e.taskId}:${e.why.rule}`).sort()).toEqual(['one3:fairness', 'two3:fairness']);
  });

  // Open bug: TaskRec.deferred is one flag for quota and fairness, so a task once deferred for quota is
  // later passed over for fairness with no TaskDeferred recorded (scheduling.ts dispatch, `!x.task.deferred`).
  it('records a fairness deferral for a task that was earlier deferred for quota', () => {
    const d = dispatcher({ ...base, fairness: { minSamples: 3, deferFactor: 1.5 }, quotas: { hog: { maxConcurrent: 1 } } }).given(
      at(0).ready('a', [], 2),
      at(0).submit(task('hog1', { tenant: 'hog' })),
      at(1).succeed('hog1', 'a'),
      at(1).submit(task('hog2', { tenant: 'hog' })),
      at(2).succeed('hog2', 'a'),
      at(2).submit(task('hog3', { tenant: 'hog' })),
      at(3).succeed('hog3', 'a'),
      at(3).submit(task('hog4', { tenant: 'hog' })), // running: hog at its quota
      at(4).submit(task('hog5', { tenant: 'hog', priority: 'high' })), // deferred for quota
      at(5).submit(task('small1', { tenant: 'small', priority: 'low' })), // second slot
      at(6).submit(task('small2', { tenant: 'small', priority: 'low' })), // waits
    );
    expect(only(d.history, 'TaskDeferred', 'hog5').why.rule).toBe('quota');

    // hog is below its quota again but has 4 of 5 dispatches (0.8 > 1.5 × 0.5): small2 goes first.
    const events = d.when(at(10).succeed('hog4', 'a'));

    expect(assignments(events)).toEqual(['small2→a']);
    expect(ofType(events, 'TaskDeferred').map((e) => `${e.taskId}:${e.why.rule}`)).toEqual(['hog5:fairness']);
  });
});
