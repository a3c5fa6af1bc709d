import { describe, expect, it } from 'vitest';
import { commandRuns, fromSnapshot, handle, initialState, parsePolicy, redecideRun, toSnapshot, type Command } from '../../src/domain/index.js';
import { at, dispatcher, task, types } from './support/dispatcher.js';

describe('retention of finished tasks', () => {
  it('forgets the oldest finished tasks beyond retention.finishedTasks, keeping live ones', () => {
    const d = dispatcher({ retention: { finishedTasks: 2 } });
    d.given(at(0).ready('a1'));
    for (let i = 1; i <= 4; i++) d.given(at(i).submit(task(`t${i}`)), at(i).succeed(`t${i}`, 'a1'));
    d.given(at(10).submit(task('live')));
    expect([...d.state.tasks.keys()].sort()).toEqual(['live', 't3', 't4']);
    expect(d.state.tasks.get('live')?.status).toBe('assigned');
  });

  it('accepts a forgotten id as a new task, and refuses a dependency on it as unknown', () => {
    const d = dispatcher({ retention: { finishedTasks: 1 } });
    d.given(at(0).ready('a1'), at(1).submit(task('old')), at(1).succeed('old', 'a1'), at(2).submit(task('newer')), at(2).succeed('newer', 'a1'));
    expect(d.state.tasks.has('old')).toBe(false);
    expect(types(d.when(at(3).submit(task('child', { dependsOn: ['old'] }))))).toEqual(['TaskRejected']);
    expect(types(d.when(at(4).submit(task('old'))))).toEqual(['TaskSubmitted', 'TaskAssigned']);
  });

  it('evicts the same tasks after a snapshot restore as the original state, and re-decides identically', () => {
    const policy = parsePolicy({ retention: { finishedTasks: 3 } });
    const commands: Command[] = [at(0).ready('a1', [], 10)];
    for (let i = 0; i < 12; i++) {
      commands.push(at(i * 10 + 1).submit(task(`t${i}`)));
      // A rejected id submitted again replaces its record: retention must not count it twice.
      if (i % 4 === 0) commands.push(at(i * 10 + 2).submit(task(`dup${i}`, { dependsOn: ['nope'] })), at(i * 10 + 3).submit(task(`dup${i}`)));
      commands.push(at(i * 10 + 5).succeed(`t${i}`, 'a1'));
    }
    const original = initialState(policy);
    const events = commands.slice(0, 14).flatMap((c) => handle(original, c));
    const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(original))));
    for (const c of commands.slice(14)) {
      const a = handle(original, c);
      expect(handle(restored, c)).toEqual(a);
      events.push(...a);
    }
    expect([...restored.tasks.keys()].sort()).toEqual([...original.tasks.keys()].sort());
    expect(restored.finishedLive).toBe(original.finishedLive);
    const replay = initialState(parsePolicy({}));
    handle(replay, { type: 'ChangePolicy', at: 0, policy });
    let i = 0;
    for (const run of commandRuns(events)) expect(redecideRun(replay, run, i++)).toBeUndefined();
  });
});
