import { describe, expect, it } from 'vitest';
import { prng } from '../../bench/support.js';
import { evolve, initialState, parseEvent, type DispatchEvent } from '../../src/domain/index.js';
import {
  dashboard, dashboardProjection, AGENTS_LISTED, FAIRNESS_TOP_N, type Dashboard, type DashboardView,
} from '../../src/projections/dashboardProjection.js';
import {
  emptyHistogram, loadHistogram, merge, percentile, record, saveHistogram, RELATIVE_ERROR,
} from '../../src/projections/logHistogram.js';
import { explainText, formatWhy, taskView } from '../../src/projections/taskHistory.js';
import type { Projection } from '../../src/runtime/projection.js';
import { at, dispatcher, task, type Scenario } from './support/dispatcher.js';

const T0 = Date.parse('2025-03-03T09:00:00.000Z');
const sec = (s: number) => at(T0 + s * 1000);

/** Run the scenario's history through the projection as the runtime would, live. */
function liveView(sc: Scenario): DashboardView {
  const view = dashboardProjection.initial();
  for (const e of sc.history) dashboardProjection.apply(view, e);
  return view;
}

/** Rebuild state and view from the log alone: a fresh state, every event parsed as read back. */
function replayed(events: readonly DispatchEvent[], now: number): Dashboard {
  const state = initialState();
  const view = dashboardProjection.initial();
  for (const raw of events) {
    const e = parseEvent(JSON.parse(JSON.stringify(raw)));
    evolve(state, e);
    dashboardProjection.apply(view, e);
  }
  return dashboard(view, state, now);
}

/**
 * Two agents, three tenants. By hand:
 *  t1 high   acme    0 s → a1 (wait 0), done at 3 s (3 s, deadline 10 s: met)
 *  t2 normal globex  0 s → a2 (wait 0), fails at 5 s (5 s, final)
 *  t3 crit.  acme    1 s, waits for a1 until 3 s (wait 2 s), done at 6 s (3 s)
 *  t4 low    acme    1 s, waits for a2 until 5 s (wait 4 s), done at 7 s (2 s)
 *  t5 low    globex  1 s: shed at admission (2 waiting ≥ watermark 2); its deadline is missed
 *  t8 normal initech 5.5 s depends on t2 (failed): cancelled at once; its deadline is missed
 *  t6 normal initech 6 s → a1 (wait 0), done at 10 s (4 s) after its 9 s deadline: missed
 *  t7 normal acme    10 s → a1 (wait 0), cancelled by request at 10 s: not counted for the SLA
 *  t9 depends on an unknown task: rejected
 */
function smallFleet(): Scenario {
  return dispatcher().given(
    sec(0).changePolicy({ shedding: { highWatermark: 2 } }),
    sec(0).ready('a1', ['llm']),
    sec(0).ready('a2', ['llm']),
    sec(0).submit(task('t1', { tenant: 'acme', requires: ['llm'], priority: 'high', deadline: T0 + 10_000, estimatedDurationMs: 4000 })),
    sec(0).submit(task('t2', { tenant: 'globex', requires: ['llm'] })),
    sec(1).submit(task('t3', { tenant: 'acme', requires: ['llm'], priority: 'critical' })),
    sec(1).submit(task('t4', { tenant: 'acme', requires: ['llm'], priority: 'low' })),
    sec(1).submit(task('t5', { tenant: 'globex', requires: ['llm'], priority: 'low', deadline: T0 + 60_000 })),
    sec(3).succeed('t1', 'a1'),
    sec(5).fail('t2', 'a2'),
    sec(5.5).submit(task('t8', { tenant: 'initech', requires: ['llm'], dependsOn: ['t2'], deadline: T0 + 60_000 })),
    sec(6).succeed('t3', 'a1'),
    sec(6).submit(task('t6', { tenant: 'initech', requires: ['llm'], deadline: T0 + 9000, estimatedDurationMs: 1000 })),
    sec(7).succeed('t4', 'a2'),
    sec(10).succeed('t6', 'a1'),
    sec(10).submit(task('t7', { tenant: 'acme', requires: ['llm'], deadline: T0 + 60_000 })),
    sec(10).cancel('t7'),
    sec(10).submit(task('t9', { tenant: 'acme', dependsOn: ['nope'] })),
  );
}

const zeroPct = { p50: 0, p95: 0, p99: 0 };

