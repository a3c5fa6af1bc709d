import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DomainError, PRIORITIES, canonical, commandRuns, fromSnapshot, handle, initialState, parsePolicy, redecideRun, toSnapshot,
  type Command, type DispatchEvent, type DispatcherState, type Policy, type PolicyInput, type StateSnapshot, type TaskSpec,
} from '../../src/domain/index.js';
import { Model } from './support/model.js';

/**
 * Property tests: random command sequences against an independent model of the log. Commands are
 * generated as abstract operations ("complete the 3rd running task") and made concrete against the
 * state they arrive at, so shrinking keeps them meaningful.
 */

const CAPS = ['a', 'b', 'c'] as const;
const TENANTS = ['t0', 't1', 't2'];
const AGENTS = ['ag0', 'ag1', 'ag2', 'ag3'];
const SESSIONS = ['s0', 's1'];
const SOURCES = ['user', 'cron', 'webhook'] as const;

type Op =
  | { k: 'submit'; dt: number; tenant: number; priority: number; requires: string[]; session: number; hard: boolean; source: number;
    deadline: { inMs: number; est: number } | null; deps: number[]; reuse: number | null }
  | { k: 'ready'; dt: number; agent: number; caps: string[]; capacity: number }
  | { k: 'heartbeat'; dt: number; agent: number }
  | { k: 'complete'; dt: number; pick: number; outcome: 'succeeded' | 'failed'; retryable: boolean }
  | { k: 'replay-completion'; dt: number; pick: number; outcome: 'succeeded' | 'failed' }
  | { k: 'cancel'; dt: number; pick: number }
  | { k: 'tick'; dt: number }
  | { k: 'resume'; dt: number; silentMs: number }
  | { k: 'remove'; dt: number; agent: number }
  | { k: 'policy'; dt: number; variant: PolicyInput };

/** `arb` once in `n` draws, else null. */
function rarely<T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | null> {
  return fc.oneof({ weight: n - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb });
}

const dtArb = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 300, max: 3000 }));
const capsArb = fc.subarray([...CAPS]);

