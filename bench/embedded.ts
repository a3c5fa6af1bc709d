import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { parsePolicy } from '../src/domain/policy.js';
import { getSqliteEventLog } from '../src/adapters/log/sqliteEventLog.js';
import { startServer, type RunningServer } from '../src/adapters/cli/startServer.js';
import type { EventLog } from '../src/runtime/eventLog.js';
import type { ClientConfig, ClientResult } from './embeddedClient.js';
import { num, type BenchReport, type ResultRow } from './support.js';

/**
 * End to end on the embedded SQLite log: the server (HTTP API, single writer, SQLite with an
 * fsync per batch) runs in this process on a loopback port; producers and agents run as HTTP
 * clients in a child process (`embeddedClient.ts`).
 */

/** Options of {@link runEmbedded}. */
export interface EmbeddedOptions {
  /** Measured window of each phase, in ms. Default 15000. */
  measureMs?: number;
  /** Warm-up of each phase, in ms. Default 3000. */
  warmupMs?: number;
}

interface ServerSide {
  cpuMs: number;
  elu: number;
  commits: number;
  events: number;
  /** Wall time inside log.append (a synchronous SQLite transaction and its fsync: the event loop waits). */
  appendMs: number;
  /** Wall time inside log.saveSnapshot (the JSON is built before, in the runtime). */
  snapshotMs: number;
  snapshots: number;
}

/** The log, with the time its calls hold the server's one thread counted. */
function timedLog(log: EventLog, t: { appendMs: number; snapshotMs: number; snapshots: number }): EventLog {
  return {
    ...log,
    async append(stream, events, expectedVersion) {
      const t0 = performance.now();
      try { return await log.append(stream, events, expectedVersion); } finally { t.appendMs += performance.now() - t0; }
    },
    async saveSnapshot(stream, snapshot) {
      const t0 = performance.now();
      try { return await log.saveSnapshot(stream, snapshot); } finally { t.snapshotMs += performance.now() - t0; t.snapshots++; }
    },
  };
}

interface Phase {
  client: ClientResult;
  server: ServerSide;
}

const CLIENT = fileURLToPath(new URL('./embeddedClient.js', import.meta.url));

/** The server as `serve` runs it by default (default policy, loopback, any free port) on `eventLog`. */
export function startBenchServer(eventLog: EventLog, log: (l: string) => void): Promise<RunningServer> {
  return startServer({
    log: eventLog,
    policy: parsePolicy({}),
    host: '127.0.0.1',
    port: 0,
    logger: pino({ level: 'warn' }),
    onFatal: (err) => log(`  dispatcher stopped: ${err.message}`),
  });
}

