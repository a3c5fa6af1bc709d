import { describe, expect, it } from 'vitest';
import {
  canonical, commandRuns, fromSnapshot, handle, initialState, parsePolicy, queueDepth, redecideRun, toSnapshot, unroutable,
  type Command, type DispatchEvent, type DispatcherState, type StateSnapshot,
} from '../../src/domain/index.js';
import { at, dispatcher, task } from './support/dispatcher.js';

const policy = {
  health: { agentTimeoutMs: 5000 },
  affinity: { maxWaitMs: 400 },
  aging: { stepMs: 700 },
  retry: { maxAttempts: 3, backoffMs: 300 },
  fairness: { minSamples: 2, windowMs: 3000 },
  quotas: { quota: { maxConcurrent: 1 } },
};

/** A state with something in every place a task can wait, agents alive and dead, sessions and a fairness window. */
function busyHistory() {
  return dispatcher(policy).given(
    at(0).ready('a1', ['llm']),
    at(0).ready('a2', ['llm', 'gpu'], 2),
    at(0).ready('gone', ['llm']),
    at(10).submit(task('s1', { sessionRef: 'S', requires: ['llm'] })), // a2
    at(11).submit(task('h1', { sessionRef: 'H', requires: ['llm'], tenant: 'quota' })), // a1
    at(12).submit(task('r1', { requires: ['llm'] })), // a2
    at(13).submit(task('x1', { requires: ['llm'], tenant: 'other' })), // gone
    at(19).ready('spare', ['llm']),
    at(20).submit(task('f1', { sessionRef: 'S', requires: ['llm'] })), // waits for a2
    at(21).submit(task('f2', { sessionRef: 'H', affinity: 'hard', requires: ['llm'] })), // waits for a1
    at(22).submit(task('filler', { requires: ['llm'] })), // spare
    at(23).submit(task('child', { dependsOn: ['r1'] })), // blocked
    at(24).submit(task('render', { requires: ['cuda'], priority: 'low' })), // unroutable
    at(25).submit(task('late', { priority: 'low', deadline: 4000, estimatedDurationMs: 1000 })),
    at(26).submit(task('q2', { tenant: 'quota' })),
    at(30).remove('gone'), // x1 requeued
    at(40).fail('filler', 'spare', 1, true), // retry at 340; spare takes other work
    at(50).submit(task('more', { priority: 'high' })),
  );
}

const continuation: Command[] = [
  at(100).heartbeat('a1'),
  at(200).succeed('s1', 'a2'),
  at(350).tick(),
  at(500).ready('a3', ['llm', 'cuda']),
  at(800).tick(),
  at(1500).heartbeat('a2'),
  at(1600).submit(task('s9', { sessionRef: 'S', requires: ['llm'] })),
  at(2000).tick(),
  at(3100).tick(),
  at(6000).tick(),
  at(6001).ready('a1', ['llm'], 3),
  at(7000).tick(),
];

function play(s: DispatcherState, commands: Command[]): string[] {
  return commands.map((c) => {
    try {
      return canonical(handle(s, c));
    } catch (e) {
      return `refused: ${(e as Error).message}`;
    }
  });
}