const policyArb: fc.Arbitrary<PolicyInput> = fc.record({
  health: fc.record({ agentTimeoutMs: fc.constantFrom(800, 2500, 60_000, 60_000) }),
  retry: fc.record({ maxAttempts: fc.integer({ min: 1, max: 3 }), backoffMs: fc.integer({ min: 0, max: 600 }) }),
  affinity: fc.record({ maxWaitMs: fc.integer({ min: 0, max: 1500 }) }),
  aging: fc.record({ stepMs: fc.integer({ min: 200, max: 5000 }) }),
  fairness: fc.record({
    windowMs: fc.integer({ min: 500, max: 20_000 }),
    deferFactor: fc.double({ min: 1, max: 2, noNaN: true }),
    minSamples: fc.integer({ min: 0, max: 6 }),
    // 0.1/0.2/0.3 are inexact in binary: sums of them depend on the order they were added in.
    weights: fc.constantFrom<Record<string, number>>({}, { t0: 3 }, { t1: 0.5, t2: 2 }, { t0: 0.1, t1: 0.2, t2: 0.3 }),
  }),
  quotas: fc.constantFrom<Record<string, { maxConcurrent?: number; maxQueued?: number }>>({}, { t1: { maxConcurrent: 1 } }, { t0: { maxConcurrent: 2, maxQueued: 4 } }, { t2: { maxQueued: 2 } }),
  shedding: fc.oneof(
    fc.record({ highWatermark: fc.integer({ min: 3, max: 12 }) }),
    fc.record({ highWatermark: fc.integer({ min: 1, max: 8 }), hardCap: fc.integer({ min: 2, max: 14 }) }),
  ),
  priorityRules: fc.constantFrom([], [{ match: { source: 'cron' }, priority: 'low' as const }], [{ match: { tenant: 't2' }, priority: 'high' as const }]),
});

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      k: fc.constant('submit' as const), dt: dtArb, tenant: fc.constantFrom(0, 0, 0, 1, 2) /* skewed, so shares differ */, priority: fc.integer({ min: -1, max: 3 }),
      requires: fc.subarray([...CAPS], { maxLength: 2 }), session: fc.integer({ min: -3, max: SESSIONS.length - 1 }), hard: fc.boolean(),
      source: fc.nat(SOURCES.length - 1),
      deadline: rarely(fc.record({ inMs: fc.integer({ min: 0, max: 8000 }), est: fc.integer({ min: 1, max: 3000 }) }), 3),
      deps: fc.array(fc.nat(), { maxLength: 2 }).map((xs) => (xs.length > 0 && xs[0] % 3 === 0 ? xs : [])),
      reuse: rarely(fc.nat(), 12),
    }),
  },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('ready' as const), dt: dtArb, agent: fc.nat(AGENTS.length - 1), caps: capsArb, capacity: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('heartbeat' as const), dt: dtArb, agent: fc.nat(AGENTS.length - 1) }) },
  { weight: 7, arbitrary: fc.record({ k: fc.constant('complete' as const), dt: dtArb, pick: fc.nat(), outcome: fc.constantFrom('succeeded' as const, 'failed' as const), retryable: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('replay-completion' as const), dt: dtArb, pick: fc.nat(), outcome: fc.constantFrom('succeeded' as const, 'failed' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('cancel' as const), dt: dtArb, pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('tick' as const), dt: dtArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('resume' as const), dt: dtArb, silentMs: fc.integer({ min: 0, max: 5000 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('remove' as const), dt: dtArb, agent: fc.nat(AGENTS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('policy' as const), dt: dtArb, variant: policyArb }) },
);

/** Turn an abstract operation into the command a client would send now. */
function concretize(op: Op, now: number, model: Model, submitted: string[]): Command {
  switch (op.k) {
    case 'submit': {
      const id = op.reuse !== null && submitted.length > 0 ? submitted[op.reuse % submitted.length] : `task${submitted.length}`;
      const deps = submitted.length === 0 ? [] : op.deps.map((i) => (i % 17 === 16 ? 'no-such-task' : submitted[i % submitted.length]));
      const spec: TaskSpec = {
        id, tenant: TENANTS[op.tenant], source: SOURCES[op.source], type: 'job', requires: op.requires, affinity: op.hard ? 'hard' : 'soft',
        dependsOn: deps.filter((d) => d !== id),
        ...(op.priority >= 0 ? { priority: PRIORITIES[op.priority] } : {}),
        ...(op.session >= 0 ? { sessionRef: SESSIONS[op.session] } : {}),
        ...(op.deadline ? { deadline: now + op.deadline.inMs, estimatedDurationMs: op.deadline.est } : {}),
      };
      return { type: 'SubmitTask', at: now, task: spec };
    }
    case 'ready': return { type: 'MarkAgentReady', at: now, agentId: AGENTS[op.agent], capabilities: op.caps, capacity: op.capacity };
    case 'heartbeat': return { type: 'RecordHeartbeat', at: now, agentId: AGENTS[op.agent] };
    case 'complete': {
      const running = model.running();
      if (running.length === 0) return { type: 'Tick', at: now };
      const r = running[op.pick % running.length];
      return { type: 'CompleteTask', at: now, ...r, outcome: op.outcome, retryable: op.retryable, error: op.outcome === 'failed' ? 'boom' : undefined };
    }
    case 'replay-completion': {
      const ever = model.assignmentsEver;
      if (ever.length === 0) return { type: 'Tick', at: now };
      return { type: 'CompleteTask', at: now, ...ever[op.pick % ever.length], outcome: op.outcome, retryable: true };
    }
    case 'cancel':
      return { type: 'CancelTask', at: now, taskId: submitted.length === 0 || op.pick % 11 === 10 ? 'no-such-task' : submitted[op.pick % submitted.length] };
    case 'tick': return { type: 'Tick', at: now };
    case 'resume': return { type: 'Resume', at: now, since: Math.max(0, now - op.silentMs) };
    case 'remove': return { type: 'RemoveAgent', at: now, agentId: AGENTS[op.agent] };
    case 'policy': return { type: 'ChangePolicy', at: now, policy: parsePolicy(op.variant) };
  }
}

const REFUSALS = new Set(['not-found', 'stale-attempt', 'agent-not-alive']);

/** Handle a command; a refusal is a DomainError with a known code that changes nothing. */
function attempt(s: DispatcherState, c: Command, checkUnchanged: boolean): DispatchEvent[] | DomainError {
  const before = checkUnchanged ? canonical(toSnapshot(s)) : '';
  try {
    return handle(s, c);
  } catch (e) {
    if (!(e instanceof DomainError)) throw e;
    expect(REFUSALS.has(e.code), `unexpected refusal ${e.code}: ${e.message}`).toBe(true);
    if (checkUnchanged) expect(canonical(toSnapshot(s)), `refused ${c.type} changed the state`).toBe(before);
    return e;
  }
}

interface Run { policy: Policy; commands: Command[]; history: DispatchEvent[]; outcomes: string[] }

/** Play the operations against a fresh dispatcher, checking every invariant after every command. */
function play(policyInput: PolicyInput, ops: Op[]): Run {
  const policy = parsePolicy(policyInput);
  const s = initialState(policy);
  const model = new Model(policy);
  const submitted: string[] = [];
  const commands: Command[] = [];
  const history: DispatchEvent[] = [];
  const outcomes: string[] = [];
  let now = 1_000;
  for (const op of ops) {
    now += op.dt;
    const c = concretize(op, now, model, submitted);
    commands.push(c);
    const r = attempt(s, c, true);
    if (r instanceof DomainError) {
      outcomes.push(`refused ${r.code}`);
      continue;
    }
    outcomes.push(canonical(r));
    for (const e of r) model.apply(e);
    history.push(...r);
    if (c.type === 'SubmitTask' && !submitted.includes(c.task.id)) submitted.push(c.task.id);
    model.checkQuiescent(s);
  }
  return { policy, commands, history, outcomes };
}

/** Scale the number of runs, e.g. `PROPERTY_RUNS_SCALE=20 npx vitest run test/unit/invariants.unit.spec.ts` for a long hunt. */
const SCALE = Number(process.env.PROPERTY_RUNS_SCALE ?? 1);
const runs = (n: number) => ({ numRuns: Math.max(1, Math.round(n * SCALE)) });
const TIMEOUT = 30_000 * Math.max(1, SCALE);

const opsArb = fc.array(opArb, { minLength: 1, maxLength: 70, size: 'max' });

describe('dispatcher invariants', () => {
  it('holds every invariant after every command of a random sequence', () => {
    fc.assert(fc.property(policyArb, opsArb, (p, ops) => { play(p, ops); }), runs(300));
  }, TIMEOUT);

  it('re-decides recorded history into exactly the recorded events', () => {
    fc.assert(fc.property(policyArb, opsArb, (p, ops) => {
      const run = play(p, ops);
      const s = initialState(run.policy);
      let index = 0;
      for (const events of commandRuns(run.history)) {
        const divergence = redecideRun(s, events, index);
        expect(divergence, divergence && `diverged at ${divergence.index}: ${divergence.error ?? ''}\nrecorded ${canonical(divergence.recorded)}\nredecided ${canonical(divergence.redecided)}`).toBeUndefined();
        index += events.length;
      }
    }), runs(150));
  }, TIMEOUT);

  it('continues from a JSON snapshot exactly as the original state', () => {
    fc.assert(fc.property(policyArb, opsArb, fc.nat(), (p, ops, cut) => {
      const run = play(p, ops);
      const k = cut % (run.commands.length + 1);
      const original = initialState(run.policy);
      for (const c of run.commands.slice(0, k)) attempt(original, c, false);
      const restored = fromSnapshot(JSON.parse(JSON.stringify(toSnapshot(original))) as StateSnapshot);
      for (const [i, c] of run.commands.slice(k).entries()) {
        const a = attempt(original, c, false);
        const b = attempt(restored, c, false);
        const show = (x: DispatchEvent[] | DomainError) => (x instanceof DomainError ? `refused ${x.code}` : canonical(x));
        expect(show(b), `command ${k + i} (${c.type}) after a snapshot at ${k}`).toBe(show(a));
      }
      expect(canonical(toSnapshot(restored))).toBe(canonical(toSnapshot(original)));
    }), runs(150));
  }, TIMEOUT);
});