async function runPhase(cfg: Omit<ClientConfig, 'url'>, log: (l: string) => void): Promise<Phase> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));
  const timing = { appendMs: 0, snapshotMs: 0, snapshots: 0 };
  const eventLog = timedLog(getSqliteEventLog({ path: join(dir, 'switchyard.db') }), timing);
  const server = await startBenchServer(eventLog, log);
  try {
    const child = fork(CLIENT, [JSON.stringify({ ...cfg, url: server.url })], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let cpu0 = process.cpuUsage();
    let elu0 = performance.eventLoopUtilization();
    let stats0 = server.runtime.stats();
    let timing0 = { ...timing };
    const server1: ServerSide = { cpuMs: 0, elu: 0, commits: 0, events: 0, appendMs: 0, snapshotMs: 0, snapshots: 0 };
    const client = await new Promise<ClientResult>((resolve, reject) => {
      child.on('message', (m: { kind: string; edge?: string; message?: string }) => {
        if (m.kind === 'window' && m.edge === 'start') {
          cpu0 = process.cpuUsage();
          elu0 = performance.eventLoopUtilization();
          stats0 = server.runtime.stats();
          timing0 = { ...timing };
        } else if (m.kind === 'window' && m.edge === 'end') {
          const cpu = process.cpuUsage(cpu0);
          const stats = server.runtime.stats();
          server1.cpuMs = (cpu.user + cpu.system) / 1000;
          server1.elu = performance.eventLoopUtilization(elu0).utilization;
          server1.commits = stats.commits - stats0.commits;
          server1.events = stats.eventsWritten - stats0.eventsWritten;
          server1.appendMs = timing.appendMs - timing0.appendMs;
          server1.snapshotMs = timing.snapshotMs - timing0.snapshotMs;
          server1.snapshots = timing.snapshots - timing0.snapshots;
        } else if (m.kind === 'result') {
          resolve(m as unknown as ClientResult);
        } else if (m.kind === 'error') {
          reject(new Error(`bench client failed: ${m.message}`));
        }
      });
      child.on('exit', (code) => reject(new Error(`bench client exited with ${code} before reporting`)));
    });
    await new Promise((r) => { if (child.exitCode !== null) r(undefined); else child.once('exit', r); });
    return { client, server: server1 };
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function describe(name: string, p: Phase, log: (l: string) => void): void {
  const c = p.client;
  const s = c.windowMs / 1000;
  log(`  ${name}: ${num(c.completed / s)} completed/s, ${num(c.submitted / s)} submitted/s, ${num(c.assigned / s)} assigned/s; `
    + `submit→assign p50 ${c.assignLatency.p50.toFixed(1)} ms p99 ${c.assignLatency.p99.toFixed(1)} ms max ${c.assignLatency.max.toFixed(1)} ms (${num(c.assignLatency.count)} samples); `
    + `submit ack p50 ${c.submitAck.p50.toFixed(1)} ms p99 ${c.submitAck.p99.toFixed(1)} ms; `
    + `server CPU ${(p.server.cpuMs / c.windowMs * 100).toFixed(0)}% ELU ${(p.server.elu * 100).toFixed(0)}%, client CPU ${(c.clientCpuMs / c.windowMs * 100).toFixed(0)}%; `
    + `${num(p.server.commits / s)} commits/s, ${(p.server.events / Math.max(1, p.server.commits)).toFixed(0)} events/commit, `
    + `in append ${(p.server.appendMs / c.windowMs * 100).toFixed(0)}% of the time (${(p.server.appendMs / Math.max(1, p.server.commits)).toFixed(1)} ms/commit), `
    + `${p.server.snapshots} snapshots ${num(p.server.snapshotMs)} ms; `
    + `failures ${JSON.stringify(c.failures)}, unassigned ${c.unassigned}`);
}

export async function runEmbedded(options: EmbeddedOptions = {}, log: (l: string) => void = console.log): Promise<BenchReport> {
  const measureMs = options.measureMs ?? 15_000;
  const warmupMs = options.warmupMs ?? 3000;
  const common = { capSets: 8, tenants: 50, pollWaitMs: 1000, warmupMs, measureMs };
  const throughputCfg: Omit<ClientConfig, 'url'> = {
    ...common, mode: 'throughput', agents: 64, capacity: 4, producers: 64, maxOutstanding: 2048, offeredPerSecond: 0, workMs: 0,
  };
  const latencyCfg: Omit<ClientConfig, 'url'> = {
    ...common, mode: 'latency', agents: 64, capacity: 4, producers: 0, maxOutstanding: Infinity, offeredPerSecond: 1000, workMs: 20,
  };
  const tp = await runPhase(throughputCfg, log);
  describe('throughput', tp, log);
  const lat = await runPhase(latencyCfg, log);
  describe('latency', lat, log);

  const sec = (p: Phase) => p.client.windowMs / 1000;
  const cpuPct = (ms: number, p: Phase) => (ms / p.client.windowMs) * 100;
  const rows: ResultRow[] = [
    {
      name: 'full lifecycle throughput (submit→assign→complete)', value: tp.client.completed / sec(tp), unit: 'tasks/s',
      target: { kind: 'min', value: 5000 },
      note: `server CPU ${cpuPct(tp.server.cpuMs, tp).toFixed(0)}%, event loop ${(tp.server.elu * 100).toFixed(0)}% busy; client CPU ${cpuPct(tp.client.clientCpuMs, tp).toFixed(0)}%`,
    },
    { name: 'submit→assign p50 at saturation', value: tp.client.assignLatency.p50, unit: 'ms' },
    { name: 'submit→assign p99 at saturation', value: tp.client.assignLatency.p99, unit: 'ms' },
    {
      name: 'offered load (latency phase)', value: lat.client.offeredRate, unit: 'tasks/s',
      note: `${num(lat.client.submitted / sec(lat))} acknowledged/s, ${num(lat.client.completed / sec(lat))} completed/s`,
    },
    { name: 'submit→assign p50 at 1,000 tasks/s', value: lat.client.assignLatency.p50, unit: 'ms' },
    { name: 'submit→assign p90 at 1,000 tasks/s', value: lat.client.assignLatency.p90, unit: 'ms' },
    {
      name: 'submit→assign p99 at 1,000 tasks/s', value: lat.client.assignLatency.p99, unit: 'ms', target: { kind: 'max', value: 50 },
      note: `max ${lat.client.assignLatency.max.toFixed(1)} ms, ${num(lat.client.assignLatency.count)} samples, ${lat.client.unassigned} never assigned`,
    },
    { name: 'submit→202 p99 at 1,000 tasks/s', value: lat.client.submitAck.p99, unit: 'ms' },
  ];
  const failures = { ...tp.client.failures };
  for (const [k, v] of Object.entries(lat.client.failures)) failures[k] = (failures[k] ?? 0) + v;
  return {
    title: 'embedded end to end (HTTP on loopback, SQLite log, clients in a child process)',
    workload: [
      'server: startServer() in the benchmark process, default policy, SQLite WAL + synchronous=FULL (fsync per batch), fresh temp dir per phase',
      'clients: one forked process, node:http keep-alive agent; agents long-poll GET /v1/agents/:id/assignments?waitMs=1000 and POST …/complete',
      `fleet: ${throughputCfg.agents} agents × capacity ${throughputCfg.capacity} over ${common.capSets} capability sets; ${common.tenants} tenants (Zipf), mixed priorities, small payload`,
      `throughput phase: ${throughputCfg.producers} closed-loop producers, at most ${throughputCfg.maxOutstanding} tasks in flight, agents complete at once`,
      `latency phase: open-loop ${latencyCfg.offeredPerSecond} submissions/s, agents work ${latencyCfg.workMs} ms per task; latency = agent received − producer sent (same clock)`,
      `each phase: ${warmupMs} ms warm-up, ${measureMs} ms measured`,
    ],
    results: rows,
    notes: [
      ...[['throughput', tp], ['latency', lat]].map(([name, p]) => {
        const ph = p as Phase;
        return `${name as string} phase: ${num(ph.server.commits / sec(ph))} commits/s, ${(ph.server.events / Math.max(1, ph.server.commits)).toFixed(1)} events per commit; `
          + `server thread inside log.append ${(ph.server.appendMs / ph.client.windowMs * 100).toFixed(0)}% of the window (${(ph.server.appendMs / Math.max(1, ph.server.commits)).toFixed(1)} ms per commit); `
          + `server CPU ${cpuPct(ph.server.cpuMs, ph).toFixed(0)}%, event loop ${(ph.server.elu * 100).toFixed(0)}% busy, client CPU ${cpuPct(ph.client.clientCpuMs, ph).toFixed(0)}%; ${num(ph.client.requests)} HTTP requests`;
      }),
      `non-2xx answers / transport errors: ${JSON.stringify(failures)}`,
    ],
  };
}
