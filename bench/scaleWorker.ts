import { existsSync, statSync } from 'node:fs';
import { getSqliteEventLog } from '../src/adapters/log/sqliteEventLog.js';
import { measureDecision, type SizeResult } from './decisionCore.js';
import { generate, rebuildFromZero, restartRuntime, restartSteps, type RestartSteps, type RuntimeRestart } from './replay.js';
import { collect } from './support.js';

/**
 * One point of `bench/scale.ts`, in a process of its own: RSS never shrinks within a process, and
 * a restart is only a restart in a process that has not run the code before. Started by
 * `fork(scaleWorker.js, [JSON job])`; answers with one IPC message and exits.
 */

export type ScaleJob =
  | { kind: 'decision'; depth: number; agents: number; warmupMs: number; measureMs: number }
  /** Write a history of `events` into a new SQLite file, with a snapshot `tail` events before its end (none if it is shorter). */
  | { kind: 'generate'; path: string; events: number; tail: number }
  /** Rebuild from version 0, then the restart steps one by one (a warm process: the rebuild ran the code). */
  | { kind: 'replay'; path: string }
  /** A real restart in a cold process: open, createDispatcherRuntime, one command decided and committed. */
  | { kind: 'restart'; path: string };

export interface DecisionPoint extends SizeResult {
  /** Most RSS the process ever had (build and run), bytes. */
  peakRss: number;
}

export interface GeneratePoint {
  events: number;
  tasks: number;
  ms: number;
  snapshotVersion: number;
  snapshotBytes: number;
  /** The database, its WAL and shared-memory files, bytes. */
  dbBytes: number;
  peakRss: number;
}

export interface ReplayPoint {
  rebuild: { events: number; ms: number; cpuShare: number };
  steps: RestartSteps;
  peakRss: number;
}

export interface RestartPoint extends RuntimeRestart {
  /** From this process's start (node boot, module loading) until the first command was committed, ms. */
  sinceProcessStartMs: number;
}

export type ScaleAnswer =
  | { ok: true; kind: 'decision'; point: DecisionPoint }
  | { ok: true; kind: 'generate'; point: GeneratePoint }
  | { ok: true; kind: 'replay'; point: ReplayPoint }
  | { ok: true; kind: 'restart'; point: RestartPoint }
  | { ok: false; error: string };

/** maxRSS is in KiB. */
const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

function fileBytes(path: string): number {
  let total = 0;
  for (const p of [path, `${path}-wal`, `${path}-shm`]) if (existsSync(p)) total += statSync(p).size;
  return total;
}

async function run(job: ScaleJob): Promise<ScaleAnswer> {
  switch (job.kind) {
    case 'decision': {
      // measureDecision prints its own line per size; here the parent prints one per point instead.
      const r = measureDecision(job.depth, { sizes: [job.depth], warmupMs: job.warmupMs, measureMs: job.measureMs }, () => undefined, job.agents);
      return { ok: true, kind: 'decision', point: { ...r, peakRss: peakRss() } };
    }
    case 'generate': {
      const log = getSqliteEventLog({ path: job.path });
      // A history no longer than the tail has no snapshot, as the runtime saves its first one only after snapshotEvery events.
      const g = await generate(log, job.events, job.events > job.tail ? job.events - job.tail : Number.POSITIVE_INFINITY);
      await log.close();
      return {
        ok: true, kind: 'generate',
        point: { events: g.events, tasks: g.tasks, ms: g.ms, snapshotVersion: g.snapshotVersion, snapshotBytes: g.snapshotBytes, dbBytes: fileBytes(job.path), peakRss: peakRss() },
      };
    }
    case 'replay': {
      const log = getSqliteEventLog({ path: job.path });
      try {
        const rebuild = await rebuildFromZero(log);
        collect();
        const steps = await restartSteps(log);
        return { ok: true, kind: 'replay', point: { rebuild, steps, peakRss: peakRss() } };
      } finally {
        await log.close();
      }
    }
    case 'restart': {
      const r = await restartRuntime(job.path, true);
      return { ok: true, kind: 'restart', point: { ...r, sinceProcessStartMs: performance.now() } };
    }
  }
}

// Only as a forked child (an import for its types has no IPC channel and runs nothing).
if (process.send && process.argv[2]) {
  const send = (a: ScaleAnswer): void => { process.send?.(a, () => process.disconnect()); };
  run(JSON.parse(process.argv[2]) as ScaleJob).then(send, (e: unknown) => send({ ok: false, error: e instanceof Error ? e.stack ?? e.message : String(e) }));
}
