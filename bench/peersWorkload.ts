import { FLOOD_TENANT, LEVEL_NAMES, type KafkaFleet } from './kafkaWorkload.js';
import { prng } from './support.js';
import { makeFleet, makeTenants, pickPriority, pickTenant } from './workload.js';

/**
 * The one workload of the peer benchmark (`peers.ts`), rebuilt identically from its spec by the
 * benchmark process (to judge) and by the client process (to submit and to simulate the agents):
 * a fleet of capacity-1 agents over a few capability sets, tenants of which one floods, mixed
 * priorities, lognormal task durations, some deadlines, and an arrival schedule that first
 * exceeds the fleet's capacity (a backlog builds) and then falls below it (the backlog drains).
 */

export type SystemName = 'embedded' | 'kafka' | 'bullmq' | 'naive';
export const SYSTEMS: readonly SystemName[] = ['embedded', 'kafka', 'bullmq', 'naive'];

/** Everything the task list follows from; plain JSON, so it can travel to a child process. */
export interface WorkloadSpec {
  seed: number;
  tasks: number;
  agents: number;
  /** Distinct agent capability sets (agent i has set i mod capSets); as many requirement sets. */
  capSets: number;
  /** Tenants in all, the flooding one included. */
  tenants: number;
  /** Share of all submissions that come from the flooding tenant. */
  floodShare: number;
  /** Task duration: lognormal with this median and sigma (of the underlying normal), clipped. */
  medianMs: number;
  sigma: number;
  minMs: number;
  maxMs: number;
  /** Offered load of the first phase and of the second, as multiples of the fleet's nominal capacity. */
  overload: number;
  underload: number;
  /** Share of the tasks that arrive in the first (overload) phase. */
  overloadShare: number;
  /** Share of tasks with a deadline: arrival + duration + a slack uniform in [slackMinMs, slackMaxMs]. */
  deadlineShare: number;
  slackMinMs: number;
  slackMaxMs: number;
}

export const DEFAULT_SPEC: WorkloadSpec = {
  seed: 42,
  tasks: 24_000,
  agents: 200,
  capSets: 20,
  tenants: 50,
  floodShare: 0.4,
  medianMs: 500,
  sigma: 0.8,
  minMs: 20,
  maxMs: 10_000,
  overload: 1.5,
  underload: 0.5,
  overloadShare: 2 / 3,
  deadlineShare: 0.2,
  slackMinMs: 1000,
  slackMaxMs: 40_000,
};

/** Per-priority wait targets of the SLA figure (critical, high, normal, low), in ms. */
export const WAIT_TARGET_MS = [1000, 5000, 30_000, 120_000] as const;

/** Column-wise task table: task i is `t<i>`. */
export interface Workload {
  spec: WorkloadSpec;
  /** The fleet in the shape `judge()` (kafkaWorkload.ts) scores starts with. */
  fleet: KafkaFleet;
  /** Offset from the run's start at which task i is submitted, ms (non-decreasing). */
  arrivalMs: Float64Array;
  tenant: Int32Array;
  /** 0 critical … 3 low. */
  level: Int32Array;
  req: Int32Array;
  durationMs: Float64Array;
  /** Offset from the run's start of task i's deadline, ms; NaN when it has none. */
  deadlineMs: Float64Array;
  /** Mean task duration and what the fleet can complete per second if no slot ever idles. */
  meanDurationMs: number;
  nominalCapacity: number;
  /** When the overload phase's arrivals end (offset, ms) and the last arrival. */
  overloadEndMs: number;
  lastArrivalMs: number;
}

