import { prng } from './support.js';
import { makeTenants, pickPriority, pickTenant, type Tenants } from './workload.js';

/**
 * The workload of the Kafka benchmark, shared by Switchyard's run and the naive fleet's: agents
 * with random capability subsets, tasks with requirement sets, mixed priorities, 50 Zipf tenants
 * plus one flooding tenant. Also the correctness counts both runs are judged by (priority
 * inversions, capability misses, imbalance, the flooding tenant's share), computed from what the
 * agents actually started.
 */

const CAPABILITIES = [
  'llm', 'code', 'search', 'browser', 'k8s', 'sql', 'gpu', 'slack', 'github', 'jira', 'pdf', 'vision',
];

export const LEVEL_NAMES = ['critical', 'high', 'normal', 'low'] as const;
export const FLOOD_TENANT = 'tenant-flood';

export interface KafkaFleet {
  agents: { id: string; caps: string[] }[];
  /** Requirement sets tasks ask for; index 0 is "none". */
  reqSets: string[][];
  /** servable[agent][reqSet]: the agent has every capability the set requires. */
  servable: boolean[][];
  /** The 50 ordinary tenants (Zipf); the flooding tenant is index `tenants.names.length`. */
  tenants: Tenants;
  /** Names by tenant index, the flooding tenant last. */
  tenantNames: string[];
  floodIndex: number;
  /** Share of all submissions that come from the flooding tenant. */
  floodShare: number;
}

function subset(rand: () => number, from: readonly string[], k: number): string[] {
  const pool = [...from];
  const out: string[] = [];
  while (out.length < k) out.push(pool.splice(Math.floor(rand() * pool.length), 1)[0]);
  return out.sort();
}

/**
 * `agents` agents, each with a random 3–6 of 12 capabilities; 16 requirement sets: none, and 15
 * distinct sets of 1–2 capabilities taken from some agent, each servable by at least a fifth of
 * the fleet (so no requirement set is starved of agents by construction).
 */
export function makeKafkaFleet(agents: number, floodShare: number, seed = 11): KafkaFleet {
  const rand = prng(seed);
  const list = Array.from({ length: agents }, (_, i) => ({
    id: `agent-${String(i).padStart(3, '0')}`,
    caps: subset(rand, CAPABILITIES, 3 + Math.floor(rand() * 4)),
  }));
  const reqSets: string[][] = [[]];
  const seen = new Set<string>(['']);
  const minServers = Math.max(1, Math.ceil(agents / 5));
  for (let tries = 0; reqSets.length < 16 && tries < 100_000; tries++) {
    const from = list[Math.floor(rand() * list.length)].caps;
    const set = subset(rand, from, 1 + Math.floor(rand() * 2));
    const key = set.join(',');
    if (seen.has(key)) continue;
    if (list.filter((a) => set.every((c) => a.caps.includes(c))).length < minServers) continue;
    seen.add(key);
    reqSets.push(set);
  }
  const servable = list.map((a) => reqSets.map((set) => set.every((c) => a.caps.includes(c))));
  const tenants = makeTenants(50);
  return {
    agents: list, reqSets, servable, tenants,
    tenantNames: [...tenants.names, FLOOD_TENANT], floodIndex: tenants.names.length, floodShare,
  };
}

/** One generated task: indexes into the fleet's tables. */
export interface GenTask {
  tenant: number;
  level: number;
  req: number;
}

const LEVEL_OF: Record<string, number> = { critical: 0, high: 1, normal: 2, low: 3 };

/** 20% of tasks require nothing, the rest one of the 15 sets; priorities 5/15/55/25%. */
export function nextTask(rand: () => number, f: KafkaFleet): GenTask {
  const tenant = rand() < f.floodShare ? f.floodIndex : f.tenants.names.indexOf(pickTenant(rand, f.tenants));
  const level = LEVEL_OF[pickPriority(rand)];
  const req = rand() < 0.2 ? 0 : 1 + Math.floor(rand() * (f.reqSets.length - 1));
  return { tenant, level, req };
}

/** What the benchmark knows about one task once a phase is over (wall-clock ms, NaN = never). */
export interface TaskTrace {
  tenant: number;
  level: number;
  req: number;
  /** When the producer handed it to kafkajs. */
  sentAt: number;
  /** When the broker acknowledged it: from then on a consumer could see it. */
  visibleAt: number;
  /** Switchyard: when the dispatcher took it in (`TaskSubmitted.at`); NaN for the naive fleet. */
  admittedAt: number;
  /** When it was started: the dispatcher's decision (`assignedAt`), or the naive agent taking it. */
  startAt: number;
  /** When the agent process received it (same clock as sentAt). */
  receivedAt: number;
  agent: number;
}