describe('dashboard projection', () => {
  it('has the shape of a runtime projection', () => {
    const p: Projection<DashboardView> = dashboardProjection;
    expect(p.name).toBe('dashboard');
  });

  it('computes waits, durations, SLA, fairness, throughput and counts that match a hand count', () => {
    const sc = smallFleet();
    const d = dashboard(liveView(sc), sc.state, T0 + 10_000);
    expect(d).toEqual({
      as_of: '2025-03-03T09:00:10.000Z',
      queue_depth: { critical: 0, high: 0, normal: 0, low: 0 },
      agent_utilization: { busy: 0, idle: 2, total: 2 },
      avg_wait_time_seconds: { critical: 2, high: 0, normal: 0, low: 4 },
      wait_time_percentiles_seconds: {
        critical: { p50: 2, p95: 2, p99: 2 }, high: zeroPct, normal: zeroPct, low: { p50: 4, p95: 4, p99: 4 },
      },
      avg_task_duration_seconds: 3.4, // (3 + 5 + 3 + 2 + 4) / 5
      sla_compliance_pct: 25, // t1 met; t5, t8, t6 missed; t7 withdrawn
      sla: { met: 1, missed: 3 },
      fairness_distribution: { acme: 0.667, globex: 0.167, initech: 0.167 }, // dispatches t1 t3 t4 t7 | t2 | t6
      throughput: { completed_per_second: 0.067, window_seconds: 60, completed_total: 4, submitted_total: 7, assigned_total: 6 },
      counts: {
        deferred: 0, deferrals: 0, affinity_waits: 0, shed: 1, unroutable: 0, dead_lettered: 0, rejected: 1, cancelled: 2,
        failed: 1, escalated: 0, aged: 0, requeued: 0, agent_timeouts: 0, blocked: 0,
      },
      agents: [
        // t1 took 0.75 × its estimate, t6 4 ×: speed = 0.7 × (0.7 + 0.3 × 0.75) + 0.3 × 4
        { id: 'a1', state: 'idle', running: 0, capacity: 1, capabilities: ['llm'], completed: 3, failed: 0, speed: 1.848, avg_duration_seconds: 3.333 },
        { id: 'a2', state: 'idle', running: 0, capacity: 1, capabilities: ['llm'], completed: 1, failed: 1, speed: 1, avg_duration_seconds: 3.5 },
      ],
      agents_total: 2,
    });
  });

  it('builds the same dashboard live and by replaying the log from scratch', () => {
    const sc = smallFleet();
    for (const now of [T0 + 10_000, T0 + 45_000, T0 + 3_600_000]) {
      expect(replayed(sc.history, now)).toEqual(dashboard(liveView(sc), sc.state, now));
    }
  });

  it('continues from a checkpoint (save → JSON → load) to the same dashboard, whatever the split', () => {
    const sc = smallFleet();
    const expected = dashboard(liveView(sc), sc.state, T0 + 10_000);
    for (let split = 0; split <= sc.history.length; split++) {
      let view = dashboardProjection.initial();
      sc.history.slice(0, split).forEach((e) => dashboardProjection.apply(view, e));
      view = dashboardProjection.load(JSON.parse(JSON.stringify(dashboardProjection.save(view))));
      sc.history.slice(split).forEach((e) => dashboardProjection.apply(view, e));
      expect(dashboard(view, sc.state, T0 + 10_000)).toEqual(expected);
      expect(dashboardProjection.save(view)).toEqual(dashboardProjection.save(liveView(sc)));
    }
  });

  it('refuses a checkpoint of an unknown format', () => {
    expect(() => dashboardProjection.load({ format: 2 })).toThrow(/format 2/);
    expect(() => dashboardProjection.load(null)).toThrow(/format/);
  });

  it('measures a wait from the last requeue after a retry or a lost agent, and across an affinity fallback', () => {
    const sc = dispatcher({ retry: { maxAttempts: 3, backoffMs: 1000 }, affinity: { maxWaitMs: 2000 } }).given(
      sec(0).ready('a1'),
      sec(0).submit(task('r', { priority: 'high' })), // → a1, wait 0
      sec(1).fail('r', 'a1', 1, true), // retry from 2 s; requeued at 2 s and assigned at once: wait 0
      sec(2).tick(),
      sec(3).succeed('r', 'a1', 2),
      sec(3).submit(task('s1', { priority: 'low', sessionRef: 'S' })), // → a1 by load balance, wait 0
      sec(3).ready('a2'),
      sec(4).submit(task('s2', { priority: 'low', sessionRef: 'S' })), // held for a1 until 6 s
      sec(6).tick(), // fallback → a2: waited 2 s (the hold counts)
    );
    const d = dashboard(liveView(sc), sc.state, T0 + 6000);
    expect(d.avg_wait_time_seconds).toEqual({ critical: 0, high: 0, normal: 0, low: 1 });
    expect(d.wait_time_percentiles_seconds.low).toEqual({ p50: 0, p95: 2, p99: 2 });
    expect(d.counts).toMatchObject({ requeued: 2, affinity_waits: 1, failed: 1, deferred: 0 });
    expect(d.throughput.assigned_total).toBe(4);
  });

  it('counts a task deferred twice once among deferred tasks and twice among deferrals', () => {
    const sc = dispatcher({ quotas: { g: { maxConcurrent: 1 } } }).given(
      sec(0).ready('a1'), sec(0).ready('a2'), sec(0).ready('a3'),
      sec(0).submit(task('g1', { tenant: 'g' })), // → a1
      sec(0).submit(task('g2', { tenant: 'g' })), // deferred by quota (1)
      sec(1).succeed('g1', 'a1'), // g2 → a2
      sec(2).submit(task('g3', { tenant: 'g', priority: 'high' })), // deferred by quota (2)
      sec(5).heartbeat('a1'), sec(5).heartbeat('a3'),
      sec(10).heartbeat('a1'), sec(10).heartbeat('a3'),
      sec(15).tick(), // a2 timed out: g2 requeued; g3 (high) goes first; g2 deferred again (3)
    );
    const d = dashboard(liveView(sc), sc.state, T0 + 15_000);
    expect(d.counts).toMatchObject({ deferred: 2, deferrals: 3, agent_timeouts: 1, requeued: 1 });
    expect(d.queue_depth.normal).toBe(1);
    expect(d.agent_utilization).toEqual({ busy: 1, idle: 1, total: 2 });
    expect(d.agents.map((a) => [a.id, a.state])).toEqual([['a1', 'idle'], ['a2', 'dead'], ['a3', 'busy']]);
  });

  it('shows the top 10 tenants of the fairness window and sums the rest as other', () => {
    const sc = dispatcher().given(sec(0).ready('big', [], 100));
    let n = 0;
    for (let i = 1; i <= 12; i++) {
      const tenant = `t${String(i).padStart(2, '0')}`;
      for (let k = 0; k < 13 - i; k++) {
        sc.given(sec(1).submit(task(`${tenant}-${k}`, { tenant })));
        n++;
      }
    }
    expect(n).toBe(78);
    const d = dashboard(liveView(sc), sc.state, T0 + 1000);
    const expected: Record<string, number> = {};
    for (let i = 1; i <= FAIRNESS_TOP_N; i++) expected[`t${String(i).padStart(2, '0')}`] = Math.round(((13 - i) / 78) * 1000) / 1000;
    expected.other = Math.round((3 / 78) * 1000) / 1000;
    expect(d.fairness_distribution).toEqual(expected);
    expect(d.sla_compliance_pct).toBe(100); // no task had a deadline
    // An hour later every dispatch has left the window, though no event has evicted them yet.
    expect(dashboard(liveView(sc), sc.state, T0 + 1000 + 3_600_000).fairness_distribution).toEqual({});
  });

  it('counts throughput over the trailing 60 s of event time', () => {
    const sc = smallFleet();
    const view = liveView(sc);
    // Completions at 3, 6, 7 and 10 s. At 62.9 s the window is seconds 3..62; at 66.5 s, 7..66.
    expect(dashboard(view, sc.state, T0 + 62_900).throughput.completed_per_second).toBe(0.067);
    expect(dashboard(view, sc.state, T0 + 66_500).throughput.completed_per_second).toBe(0.033);
    expect(dashboard(view, sc.state, T0 + 70_000).throughput.completed_per_second).toBe(0);
    expect(dashboard(view, sc.state, T0 + 70_000).throughput.completed_total).toBe(4);
  });

  it('lists agents sorted by id, at most 100, and counts them all', () => {
    const sc = dispatcher();
    for (let i = 105; i >= 1; i--) sc.given(sec(0).ready(`agent-${String(i).padStart(3, '0')}`));
    sc.given(sec(1).submit(task('x')));
    const d = dashboard(liveView(sc), sc.state, T0 + 1000);
    expect(d.agents).toHaveLength(AGENTS_LISTED);
    expect(d.agents[0].id).toBe('agent-001');
    expect(d.agents[99].id).toBe('agent-100');
    expect(d.agents_total).toBe(105);
    expect(d.agent_utilization).toEqual({ busy: 1, idle: 104, total: 105 });
  });
});

