import { z } from 'zod';
import { PrioritySchema, type Priority } from './priority.js';

const positiveMs = z.number().int().positive();

const TenantQuotaSchema = z.strictObject({
  /** Most tasks of the tenant running at once. Default: unlimited. */
  maxConcurrent: z.number().int().positive().optional(),
  /** Most tasks of the tenant waiting (queued or blocked); more are rejected. Default: unlimited. */
  maxQueued: z.number().int().positive().optional(),
});

const PriorityRuleSchema = z.strictObject({
  match: z.strictObject({
    source: z.string().optional(),
    type: z.string().optional(),
    tenant: z.string().optional(),
  }),
  priority: PrioritySchema,
});

/**
 * The dispatch policy. Every key is optional in a policy file; {@link parsePolicy} fills defaults.
 * Unknown keys are an error that names the key.
 */
export const PolicySchema = z.strictObject({
  /** How often the runtime issues a Tick (timeouts, affinity waits, aging, deadlines). Default 250. */
  tickMs: positiveMs.default(250),
  health: z.strictObject({
    /** No sign of life for this long → AgentTimedOut and its tasks are requeued. Default 15000. */
    agentTimeoutMs: positiveMs.default(15_000),
  }).prefault({}),
  retry: z.strictObject({
    /** Attempts a task gets before it is dead-lettered. Default 3. */
    maxAttempts: z.number().int().min(1).default(3),
    /** Backoff before retry n+1 after a retryable failure of attempt n is backoffMs × 2^(n-1). Default 1000. */
    backoffMs: z.number().int().min(0).default(1000),
  }).prefault({}),
  affinity: z.strictObject({
    /** How long a soft-affinity task waits for its busy session agent before falling back. Default 5000. */
    maxWaitMs: z.number().int().min(0).default(5000),
  }).prefault({}),
  aging: z.strictObject({
    /** A waiting low/normal task rises one level per stepMs (never to critical). Default 600000. */
    stepMs: positiveMs.default(600_000),
  }).prefault({}),
  fairness: z.strictObject({
    /** Sliding window over which each tenant's share of dispatched work is measured. Default 3600000. */
    windowMs: positiveMs.default(3_600_000),
    /** A tenant above deferFactor × its fair target is deferred while others have eligible work. Default 1.5. */
    deferFactor: z.number().min(1).default(1.5),
    /** Dispatches the window must hold before any tenant is deferred, so the first few do not look unfair. Default 20. */
    minSamples: z.number().int().min(0).default(20),
    /** Relative weight of each tenant (default 1 for a tenant not listed). */
    weights: z.record(z.string(), z.number().positive()).default({}),
  }).prefault({}),
  /** Per-tenant quotas. */
  quotas: z.record(z.string(), TenantQuotaSchema).default({}),
  shedding: z.strictObject({
    /** Waiting tasks above which new low work is shed (normal above 1.25×, high above 1.5×). Default 100000. */
    highWatermark: positiveMs.default(100_000),
    /** Waiting tasks at which a new critical task sheds the newest queued low task. Default 2 × highWatermark. */
    hardCap: z.number().int().positive().optional(),
  }).prefault({}),
  retention: z.strictObject({
    /**
     * Finished tasks (succeeded, failed, cancelled, shed, rejected, dead-lettered) the dispatcher
     * keeps in memory, most recent first. Older ones are forgotten by the dispatcher (the log keeps
     * them): their ids may be submitted again and a dependency on them is unknown. Default 100000.
     */
    finishedTasks: z.number().int().min(1).default(100_000),
  }).prefault({}),
  deadlines: z.strictObject({
    /**
     * A task with a deadline and an estimate is escalated to critical once the time left no longer
     * covers its estimate plus this margin: dispatching and delivering it take time too, and a task
     * escalated with no margin left finishes late if it waits at all. Default 1000.
     */
    marginMs: z.number().int().min(0).default(1000),
  }).prefault({}),
  /** Priority for tasks that carry none, by the first rule whose every field matches. Default: normal. */
  priorityRules: z.array(PriorityRuleSchema).default([]),
});

export type Policy = z.infer<typeof PolicySchema>;
export type PolicyInput = z.input<typeof PolicySchema>;

export const DEFAULT_POLICY: Policy = PolicySchema.parse({});

/** A policy file that does not parse; `issues` name each field path and the problem. */
export class PolicyError extends Error {
  override readonly name = 'PolicyError';
  constructor(readonly issues: { path: string; message: string }[]) {
    super(`invalid policy: ${issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ')}`);
  }
}

/** Parse a policy document; unknown keys and bad values throw a {@link PolicyError} naming them. */
export function parsePolicy(input: unknown): Policy {
  const r = PolicySchema.safeParse(input ?? {});
  if (r.success) return r.data;
  throw new PolicyError(r.error.issues.map((i) => {
    const base = i.path.map(String).join('.');
    if (i.code === 'unrecognized_keys') {
      const keys = (i as { keys: string[] }).keys;
      return { path: keys.map((k) => (base ? `${base}.${k}` : k)).join(', '), message: `unknown key${keys.length > 1 ? 's' : ''}` };
    }
    return { path: base, message: i.message };
  }));
}

/**
 * A policy as it was recorded (a `PolicyChanged` event, a snapshot), read with the meaning it had
 * then. Policies recorded before `deadlines` existed escalated deadline work with no margin; they
 * keep doing so on replay and verify, and a dispatcher started with today's defaults records the
 * change as a new `PolicyChanged`.
 */
export function recordedPolicy(recorded: unknown): Policy {
  return parsePolicy(upcastPolicy(recorded));
}

/** A recorded policy document with the keys it predates set to what they meant then (see {@link recordedPolicy}). */
export function upcastPolicy(recorded: unknown): unknown {
  if (recorded !== null && typeof recorded === 'object' && !Array.isArray(recorded) && !Object.hasOwn(recorded, 'deadlines')) {
    return { ...recorded, deadlines: { marginMs: 0 } };
  }
  return recorded;
}

export function hardCapOf(p: Policy): number {
  return p.shedding.hardCap ?? p.shedding.highWatermark * 2;
}

/** Tenant names are data: only the policy's own keys count (a tenant may be called "constructor"). */
export function weightOf(p: Policy, tenant: string): number {
  return Object.hasOwn(p.fairness.weights, tenant) ? p.fairness.weights[tenant] : 1;
}

export function quotaOf(p: Policy, tenant: string): { maxConcurrent?: number; maxQueued?: number } | undefined {
  return Object.hasOwn(p.quotas, tenant) ? p.quotas[tenant] : undefined;
}

export function resolvePriority(
  p: Policy,
  t: { priority?: Priority; source: string; type: string; tenant: string },
): { priority: Priority; from: 'task' | 'rule' | 'default'; rule?: number } {
  if (t.priority) return { priority: t.priority, from: 'task' };
  for (let i = 0; i < p.priorityRules.length; i++) {
    const m = p.priorityRules[i].match;
    if ((m.source === undefined || m.source === t.source)
      && (m.type === undefined || m.type === t.type)
      && (m.tenant === undefined || m.tenant === t.tenant)) {
      return { priority: p.priorityRules[i].priority, from: 'rule', rule: i };
    }
  }
  return { priority: 'normal', from: 'default' };
}
