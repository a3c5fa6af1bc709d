import { makeFleet, makeTenants, pickPriority, pickTenant } from './workload.js';
import { httpCaller } from './httpCall.js';
import { percentile, prng } from './support.js';

/**
 * The producers and agents of the embedded benchmark, as HTTP clients in their own process (so
 * their CPU is not the server's). Started by `embedded.ts` with its config as argv[2]; reports
 * over the IPC channel: `{ kind: 'window', edge }` when the measured window opens and closes, then
 * `{ kind: 'result', ... }`.
 */

/** What one client run does. */
export interface ClientConfig {
  url: string;
  mode: 'throughput' | 'latency';
  agents: number;
  capacity: number;
  /** Capability sets the agents are spread over (agent i has set i mod capSets). */
  capSets: number;
  tenants: number;
  /** throughput: concurrent producer loops, each submitting as soon as its previous submit is acknowledged. */
  producers: number;
  /** throughput: most tasks submitted and not yet completed; producers wait above it. */
  maxOutstanding: number;
  /** latency: submissions per second, sent on schedule whatever the answers (open loop). */
  offeredPerSecond: number;
  /** How long an agent "works" on a task before completing it, in ms. */
  workMs: number;
  /** Long-poll wait, in ms. */
  pollWaitMs: number;
  warmupMs: number;
  measureMs: number;
}