describe('log histogram', () => {

  it('reports percentiles within 1/64 of the exact nearest-rank value, over nine orders of magnitude', () => {
    const random = prng(42);
    const h = emptyHistogram();
    const xs: number[] = [];
    for (let i = 0; i < 20_000; i++) {
      const x = Math.round(10 ** (random() * 9));
      xs.push(x);
      record(h, x);
    }
    xs.sort((a, b) => a - b);
    for (const q of [0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1]) {
      const exact = xs[Math.ceil(q * xs.length) - 1];
      expect(Math.abs(percentile(h, q) - exact), `q=${q}`).toBeLessThanOrEqual(exact * RELATIVE_ERROR);
    }
    expect(h.buckets.length).toBeLessThan(1000);
  });

  it('is exact below 64 ms and when every sample is the same', () => {
    const h = emptyHistogram();
    for (const x of [0, 1, 2, 3, 63]) record(h, x);
    expect([0.2, 0.4, 0.6, 0.8, 1].map((q) => percentile(h, q))).toEqual([0, 1, 2, 3, 63]);
    const same = emptyHistogram();
    for (let i = 0; i < 10; i++) record(same, 123_457);
    expect(percentile(same, 0.5)).toBe(123_457);
    expect(percentile(emptyHistogram(), 0.99)).toBe(0);
    record(same, -5); // a clock that ran back counts as no wait
    expect(same.min).toBe(0);
  });

  it('merges: two halves merged report what the whole does', () => {
    const random = prng(7);
    const whole = emptyHistogram();
    const a = emptyHistogram();
    const b = emptyHistogram();
    for (let i = 0; i < 1000; i++) {
      const x = Math.floor(random() * 100_000);
      record(whole, x);
      record(i % 2 === 0 ? a : b, x);
    }
    merge(a, b);
    expect(a).toEqual(whole);
  });

  it('saves only non-empty buckets and loads them back; refuses inconsistent data', () => {
    const h = emptyHistogram();
    for (const x of [5, 5, 1000, 90_000]) record(h, x);
    const data = saveHistogram(h);
    expect(data.buckets).toHaveLength(3);
    expect(loadHistogram(JSON.parse(JSON.stringify(data)))).toEqual(h);
    expect(() => loadHistogram({ ...data, count: 5 })).toThrow(/count says 5/);
    expect(() => loadHistogram({ ...data, buckets: [[1e9, 1]], count: 1 })).toThrow(/out of range/);
  });
});