export interface Correctness {
  /** What "waiting" starts at: the broker's acknowledgement (+ grace), or the dispatcher's admission. */
  waitingFrom: 'visible' | 'admitted';
  graceMs: number;
  /** Tasks started in the window (a naive agent "starts" whatever it receives). */
  starts: number;
  /** Starts by an agent lacking a required capability: a real agent would bounce or fail them. */
  capabilityMisses: number;
  /**
   * Starts (of tasks the agent could run) while a task of higher priority that the same agent
   * could run was waiting and not started yet.
   */
  inversions: number;
  /**
   * Of those, the ones where every such waiting higher task was non-critical work of a tenant
   * above 1.5× its fair share of starts so far (the flooding tenant, the biggest Zipf tenants):
   * what Switchyard's fairness rule defers on purpose.
   */
  inversionsOverShare: number;
  /** Starts (runnable ones) of the flooding tenant's tasks while another tenant's task of the same or higher priority, runnable by that agent, was waiting. */
  floodAheadOfOthers: number;
  floodStarts: number;
  /** The flooding tenant's share of the tasks submitted in the window. */
  floodSubmitShare: number;
  /** Tenants that were over their fair share at some inversion counted as a fairness deferral. */
  overShareTenants: string[];
  /** Per agent, starts in the window. */
  perAgent: number[];
  /** Start − sent, ms: ordinary tenants / the flooding tenant, tasks started in the window. */
  waitOthers: { p50: number; p99: number };
  waitFlood: { p50: number; p99: number };
}