describe('snapshots', () => {
  it('restores a state that decides exactly as the original', () => {
    const original = busyHistory().state;
    const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(original))) as StateSnapshot);

    expect(play(restored, continuation)).toEqual(play(original, continuation));
  });

  it('restores the counts the dashboard reads', () => {
    const original = busyHistory().state;
    const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(original))) as StateSnapshot);

    expect(queueDepth(restored)).toEqual(queueDepth(original));
    expect(unroutable(restored)).toBe(unroutable(original));
    expect([restored.waiting, restored.blocked, restored.freeAgents]).toEqual([original.waiting, original.blocked, original.freeAgents]);
    expect(toSnapshot(restored)).toEqual(toSnapshot(original));
  });

  it('packs the fairness window, and still restores snapshots that hold it as [at, tenant] pairs', () => {
    const original = busyHistory().state;
    const snap = toSnapshot(original);
    const w = snap.windowPacked!;
    expect(w.dt.length).toBeGreaterThan(0);
    // The older shape of the same window.
    let t = 0;
    const pairs = w.dt.map((dt, i): [number, string] => [(t += dt), w.tenants[w.tenant[i]]]);
    expect(pairs.map(([at]) => at)).toEqual(original.windowAt.slice(original.windowHead));
    const older = { ...snap, windowPacked: undefined, window: pairs };
    const restored = fromSnapshot(JSON.parse(JSON.stringify(older)) as StateSnapshot);

    expect(toSnapshot(restored)).toEqual(snap);
    expect(play(restored, continuation)).toEqual(play(original, continuation));
  });

  it('covers every waiting place in the scenario it is tested with', () => {
    const s = busyHistory().state;
    const places = new Set([...s.tasks.values()].map((t) => t.wait));

    expect(places).toEqual(new Set(['ready', 'retry', 'hold', 'blocked', null]));
    expect([...s.agents.values()].some((a) => !a.alive)).toBe(true);
  });

  it('restores fair-share targets exactly, however tenants came and went', () => {
    // Weights summed as tenants become active and idle (0.1 + 0.2 + 0.3 − 0.1) give 0.5000000000000001;
    // a restored state sums the active ones afresh (0.5).
    const d = dispatcher({
      health: { agentTimeoutMs: 1e9 },
      fairness: { minSamples: 0, deferFactor: 1.25, weights: { x: 0.1, y: 0.2, z: 0.3 } },
    }).given(
      at(0).submit(task('x1', { tenant: 'x' })),
      at(0).submit(task('y1', { tenant: 'y' })),
      at(0).submit(task('z1', { tenant: 'z' })),
      at(0).submit(task('z2', { tenant: 'z' })),
      at(0).submit(task('z3', { tenant: 'z' })),
      at(1).cancel('x1'),
      at(2).ready('a', [], 4),
      at(3).submit(task('y2', { tenant: 'y', priority: 'low' })),
      at(3).submit(task('z4', { tenant: 'z' })),
    );
    const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(d.state))) as StateSnapshot);
    const next = [at(4).succeed('y1', 'a')];

    // z has 3 of 4 dispatches against 1.25 × (0.3 ÷ 0.5) = 0.75: exactly at the limit, so not deferred.
    expect(play(restored, next)).toEqual(play(d.state, next));
  });

  it('stays identical to the original through a later change of tenant weights', () => {
    // The original met tenants x, y, z in that order; the restored state meets them in dispatch order z, y, x.
    const d = dispatcher({ health: { agentTimeoutMs: 1e9 } }).given(
      at(0).submit(task('x1', { tenant: 'x' })),
      at(0).submit(task('y1', { tenant: 'y', priority: 'high' })),
      at(0).submit(task('z1', { tenant: 'z', priority: 'critical' })),
      at(1).ready('a', [], 3),
    );
    const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(d.state))) as StateSnapshot);
    const next = [at(2).changePolicy({ health: { agentTimeoutMs: 1e9 }, fairness: { weights: { x: 0.1, y: 0.2, z: 0.3 } } })];

    expect(play(restored, next)).toEqual(play(d.state, next));
    expect(canonical(toSnapshot(restored))).toBe(canonical(toSnapshot(d.state)));
  });

  it('refuses a snapshot of an unknown format', () => {
    const snap = { ...toSnapshot(initialState()), format: 2 } as unknown as StateSnapshot;

    expect(() => fromSnapshot(snap)).toThrow(/unknown snapshot format 2/);
  });
});

describe('re-deciding recorded history', () => {
  function verify(history: DispatchEvent[], p = parsePolicy(policy)) {
    const s = initialState(p);
    let index = 0;
    for (const run of commandRuns(history)) {
      const divergence = redecideRun(s, run, index);
      if (divergence) return divergence;
      index += run.length;
    }
    return undefined;
  }

  it('gives back exactly the recorded events', () => {
    const d = busyHistory().given(...continuation);

    expect(verify(d.history)).toBeUndefined();
  });

  it('splits history into one run per command that recorded anything', () => {
    const d = dispatcher(policy).given(at(0).ready('a', []), at(1).submit(task('t1')), at(2).succeed('t1', 'a'));

    expect([...commandRuns(d.history)].map((r) => r.map((e) => e.type))).toEqual([
      ['AgentRegistered'], ['TaskSubmitted', 'TaskAssigned'], ['TaskCompleted'],
    ]);
  });

  it('reports the first run that the dispatcher decides differently', () => {
    const d = busyHistory();
    const tampered = d.history.map((e) => (e.type === 'TaskAssigned' && e.taskId === 'x1' ? { ...e, agentId: 'a1' } : e));
    const index = tampered.findIndex((e) => e.type === 'TaskAssigned' && e.taskId === 'x1');

    const divergence = verify(tampered);

    expect(divergence).toBeDefined();
    expect(divergence?.recorded.some((e) => e.type === 'TaskAssigned' && e.taskId === 'x1')).toBe(true);
    expect(divergence?.index).toBeLessThanOrEqual(index);
    expect(divergence?.command.type).toBe('SubmitTask');
  });

  it('reports a run re-decided under another policy', () => {
    const d = busyHistory();

    expect(verify(d.history, parsePolicy({ ...policy, affinity: { maxWaitMs: 0 } }))).toBeDefined();
  });
});
