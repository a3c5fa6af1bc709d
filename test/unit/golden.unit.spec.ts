import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  canonical, commandRuns, evolve, fromSnapshot, initialState, parseEvent, redecideRun, toSnapshot,
  type DispatchEvent, type DispatcherState,
} from '../../src/domain/index.js';
import { dashboard, dashboardProjection, type DashboardView } from '../../src/projections/dashboardProjection.js';
import { taskView } from '../../src/projections/taskHistory.js';
import { GOLDEN_DASHBOARD, GOLDEN_HISTORY, writeGolden } from '../fixtures/makeGolden.js';

/**
 * The committed history is a record, as in Temporal's replay tests: any change to how history is
 * read (evolve, the projections) or decided (decide, scheduling) shows up here as a failure. If the
 * change is intended, regenerate with UPDATE_GOLDEN=1 and review the diff of both files.
 */

let history: DispatchEvent[];
let golden: unknown;

beforeAll(() => {
  if (process.env.UPDATE_GOLDEN === '1') writeGolden();
  history = readFileSync(GOLDEN_HISTORY, 'utf8').split('\n').filter((l) => l !== '').map((l, i) => {
    try {
      return parseEvent(JSON.parse(l));
    } catch (e) {
      throw new Error(`golden-history.jsonl line ${i + 1}: ${(e as Error).message}`);
    }
  });
  golden = JSON.parse(readFileSync(GOLDEN_DASHBOARD, 'utf8'));
});

function replay(events: readonly DispatchEvent[]): { state: DispatcherState; view: DashboardView } {
  const state = initialState();
  const view = dashboardProjection.initial();
  for (const e of events) {
    evolve(state, e);
    dashboardProjection.apply(view, e);
  }
  return { state, view };
}

const lastAt = (): number => history[history.length - 1].at;
/** The dashboard as JSON would carry it (what the golden file holds). */
const asJson = (x: unknown): unknown => JSON.parse(JSON.stringify(x));

describe('the golden history', () => {
  it('replays into exactly the committed dashboard', () => {
    const { state, view } = replay(history);
    expect(asJson(dashboard(view, state, lastAt()))).toEqual(golden);
  });

  it('is reproduced event for event by re-deciding every recorded command', () => {
    const state = initialState();
    const view = dashboardProjection.initial();
    let index = 0;
    let runs = 0;
    for (const run of commandRuns(history)) {
      const divergence = redecideRun(state, run, index);
      if (divergence) {
        const rec = divergence.recorded.map(canonical).join('\n    ');
        const red = divergence.redecided.map(canonical).join('\n    ');
        expect.fail(`history diverges at event ${divergence.index} (${canonical(divergence.command)})${divergence.error ? `: ${divergence.error}` : ''}\n  recorded:\n    ${rec}\n  re-decided:\n    ${red}`);
      }
      for (const e of run) dashboardProjection.apply(view, e);
      index += run.length;
      runs++;
    }
    expect(index).toBe(history.length);
    expect(runs).toBeGreaterThan(100);
    expect(asJson(dashboard(view, state, lastAt()))).toEqual(golden);
  });

  it('gives the same dashboard when the projection is checkpointed and restored halfway', () => {
    const half = Math.floor(history.length / 2);
    const first = replay(history.slice(0, half));
    const view = dashboardProjection.load(JSON.parse(JSON.stringify(dashboardProjection.save(first.view))));
    for (const e of history.slice(half)) {
      evolve(first.state, e);
      dashboardProjection.apply(view, e);
    }
    expect(asJson(dashboard(view, first.state, lastAt()))).toEqual(golden);
  });

  it('gives the same dashboard from a state restored from a snapshot as from the replayed state, all along', () => {
    const { state, view } = replay([]);
    for (let i = 0; i < history.length; i++) {
      evolve(state, history[i]);
      dashboardProjection.apply(view, history[i]);
      if (i % 5 !== 0 && i !== history.length - 1) continue;
      const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(state))));
      expect(dashboard(view, restored, history[i].at), `after event ${i}`).toEqual(dashboard(view, state, history[i].at));
    }
  });

  it('exercises every dispatch rule', () => {
    const types = new Set(history.map((e) => e.type));
    const rules = new Set(history.flatMap((e) => ('why' in e && e.why ? [e.why.rule] : [])));
    const requeues = new Set(history.flatMap((e) => (e.type === 'TaskRequeued' ? [e.reason] : [])));
    const prioritySources = new Set(history.flatMap((e) => (e.type === 'TaskSubmitted' ? [e.prioritySource] : [])));
    expect([...types].sort()).toEqual([
      'AgentHeartbeat', 'AgentIdle', 'AgentLeft', 'AgentRegistered', 'AgentTimedOut', 'PolicyChanged', 'TaskAssigned',
      'TaskCancelled', 'TaskCompleted', 'TaskDeadLettered', 'TaskDeferred', 'TaskEscalated', 'TaskFailed', 'TaskRejected',
      'TaskRequeued', 'TaskShed', 'TaskSubmitted', 'TaskUnblocked',
    ]);
    for (const rule of [
      'load-balance', 'affinity', 'affinity-wait', 'affinity-fallback', 'deadline-tight-fastest', 'deadline-at-risk-fastest',
      'deadline-at-risk', 'aging', 'fairness', 'quota', 'overload-shed', 'make-room-for-critical', 'dependency-failed',
      'dependencies-met', 'agent-timeout', 'agent-timed-out', 'agent-left', 'retry-backoff', 'max-attempts',
    ]) expect(rules, rule).toContain(rule);
    expect([...requeues].sort()).toEqual(['affinity-wait-expired', 'agent-left', 'agent-timed-out', 'retry']);
    expect([...prioritySources].sort()).toEqual(['default', 'rule', 'task']);
    expect(history.some((e) => e.type === 'TaskRejected' && e.reason === 'quota-max-queued')).toBe(true);
    expect(history.some((e) => e.type === 'TaskRejected' && e.reason === 'unknown-dependency')).toBe(true);
    expect(history.some((e) => e.type === 'TaskCancelled' && e.by === 'request')).toBe(true);
    expect(history.length).toBeGreaterThanOrEqual(300);
    expect(history.length).toBeLessThanOrEqual(1000);
  });

  it('ends each scripted task in the status its story implies, from the log alone and with the state', () => {
    const { state } = replay(history);
    const expected: Record<string, [string, number]> = {
      'quantum-1': ['queued', 1], // unroutable: nobody has `quantum`
      'blocked-1': ['blocked', 1],
      'deploy-2': ['queued', 2], // its only capable agent left mid-run
      'long-2': ['assigned', 1],
      'flaky-1': ['succeeded', 2],
      'broken-1': ['dead-lettered', 2],
      'fail-1': ['failed', 1],
      'fail-3': ['cancelled', 1],
      'cancel-2': ['cancelled', 1],
      'cron-16': ['shed', 1],
      'cron-15': ['shed', 1], // made room for a critical task
      'globex-5': ['rejected', 1],
      'long-1': ['succeeded', 2], // requeued when llm-3 timed out
      'sess-a3': ['succeeded', 1],
    };
    for (const [id, [status, attempt]] of Object.entries(expected)) {
      for (const v of [taskView(id, history), taskView(id, history, state)]) {
        expect(v, id).toBeDefined();
        expect([v?.status, v?.attempt], id).toEqual([status, attempt]);
      }
    }
    expect(taskView('sess-a3', history)?.agent).toBe('llm-2');
    expect(taskView('sess-a3', history)?.history.find((h) => h.type === 'TaskAssigned')?.why?.rule).toBe('affinity');
  });
});
