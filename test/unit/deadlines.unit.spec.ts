import { describe, expect, it } from 'vitest';
import { assignments, at, dispatcher, ofType, only, task } from './support/dispatcher.js';

const QUIET = { health: { agentTimeoutMs: 1e9 } };

/**
 * A measured fleet at t=3000: `fast` finished a 1000 ms estimate in 500 ms (speed 0.85), `slow` took
 * 2000 ms (speed 1.3), `fresh` has no history (1.0). `slow` has the most free slots.
 */
function measuredFleet() {
  return dispatcher(QUIET).given(
    at(0).ready('fast', []),
    at(0).submit(task('w1', { estimatedDurationMs: 1000 })),
    at(100).ready('slow', [], 3),
    at(100).submit(task('w2', { estimatedDurationMs: 1000 })),
    at(500).succeed('w1', 'fast'),
    at(2100).succeed('w2', 'slow'),
    at(3000).ready('fresh', []),
  );
}

describe('deadlines', () => {
  it('measures agent speed as an EWMA of actual over estimated duration', () => {
    const d = measuredFleet();

    expect(d.state.agents.get('fast')?.speed).toBeCloseTo(0.85, 10);
    expect(d.state.agents.get('slow')?.speed).toBeCloseTo(1.3, 10);
    expect(d.state.agents.get('fresh')?.speed).toBe(1);
  });

  it('balances load as usual while more than twice the estimate remains', () => {
    const d = measuredFleet();

    const events = d.when(at(3000).submit(task('relaxed', { deadline: 3000 + 2001, estimatedDurationMs: 1000 })));

    expect(assignments(events)).toEqual(['relaxed→slow']);
    expect(only(events, 'TaskAssigned').why.rule).toBe('load-balance');
  });

  it('sends a tight task to the fastest capable agent', () => {
    const d = measuredFleet();

    const events = d.when(at(3000).submit(task('tight', { deadline: 3000 + 1500, estimatedDurationMs: 1000 })));

    expect(assignments(events)).toEqual(['tight→fast']);
    expect(only(events, 'TaskAssigned').why).toMatchObject({
      rule: 'deadline-tight-fastest', remainingMs: 1500, estimatedDurationMs: 1000, speed: 0.85,
    });
  });

  it('counts exactly twice the estimate remaining as tight', () => {
    const d = measuredFleet();

    const events = d.when(at(3000).submit(task('edge', { deadline: 3000 + 2000, estimatedDurationMs: 1000 })));

    expect(assignments(events)).toEqual(['edge→fast']);
  });

  it('routes a tight task to an unmeasured agent rather than a slow one when the fastest is busy', () => {
    const d = measuredFleet();
    d.given(at(3000).submit(task('tight1', { deadline: 4500, estimatedDurationMs: 1000 }))); // → fast

    const events = d.when(at(3000).submit(task('tight2', { deadline: 4500, estimatedDurationMs: 1000 })));

    expect(assignments(events)).toEqual(['tight2→fresh']);
    expect(only(events, 'TaskAssigned').why.speed).toBe(1);
  });

  it('escalates a waiting task to critical once the remaining time no longer covers its estimate plus the margin', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('report', { priority: 'low', deadline: 10_000, estimatedDurationMs: 4000 })));

    expect(d.when(at(4999).tick())).toEqual([]);
    const events = d.when(at(5000).tick());

    const escalated = only(events, 'TaskEscalated', 'report');
    expect([escalated.from, escalated.to]).toEqual(['low', 'critical']);
    expect(escalated.why).toMatchObject({ rule: 'deadline-at-risk', remainingMs: 5000, estimatedDurationMs: 4000, slackMs: 1000, marginMs: 1000 });
  });

  it('escalates with no margin under a policy that sets none (as policies recorded before the margin existed)', () => {
    const d = dispatcher({ ...QUIET, deadlines: { marginMs: 0 } }).given(at(0).submit(task('report', { priority: 'low', deadline: 10_000, estimatedDurationMs: 4000 })));

    expect(d.when(at(5999).tick())).toEqual([]);
    const escalated = only(d.when(at(6000).tick()), 'TaskEscalated', 'report');
    expect(escalated.why).toMatchObject({ remainingMs: 4000, slackMs: 0 });
    expect(escalated.why).not.toHaveProperty('marginMs');
  });

  it('escalates the task with the least slack first and dispatches it first', () => {
    const d = dispatcher(QUIET).given(
      at(0).submit(task('roomy', { deadline: 10_000, estimatedDurationMs: 4000 })),
      at(0).submit(task('pressed', { deadline: 9_000, estimatedDurationMs: 4000 })),
      at(0).submit(task('urgent-but-no-deadline', { priority: 'high' })),
    );

    const escalations = ofType(d.when(at(7000).tick()), 'TaskEscalated');
    const events = d.when(at(7000).ready('a', [], 3));

    expect(escalations.map((e) => [e.taskId, e.why.slackMs])).toEqual([['pressed', -2000], ['roomy', -1000]]);
    expect(assignments(events)).toEqual(['pressed→a', 'roomy→a', 'urgent-but-no-deadline→a']);
    expect(ofType(events, 'TaskAssigned')[0].why.rule).toBe('deadline-at-risk-fastest');
  });

  it('does not escalate work that is already critical', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('c', { priority: 'critical', deadline: 1000, estimatedDurationMs: 900 })));

    expect(d.when(at(5000).tick())).toEqual([]);
  });

  it('needs both a deadline and an estimate to treat a task as deadline-driven', () => {
    const d = dispatcher(QUIET).given(at(0).submit(task('no-estimate', { deadline: 100 })));

    expect(d.when(at(5000).tick())).toEqual([]);
  });
});