describe('task history', () => {
  function story(): Scenario {
    return dispatcher({ retry: { maxAttempts: 2, backoffMs: 1000 }, shedding: { highWatermark: 3 } }).given(
      sec(0).ready('a1', ['llm']),
      sec(0).submit(task('ok', { requires: ['llm'] })), // → a1
      sec(0).submit(task('child', { requires: ['llm'], dependsOn: ['ok'] })), // blocked
      sec(0).submit(task('orphan', { dependsOn: ['nope'] })), // rejected
      sec(0).submit(task('never', { requires: ['gpu'] })), // queued: unroutable
      sec(0).submit(task('flaky', { requires: ['llm'], priority: 'low' })), // queued
      sec(0).submit(task('shed', { requires: ['llm'], priority: 'low' })), // 3 waiting: shed
      sec(1).succeed('ok', 'a1'), // child unblocked → a1
      sec(2).fail('child', 'a1'), // final failure → flaky → a1
      sec(3).fail('flaky', 'a1', 1, true), // retry at 4 s
      sec(4).tick(), // → a1, attempt 2
      sec(5).fail('flaky', 'a1', 2, true), // no attempts left: dead-lettered
      sec(5).submit(task('later', { requires: ['llm'] })), // → a1
      sec(6).submit(task('dropped', { requires: ['gpu'] })),
      sec(6).cancel('dropped', 'changed my mind'),
    );
  }

  it('gives every status a task can have, from the log alone and with the state', () => {
    const sc = story();
    const expected: Record<string, [string, number, string | null]> = {
      ok: ['succeeded', 1, 'a1'],
      child: ['failed', 1, 'a1'],
      orphan: ['rejected', 1, null],
      never: ['queued', 1, null],
      shed: ['shed', 1, null],
      flaky: ['dead-lettered', 2, 'a1'],
      later: ['assigned', 1, 'a1'],
      dropped: ['cancelled', 1, null],
    };
    for (const [id, [status, attempt, agent]] of Object.entries(expected)) {
      for (const v of [taskView(id, sc.history), taskView(id, sc.history, sc.state)]) {
        expect([v?.status, v?.attempt, v?.agent], id).toEqual([status, attempt, agent]);
      }
    }
    const blocked = dispatcher().given(sec(0).submit(task('a')), sec(0).submit(task('b', { dependsOn: ['a'] })));
    expect(taskView('b', blocked.history)?.status).toBe('blocked');
    expect(taskView('b', blocked.history, blocked.state)?.status).toBe('blocked');
    expect(taskView('missing', sc.history)).toBeUndefined();
    expect(explainText('missing', sc.history)).toBeUndefined();
  });

  it('records each fact and decision with its time, a summary, and the recorded why of decisions only', () => {
    const sc = story();
    const stored = sc.history.map((event, i) => ({ version: i + 1, position: i + 1, event }));
    const v = taskView('flaky', stored, sc.state);
    expect(v).toMatchObject({ id: 'flaky', tenant: 'acme', priority: 'low', submittedAt: '2025-03-03T09:00:00.000Z' });
    expect(v?.history.map((h) => [h.at.slice(17), h.type])).toEqual([
      ['00.000Z', 'TaskSubmitted'],
      ['02.000Z', 'TaskAssigned'],
      ['03.000Z', 'TaskFailed'],
      ['04.000Z', 'TaskRequeued'],
      ['04.000Z', 'TaskAssigned'],
      ['05.000Z', 'TaskFailed'],
      ['05.000Z', 'TaskDeadLettered'],
    ]);
    expect(v?.history.filter((h) => h.why).map((h) => h.type)).toEqual(['TaskAssigned', 'TaskRequeued', 'TaskAssigned', 'TaskDeadLettered']);
    expect(v?.history[2].summary).toBe('failed on a1 (attempt 1) after 1 s: boom; retry from 2025-03-03T09:00:04.000Z');
    expect(v?.history[6].why).toEqual({ rule: 'max-attempts', attempts: 2, maxAttempts: 2, lastError: 'boom' });
  });

  it('explains where a task went and why, from the recorded reasons', () => {
    const sc = dispatcher({ affinity: { maxWaitMs: 2000 } }).given(
      sec(0).ready('a1'),
      sec(0).submit(task('s1', { sessionRef: 'S', tenant: 'hooli', type: 'chat' })),
      sec(1).ready('a2'),
      sec(1).submit(task('s2', { sessionRef: 'S', tenant: 'hooli', type: 'chat' })),
      sec(3).tick(),
    );
    const text = explainText('s2', sc.history, sc.state) as string;
    expect(text.split('\n')).toEqual([
      'Task s2: assigned, attempt 1 on a2, priority normal',
      '  tenant hooli, source user, type chat, submitted 2025-03-03T09:00:01.000Z',
      '  session S (soft)',
      'History:',
      '  2025-03-03T09:00:01.000Z  submitted by tenant hooli (source user, type chat) at priority normal (from default); session S (soft affinity)',
      '  2025-03-03T09:00:01.000Z  held for a1 (session affinity) until 2025-03-03T09:00:03.000Z',
      '      why: affinity-wait — its session agent was busy, so it waited for it [sessionRef S, agentId a1, hard false, maxWait 2 s]',
      '  2025-03-03T09:00:03.000Z  requeued for attempt 1 (affinity-wait-expired)',
      '      why: affinity-fallback — its session agent stayed busy or was lost, so any capable agent may take it [agentId a1, waited 2 s, maxWait 2 s]',
      '  2025-03-03T09:00:03.000Z  assigned to a2 (attempt 1, priority normal)',
      '      why: affinity-fallback — its session agent stayed busy or was lost, so any capable agent may take it '
        + '[sessionRef S, previousAgent a1, freeSlots 1, idle 2 s, candidates 1, excluded {busy 1, incapable 0}, waited 2 s, tenantShare 1, tenantTarget 1]',
    ]);
  });

  it('formats an unknown rule with its facts and no gloss', () => {
    expect(formatWhy({ rule: 'new-rule', countMs: 1500, names: ['a', 'b'], flag: null })).toBe('new-rule [count 1.5 s, names a,b, flag null]');
  });
});