function pct(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/**
 * Judge the starts inside [from, to): replays "begins waiting" and start events in time order,
 * keeping the count of waiting tasks per (tenant, level, requirement set), and per tenant class:
 * over or not over its fair share of starts so far, as Switchyard's fairness rule (default policy:
 * equal weights, deferFactor 1.5, at least 20 dispatches) sees it. An over-share tenant's waiting
 * non-critical work is what that rule defers on purpose.
 */
export function judge(
  traces: readonly TaskTrace[], f: KafkaFleet, from: number, to: number,
  opts: { waitingFrom: 'visible' | 'admitted'; graceMs: number; deferFactor?: number; minSamples?: number },
): Correctness {
  const R = f.reqSets.length;
  const L = 4;
  const LR = L * R;
  const T = f.tenantNames.length;
  const deferFactor = opts.deferFactor ?? 1.5;
  const minSamples = opts.minSamples ?? 20;
  /** Waiting per tenant, and summed over the tenants not over / over their share, and over all but the flooding tenant. */
  const perTenant = new Int32Array(T * LR);
  const notOver = new Int32Array(LR);
  const over = new Int32Array(LR);
  const nonFlood = new Int32Array(LR);
  const isOver = new Uint8Array(T);
  const dispatched = new Float64Array(T);
  const seenTenant = new Uint8Array(T);
  let tenantsSeen = 0;
  let dispatchedTotal = 0;
  const overTenants = new Set<number>();
  const add = (t: TaskTrace, d: number) => {
    const k = t.level * R + t.req;
    perTenant[t.tenant * LR + k] += d;
    (isOver[t.tenant] ? over : notOver)[k] += d;
    if (t.tenant !== f.floodIndex) nonFlood[k] += d;
  };
  const refreshOver = () => {
    for (let x = 0; x < T; x++) {
      const o = tenantsSeen > 1 && dispatchedTotal >= minSamples && dispatched[x] / dispatchedTotal > deferFactor / tenantsSeen ? 1 : 0;
      if (o === isOver[x]) continue;
      // Move the tenant's waiting work to its new class.
      for (let k = 0; k < LR; k++) {
        const n = perTenant[x * LR + k];
        if (n === 0) continue;
        (o ? notOver : over)[k] -= n;
        (o ? over : notOver)[k] += n;
      }
      isOver[x] = o;
    }
  };
  // Events: time, kind (0 start, 1 begins waiting), task.
  const times: number[] = [];
  const kinds: number[] = [];
  const ids: number[] = [];
  const counted = new Uint8Array(traces.length);
  for (let i = 0; i < traces.length; i++) {
    const t = traces[i];
    const w = (opts.waitingFrom === 'visible' ? t.visibleAt : t.admittedAt) + opts.graceMs;
    if (Number.isFinite(w) && (!Number.isFinite(t.startAt) || w < t.startAt)) {
      times.push(w); kinds.push(1); ids.push(i); counted[i] = 1;
    }
    if (Number.isFinite(t.startAt)) { times.push(t.startAt); kinds.push(0); ids.push(i); }
  }
  const order = Array.from(times.keys()).sort((a, b) => times[a] - times[b] || kinds[a] - kinds[b]);
  const perAgent = new Array<number>(f.agents.length).fill(0);
  let starts = 0;
  let capabilityMisses = 0;
  let inversions = 0;
  let inversionsOverShare = 0;
  let floodAheadOfOthers = 0;
  let floodStarts = 0;
  const waitOthers: number[] = [];
  const waitFlood: number[] = [];
  // Tasks that start at the same instant do not wait for each other (the dispatcher stamps every
  // decision of one command with that command's time): at each instant, take the starting tasks
  // out of the waiting counts first, then judge each start, then count the starts (fair shares
  // move) and add the tasks that begin waiting.
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j < order.length && times[order[j]] === times[order[i]]) j++;
    for (let k = i; k < j; k++) {
      const e = order[k];
      if (kinds[e] === 0 && counted[ids[e]]) add(traces[ids[e]], -1);
    }
    for (let k = i; k < j; k++) {
      const e = order[k];
      const t = traces[ids[e]];
      if (kinds[e] === 1) continue;
      const at = times[e];
      if (at < from || at >= to) continue;
      starts++;
      perAgent[t.agent]++;
      (t.tenant === f.floodIndex ? waitFlood : waitOthers).push(at - t.sentAt);
      if (t.tenant === f.floodIndex) floodStarts++;
      const can = f.servable[t.agent];
      if (!can[t.req]) {
        capabilityMisses++;
        continue;
      }
      let ordinary = false;
      let deferred = false;
      for (let l = 0; l < t.level && !ordinary; l++) {
        for (let r = 0; r < R; r++) {
          if (!can[r]) continue;
          const x = l * R + r;
          // Critical work is never deferred for fairness.
          if (notOver[x] > 0 || (l === 0 && over[x] > 0)) { ordinary = true; break; }
          if (over[x] > 0) deferred = true;
        }
      }
      if (ordinary || deferred) inversions++;
      if (!ordinary && deferred) {
        inversionsOverShare++;
        for (let x = 0; x < T; x++) if (isOver[x]) overTenants.add(x);
      }
      if (t.tenant === f.floodIndex) {
        let ahead = false;
        for (let l = 0; l <= t.level && !ahead; l++) {
          for (let r = 0; r < R; r++) if (can[r] && nonFlood[l * R + r] > 0) { ahead = true; break; }
        }
        if (ahead) floodAheadOfOthers++;
      }
    }
    let moved = false;
    for (let k = i; k < j; k++) {
      const e = order[k];
      const t = traces[ids[e]];
      if (!seenTenant[t.tenant]) { seenTenant[t.tenant] = 1; tenantsSeen++; moved = true; }
      if (kinds[e] === 1) { add(t, 1); continue; }
      dispatched[t.tenant]++;
      dispatchedTotal++;
      moved = true;
    }
    if (moved) refreshOver();
    i = j;
  }
  let submitted = 0;
  let floodSubmitted = 0;
  for (const t of traces) {
    if (t.sentAt >= from && t.sentAt < to) {
      submitted++;
      if (t.tenant === f.floodIndex) floodSubmitted++;
    }
  }
  waitOthers.sort((a, b) => a - b);
  waitFlood.sort((a, b) => a - b);
  return {
    waitingFrom: opts.waitingFrom, graceMs: opts.graceMs,
    starts, capabilityMisses, inversions, inversionsOverShare, floodAheadOfOthers, floodStarts,
    floodSubmitShare: submitted > 0 ? floodSubmitted / submitted : NaN,
    overShareTenants: [...overTenants].sort((x, y) => x - y).map((x) => f.tenantNames[x]),
    perAgent,
    waitOthers: { p50: pct(waitOthers, 0.5), p99: pct(waitOthers, 0.99) },
    waitFlood: { p50: pct(waitFlood, 0.5), p99: pct(waitFlood, 0.99) },
  };
}
