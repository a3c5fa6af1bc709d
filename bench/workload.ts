import type { Priority, TaskSpec } from '../src/domain/index.js';

/**
 * The synthetic fleet and producers the in-process benchmarks share: capability sets, the
 * requirement sets tasks ask for (each servable by at least one capability set), tenants with a
 * skewed share of submissions, and a priority mix. Deterministic given the PRNG.
 */

const CAPABILITIES = [
  'llm', 'code', 'search', 'browser', 'k8s', 'sql', 'gpu', 'slack', 'github', 'jira', 'pdf', 'vision',
];

export interface Fleet {
  /** Distinct agent capability sets (agent i has set i mod length). */
  capSets: string[][];
  /** Distinct requirement sets, each a subset of at least one capability set. */
  reqSets: string[][];
}

function pickDistinct(rand: () => number, from: readonly string[], k: number): string[] {
  const pool = [...from];
  const out: string[] = [];
  while (out.length < k) out.push(pool.splice(Math.floor(rand() * pool.length), 1)[0]);
  return out.sort();
}

export function makeFleet(rand: () => number, capSetCount: number): Fleet {
  const capSets: string[][] = [];
  const seen = new Set<string>();
  while (capSets.length < capSetCount) {
    const set = pickDistinct(rand, CAPABILITIES, 2 + Math.floor(rand() * 3));
    const key = set.join(',');
    if (seen.has(key)) continue;
    seen.add(key);
    capSets.push(set);
  }
  const reqSets: string[][] = [];
  const seenReq = new Set<string>();
  for (let i = 0; reqSets.length < capSetCount; i++) {
    const from = capSets[i % capSets.length];
    const set = pickDistinct(rand, from, 1 + Math.floor(rand() * Math.min(2, from.length)));
    const key = set.join(',');
    if (seenReq.has(key)) continue;
    seenReq.add(key);
    reqSets.push(set);
  }
  return { capSets, reqSets };
}

export interface Tenants {
  names: string[];
  /** Cumulative submission share (Zipf, s = 0.8): tenant-00 submits ~9%, tenant-49 ~0.5%. */
  cumulative: number[];
  /** Policy weights: every fifth tenant counts double. */
  weights: Record<string, number>;
}

export function makeTenants(n: number): Tenants {
  const names = Array.from({ length: n }, (_, i) => `tenant-${String(i).padStart(2, '0')}`);
  const raw = names.map((_, i) => 1 / (i + 1) ** 0.8);
  const total = raw.reduce((a, b) => a + b, 0);
  let acc = 0;
  const cumulative = raw.map((x) => (acc += x / total));
  const weights: Record<string, number> = {};
  names.forEach((name, i) => { if (i % 5 === 0) weights[name] = 2; });
  return { names, cumulative, weights };
}

export function pickTenant(rand: () => number, t: Tenants): string {
  const x = rand();
  let lo = 0;
  let hi = t.cumulative.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (t.cumulative[mid] < x) lo = mid + 1; else hi = mid;
  }
  return t.names[lo];
}

/** 5% critical, 15% high, 55% normal, 25% low. */
export function pickPriority(rand: () => number): Priority {
  const x = rand();
  return x < 0.05 ? 'critical' : x < 0.2 ? 'high' : x < 0.75 ? 'normal' : 'low';
}

const TYPES = ['support', 'review', 'report', 'triage', 'summarize'];

/** A task with a small payload (a ticket reference and a number). */
export function taskSpec(rand: () => number, id: string, tenants: Tenants, fleet: Fleet): TaskSpec {
  const n = Math.floor(rand() * 1_000_000);
  return {
    id,
    tenant: pickTenant(rand, tenants),
    source: 'api',
    type: TYPES[n % TYPES.length],
    priority: pickPriority(rand),
    requires: fleet.reqSets[Math.floor(rand() * fleet.reqSets.length)],
    affinity: 'soft',
    dependsOn: [],
    payload: { ticket: `T-${n}`, n },
  };
}
