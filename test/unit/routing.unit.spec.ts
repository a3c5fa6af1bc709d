import { describe, expect, it } from 'vitest';
import { unroutable } from '../../src/domain/index.js';
import { assignments, at, dispatcher, ofType, only, statusOf, task, types } from './support/dispatcher.js';

const QUIET = { health: { agentTimeoutMs: 1e9 } };

describe('priority', () => {
  it('dispatches critical before high before normal before low, whatever the order of arrival', () => {
    const d = dispatcher(QUIET).given(
      at(0).submit(task('low', { priority: 'low' })),
      at(1).submit(task('normal', { priority: 'normal' })),
      at(2).submit(task('high', { priority: 'high' })),
      at(3).submit(task('critical', { priority: 'critical' })),
    );

    const events = d.when(at(10).ready('a', [], 4));

    expect(assignments(events)).toEqual(['critical→a', 'high→a', 'normal→a', 'low→a']);
    expect(ofType(events, 'TaskAssigned').map((e) => e.priority)).toEqual(['critical', 'high', 'normal', 'low']);
  });

  it('serves one level first in, first out', () => {
    const d = dispatcher(QUIET).given(
      at(0).submit(task('first')),
      at(1).submit(task('second')),
      at(2).submit(task('third')),
    );

    expect(assignments(d.when(at(10).ready('a', [], 3)))).toEqual(['first→a', 'second→a', 'third→a']);
  });

  it('takes the priority of a task without one from the first matching policy rule', () => {
    const d = dispatcher({
      ...QUIET,
      priorityRules: [
        { match: { source: 'cron' }, priority: 'low' },
        { match: { tenant: 'vip' }, priority: 'critical' },
        { match: { tenant: 'vip', type: 'report' }, priority: 'high' },
      ],
    });

    const cron = only(d.when(at(0).submit(task('cron', { source: 'cron', tenant: 'vip' }))), 'TaskSubmitted');
    const vip = only(d.when(at(0).submit(task('vip', { tenant: 'vip', type: 'report' }))), 'TaskSubmitted');
    const plain = only(d.when(at(0).submit(task('plain'))), 'TaskSubmitted');
    const own = only(d.when(at(0).submit(task('own', { source: 'cron', priority: 'high' }))), 'TaskSubmitted');

    expect([cron.priority, cron.prioritySource]).toEqual(['low', 'rule']);
    expect([vip.priority, vip.prioritySource]).toEqual(['critical', 'rule']);
    expect([plain.priority, plain.prioritySource]).toEqual(['normal', 'default']);
    expect([own.priority, own.prioritySource]).toEqual(['high', 'task']);
  });
});

describe('aging', () => {
  const policy = { ...QUIET, aging: { stepMs: 1000 } };

  it('lifts a waiting low task to normal after one step', () => {
    const d = dispatcher(policy).given(at(0).submit(task('old', { priority: 'low' })));

    expect(d.when(at(999).tick())).toEqual([]);
    const escalated = only(d.when(at(1000).tick()), 'TaskEscalated', 'old');

    expect([escalated.from, escalated.to, escalated.why.rule]).toEqual(['low', 'normal', 'aging']);
    expect(escalated.why).toMatchObject({ waitedMs: 1000, stepMs: 1000 });
  });

  it('lifts one level per step and never to critical', () => {
    const d = dispatcher(policy).given(at(0).submit(task('old', { priority: 'low' })));

    const events = d.when(at(2500).tick());
    const later = d.when(at(100_000).tick());

    expect(ofType(events, 'TaskEscalated').map((e) => `${e.from}→${e.to}`)).toEqual(['low→normal', 'normal→high']);
    expect(later).toEqual([]);
    expect(d.state.tasks.get('old')?.level).toBe(1);
  });

  it('dispatches an aged task ahead of newer work of its new level, and says it was raised', () => {
    const d = dispatcher(policy).given(
      at(0).submit(task('old', { priority: 'low' })),
      at(1500).submit(task('newer', { priority: 'normal' })),
      at(1500).submit(task('newest', { priority: 'normal' })),
    );

    const events = d.when(at(1600).ready('a', [], 1));

    expect(assignments(events)).toEqual(['old→a']);
    expect(only(events, 'TaskAssigned').priority).toBe('normal');
    expect(only(events, 'TaskAssigned').why.raisedFrom).toBe('low');
  });

  it('never ages high or critical work', () => {
    const d = dispatcher(policy).given(
      at(0).submit(task('h', { priority: 'high' })),
      at(0).submit(task('c', { priority: 'critical' })),
    );

    expect(d.when(at(50_000).tick())).toEqual([]);
  });
});