export interface ClientResult {
  kind: 'result';
  windowMs: number;
  submitted: number;
  assigned: number;
  completed: number;
  /** Non-2xx answers and transport errors, by status ('error' for transport). */
  failures: Record<string, number>;
  /** Submit → the agent holding the assignment, for tasks submitted in the window, in ms. */
  assignLatency: { count: number; p50: number; p90: number; p99: number; max: number };
  /** Submit → 202, in ms. */
  submitAck: { count: number; p50: number; p99: number };
  /** Tasks submitted in the window whose assignment had not arrived when the run ended. */
  unassigned: number;
  /** Offered rate actually achieved by the scheduler (latency mode). */
  offeredRate: number;
  clientCpuMs: number;
  requests: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ClientConfig;
const http = httpCaller(cfg.url);
const { call, failures } = http;

const clock = (): number => performance.now();
const rand = prng(7);
const fleet = makeFleet(rand, cfg.capSets);
const tenants = makeTenants(cfg.tenants);

let stopping = false;
let producing = true;
let measuring = false;
let windowStart = 0;
let windowEnd = 0;
let submitted = 0;
let assigned = 0;
let completed = 0;
let outstanding = 0;
let nextId = 0;
const submitAt = new Map<string, number>();
const inWindow = new Set<string>();
const latencies: number[] = [];
const acks: number[] = [];
const slotWaiters: (() => void)[] = [];

async function submitOne(): Promise<void> {
  const id = `b${process.pid}-${nextId++}`;
  const body = {
    id, tenant: pickTenant(rand, tenants), source: 'api', type: 'bench', priority: pickPriority(rand),
    requires: fleet.reqSets[Math.floor(rand() * fleet.reqSets.length)], payload: { n: nextId },
  };
  const t = clock();
  submitAt.set(id, t);
  if (measuring) inWindow.add(id);
  outstanding++;
  const r = await call('POST', '/v1/tasks', body);
  if (r.status !== 202) {
    submitAt.delete(id);
    inWindow.delete(id);
    release();
    return;
  }
  if (measuring) { submitted++; acks.push(clock() - t); }
}

function release(): void {
  outstanding--;
  slotWaiters.shift()?.();
}

async function producer(): Promise<void> {
  while (producing) {
    while (outstanding >= cfg.maxOutstanding && producing) await new Promise<void>((r) => slotWaiters.push(r));
    if (!producing) return;
    await submitOne();
  }
}

/** Open loop: send what the schedule says is due, never waiting for answers. */
async function scheduler(started: number): Promise<number> {
  let sent = 0;
  while (producing) {
    const due = Math.floor(((clock() - started) / 1000) * cfg.offeredPerSecond);
    for (; sent < due; sent++) void submitOne();
    await new Promise((r) => setTimeout(r, 1));
  }
  return sent / ((clock() - started) / 1000);
}

interface Assignment { kind: string; taskId: string; attempt: number }

async function runAgent(i: number): Promise<void> {
  const id = `agent-${String(i).padStart(3, '0')}`;
  const seen = new Set<string>();
  while (!stopping) {
    const r = await call('GET', `/v1/agents/${id}/assignments?waitMs=${cfg.pollWaitMs}`);
    if (r.status !== 200) continue;
    const t = clock();
    for (const d of JSON.parse(r.text) as Assignment[]) {
      if (d.kind !== 'assignment') continue;
      const key = `${d.taskId}#${d.attempt}`;
      if (seen.has(key)) continue; // at-least-once delivery
      seen.add(key);
      const sent = submitAt.get(d.taskId);
      if (sent !== undefined && inWindow.has(d.taskId)) {
        latencies.push(t - sent);
        inWindow.delete(d.taskId);
      }
      if (measuring) assigned++;
      const finish = async () => {
        const c = await call('POST', `/v1/tasks/${d.taskId}/complete`, { agentId: id, attempt: d.attempt, outcome: 'succeeded' });
        submitAt.delete(d.taskId);
        if (c.status === 200 && measuring) completed++;
        release();
      };
      if (cfg.workMs > 0) setTimeout(() => void finish(), cfg.workMs); else void finish();
    }
  }
}

async function main(): Promise<void> {
  for (let i = 0; i < cfg.agents; i++) {
    const r = await call('POST', `/v1/agents/agent-${String(i).padStart(3, '0')}/ready`, { capabilities: fleet.capSets[i % fleet.capSets.length], capacity: cfg.capacity });
    if (r.status !== 200) throw new Error(`agent ${i} could not register: ${r.status} ${r.text}`);
  }
  const agentLoops = Array.from({ length: cfg.agents }, (_, i) => runAgent(i));
  const started = clock();
  const load = cfg.mode === 'throughput'
    ? Promise.all(Array.from({ length: cfg.producers }, () => producer())).then(() => 0)
    : scheduler(started);
  await new Promise((r) => setTimeout(r, cfg.warmupMs));
  const cpu0 = process.cpuUsage();
  measuring = true;
  windowStart = clock();
  process.send?.({ kind: 'window', edge: 'start' });
  await new Promise((r) => setTimeout(r, cfg.measureMs));
  measuring = false;
  windowEnd = clock();
  process.send?.({ kind: 'window', edge: 'end' });
  const cpu = process.cpuUsage(cpu0);
  producing = false;
  for (const w of slotWaiters.splice(0)) w();
  const offeredRate = await load;
  // Let assignments of tasks submitted in the window arrive (up to 2 s) before counting the missing.
  const drainUntil = clock() + 2000;
  while (cfg.mode === 'latency' && inWindow.size > 0 && clock() < drainUntil) await new Promise((r) => setTimeout(r, 20));
  stopping = true;
  latencies.sort((a, b) => a - b);
  acks.sort((a, b) => a - b);
  const result: ClientResult = {
    kind: 'result',
    windowMs: windowEnd - windowStart,
    submitted, assigned, completed, failures,
    assignLatency: {
      count: latencies.length, p50: percentile(latencies, 0.5), p90: percentile(latencies, 0.9),
      p99: percentile(latencies, 0.99), max: latencies[latencies.length - 1] ?? NaN,
    },
    submitAck: { count: acks.length, p50: percentile(acks, 0.5), p99: percentile(acks, 0.99) },
    unassigned: inWindow.size,
    offeredRate,
    clientCpuMs: (cpu.user + cpu.system) / 1000,
    requests: http.requests,
  };
  process.send?.(result);
  // The agents' long-polls end with the server; nothing else to wait for.
  void agentLoops;
  setTimeout(() => process.exit(0), 50);
}

main().catch((e: unknown) => {
  process.send?.({ kind: 'error', message: (e as Error).stack ?? String(e) });
  setTimeout(() => process.exit(1), 50);
});