/** Standard normal from two uniforms (Box–Muller). */
function gaussian(rand: () => number): number {
  const u = Math.max(rand(), Number.MIN_VALUE);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

export function makeWorkload(spec: WorkloadSpec): Workload {
  const rand = prng(spec.seed);
  const { capSets, reqSets } = makeFleet(rand, spec.capSets);
  const agents = Array.from({ length: spec.agents }, (_, i) => ({ id: `agent-${String(i).padStart(3, '0')}`, caps: capSets[i % capSets.length] }));
  const servable = agents.map((a) => reqSets.map((set) => set.every((c) => a.caps.includes(c))));
  const tenants = makeTenants(spec.tenants - 1);
  // Equal weights: the fairness figure below compares against an equal (max-min) division.
  tenants.weights = {};
  const fleet: KafkaFleet = {
    agents, reqSets, servable, tenants,
    tenantNames: [...tenants.names, FLOOD_TENANT], floodIndex: tenants.names.length, floodShare: spec.floodShare,
  };
  // A requirement set is asked for in proportion to the agents that can serve it, so no set is
  // overloaded by construction more than the fleet as a whole.
  const servers = reqSets.map((_, r) => servable.filter((row) => row[r]).length);
  const cumServers: number[] = [];
  servers.reduce((acc, s) => { cumServers.push(acc + s); return acc + s; }, 0);
  const totalServers = cumServers[cumServers.length - 1];

  const n = spec.tasks;
  const w: Workload = {
    spec, fleet,
    arrivalMs: new Float64Array(n), tenant: new Int32Array(n), level: new Int32Array(n), req: new Int32Array(n),
    durationMs: new Float64Array(n), deadlineMs: new Float64Array(n).fill(NaN),
    meanDurationMs: 0, nominalCapacity: 0, overloadEndMs: 0, lastArrivalMs: 0,
  };
  const levelOf = new Map<string, number>(LEVEL_NAMES.map((l, i) => [l, i]));
  const slack: number[] = [];
  for (let i = 0; i < n; i++) {
    w.tenant[i] = rand() < spec.floodShare ? fleet.floodIndex : tenants.names.indexOf(pickTenant(rand, tenants));
    w.level[i] = levelOf.get(pickPriority(rand)) ?? 2;
    const x = rand() * totalServers;
    let r = 0;
    while (cumServers[r] <= x) r++;
    w.req[i] = r;
    w.durationMs[i] = Math.round(Math.min(spec.maxMs, Math.max(spec.minMs, spec.medianMs * Math.exp(spec.sigma * gaussian(rand)))));
    slack.push(rand() < spec.deadlineShare ? spec.slackMinMs + rand() * (spec.slackMaxMs - spec.slackMinMs) : NaN);
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w.durationMs[i];
  w.meanDurationMs = sum / Math.max(1, n);
  w.nominalCapacity = spec.agents / (w.meanDurationMs / 1000);
  // Poisson arrivals: the first overloadShare of the tasks at overload × capacity, the rest at underload × capacity.
  const first = Math.round(n * spec.overloadShare);
  let t = 0;
  for (let i = 0; i < n; i++) {
    const rate = (i < first ? spec.overload : spec.underload) * w.nominalCapacity / 1000;
    t += -Math.log(Math.max(rand(), Number.MIN_VALUE)) / rate;
    w.arrivalMs[i] = t;
    if (i === first - 1) w.overloadEndMs = t;
    if (!Number.isNaN(slack[i])) w.deadlineMs[i] = t + w.durationMs[i] + slack[i];
  }
  w.lastArrivalMs = t;
  if (first === 0) w.overloadEndMs = 0;
  return w;
}

/** The Switchyard submission of task i (HTTP body and Kafka record value alike); `at0` is the run's start, epoch ms. */
export function submission(w: Workload, i: number, at0: number): Record<string, unknown> {
  const body: Record<string, unknown> = {
    id: `t${i}`, tenant: w.fleet.tenantNames[w.tenant[i]], source: 'api', type: 'bench',
    priority: LEVEL_NAMES[w.level[i]], requires: w.fleet.reqSets[w.req[i]], payload: { n: i },
  };
  if (!Number.isNaN(w.deadlineMs[i])) {
    body.deadline = new Date(at0 + w.deadlineMs[i]).toISOString();
    // The true duration: every system gets the same (perfect) knowledge; only Switchyard uses it.
    body.estimatedDurationMs = w.durationMs[i];
  }
  return body;
}