describe('capability routing', () => {
  it('sends a task only to an agent that has every capability it requires', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('plain', ['py']),
      at(5).ready('gpu', ['gpu', 'py']),
    );

    const events = d.when(at(10).submit(task('train', { requires: ['py', 'gpu'] })));

    expect(assignments(events)).toEqual(['train→gpu']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({ rule: 'load-balance', candidates: 1, excluded: { busy: 0, incapable: 1 } });
  });

  it('does not treat a partial match as capable', () => {
    const d = dispatcher(QUIET).given(at(0).ready('half', ['gpu']));

    expect(assignments(d.when(at(1).submit(task('t', { requires: ['gpu', 'py'] }))))).toEqual([]);
    expect(assignments(d.when(at(2).ready('full', ['gpu', 'py', 'rust'])))).toEqual(['t→full']);
  });

  it('matches requirements whatever their order or repetition', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', ['b', 'a']));

    expect(assignments(d.when(at(1).submit(task('t', { requires: ['a', 'b', 'a'] }))))).toEqual(['t→a']);
  });

  it('keeps a task no agent can serve queued and counts it as unroutable', () => {
    const d = dispatcher(QUIET).given(at(0).ready('py', ['py']));

    const events = d.when(at(1).submit(task('render', { requires: ['gpu'] })));

    expect(types(events)).toEqual(['TaskSubmitted']);
    expect(statusOf(d.state, 'render')).toBe('queued');
    expect(unroutable(d.state)).toBe(1);
  });

  it('dispatches an unroutable task as soon as a capable agent registers', () => {
    const d = dispatcher(QUIET).given(at(0).ready('py', ['py']), at(1).submit(task('render', { requires: ['gpu'] })));

    expect(assignments(d.when(at(2).ready('gpu', ['gpu'])))).toEqual(['render→gpu']);
    expect(unroutable(d.state)).toBe(0);
  });

  it('does not count a task whose capable agents are merely busy as unroutable', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('gpu', ['gpu']),
      at(1).submit(task('first', { requires: ['gpu'] })),
      at(2).submit(task('second', { requires: ['gpu'] })),
    );

    expect(statusOf(d.state, 'second')).toBe('queued');
    expect(unroutable(d.state)).toBe(0);
  });

  it('counts a task as unroutable again when its only capable agent leaves', () => {
    const d = dispatcher(QUIET).given(
      at(0).ready('gpu', ['gpu']),
      at(1).submit(task('first', { requires: ['gpu'] })),
      at(2).submit(task('second', { requires: ['gpu'] })),
    );

    d.when(at(3).remove('gpu'));

    expect(unroutable(d.state)).toBe(2);
  });

  it('lets lower work through to an agent that cannot serve the higher work waiting', () => {
    const d = dispatcher(QUIET).given(
      at(0).submit(task('urgent-gpu', { priority: 'critical', requires: ['gpu'] })),
      at(1).submit(task('chore', { priority: 'low' })),
    );

    expect(assignments(d.when(at(2).ready('cpu', [])))).toEqual(['chore→cpu']);
  });
});

describe('load balancing', () => {
  it('prefers the agent with the most free slots', () => {
    const d = dispatcher(QUIET).given(at(0).ready('small', [], 1), at(5).ready('big', [], 3));

    const events = d.when(at(10).submit(task('t')));

    expect(assignments(events)).toEqual(['t→big']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({ rule: 'load-balance', freeSlots: 3, candidates: 2 });
  });

  it('among equally free agents prefers the one idle longest', () => {
    const d = dispatcher(QUIET).given(at(0).ready('b', []), at(5).ready('a', []));

    const first = d.when(at(10).submit(task('t1')));
    d.given(at(20).succeed('t1', 'b'));
    const second = d.when(at(30).submit(task('t2')));

    expect(assignments(first)).toEqual(['t1→b']);
    expect(only(first, 'TaskAssigned').why.idleMs).toBe(10);
    expect(assignments(second)).toEqual(['t2→a']);
  });

  it('breaks a full tie by the lowest agent id', () => {
    const d = dispatcher(QUIET).given(at(0).ready('zed', []), at(0).ready('amy', []), at(0).ready('kim', []));

    expect(assignments(d.when(at(1).submit(task('t'))))).toEqual(['t→amy']);
  });

  it('spreads a burst over the fleet instead of filling one agent', () => {
    const d = dispatcher(QUIET).given(at(0).ready('a', [], 2), at(0).ready('b', [], 2));

    const events = d.given(at(1).submit(task('t1')), at(1).submit(task('t2')), at(1).submit(task('t3'))).history;

    expect(assignments(events)).toEqual(['t1→a', 't2→b', 't3→a']);
  });
});
