import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import kafkajs, { type ConsumerConfig, type Producer, type ProducerConfig, type Consumer, type RequestEvent } from 'kafkajs';
import { pino } from 'pino';
import { parsePolicy } from '../src/domain/policy.js';
import { startServer } from '../src/adapters/cli/startServer.js';
import { getKafkaEventLog } from '../src/adapters/kafka/kafkaEventLog.js';
import type { EventLog } from '../src/runtime/eventLog.js';

/**
 * The dispatcher of the Kafka benchmark, in its own process (so that its CPU, its event loop and
 * its profile are its own): what `switchyard serve --log kafka:<brokers>` runs, i.e. startServer
 * with the Kafka event log and the Kafka ingress and egress (exactly once), default policy.
 * Started by `kafka.ts` with its config as argv[2]; driven over IPC:
 *
 *   → { cmd: 'stats' }                        ← { kind: 'stats', agentsAlive, capacity, waiting, running, version }
 *   → { cmd: 'admissions' }                   ← { kind: 'admissions', seqs, ats }   (TaskSubmitted.at of the tasks t<seq> since the last ask)
 *   → { cmd: 'window-start', profile }        ← { kind: 'ack' }   (counters reset; CPU profile started)
 *   → { cmd: 'window-end', name }             ← { kind: 'window', ...DispatcherWindow }
 *   → { cmd: 'stop' }                         ← { kind: 'stopped' }, then exits
 */

export interface DispatcherConfig {
  brokers: string[];
  prefix: string;
  /** Where the window's .cpuprofile files go. */
  profileDir: string;
}

export interface ProfileFrame {
  selfPct: number;
  name: string;
  where: string;
}

export interface DispatcherWindow {
  kind: 'window';
  ms: number;
  cpuMs: number;
  /** Event loop utilisation in the window. */
  elu: number;
  commits: number;
  events: number;
  byType: Record<string, number>;
  /** Wall time inside log.append (the Kafka transaction, and the wait for its commit markers). */
  appendMs: number;
  commitMs: { p50: number; p90: number; p99: number; max: number };
  /** Pauses between appends: the longest, and the time in pauses over 100 ms (snapshots: JSON.stringify + saveSnapshot). */
  gapMs: { max: number; over100Ms: number; over100Count: number };
  /** Messages produced in the appends' transactions (assignments, dead letters) and input offsets committed with them. */
  outboxMessages: number;
  deadLetters: number;
  inputOffsets: number;
  snapshots: number;
  /** Time in log.saveSnapshot (gzip + produce); the runtime's JSON.stringify before it is not included. */
  snapshotMs: number;
  /** Characters of snapshot JSON saved. */
  snapshotBytes: number;
  /** Sampled every 100 ms: tasks waiting in the dispatcher, tasks running on agents. */
  meanWaiting: number;
  meanRunning: number;
  profile?: { file: string; samples: number; top: ProfileFrame[]; byArea: { area: string; selfPct: number }[] };
  /** Kafka requests of the dispatcher's clients in the window, by client and API: count and time from send to response. */
  requests: { client: string; api: string; count: number; totalMs: number; meanMs: number; maxMs: number }[];
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as DispatcherConfig;

// Every Kafka request the dispatcher's kafkajs clients make, timed: kafkajs reports each one as an
// instrumentation event. The log and the ingress create their clients inside src/; wrapping the
// factory methods here (bench only) labels each client: the writer's transactional producer, the
// snapshot producer, the ingress consumer, the writer-election consumer.
const requestStats = new Map<string, { client: string; api: string; count: number; totalMs: number; maxMs: number }>();
const onRequest = (client: string) => (e: RequestEvent) => {
  const key = `${client}\u0000${e.payload.apiName}`;
  let r = requestStats.get(key);
  if (!r) requestStats.set(key, (r = { client, api: e.payload.apiName, count: 0, totalMs: 0, maxMs: 0 }));
  r.count++;
  r.totalMs += e.payload.duration;
  if (e.payload.duration > r.maxMs) r.maxMs = e.payload.duration;
};
{
  const proto = kafkajs.Kafka.prototype as unknown as { producer(c?: ProducerConfig): Producer; consumer(c: ConsumerConfig): Consumer };
  const producer = proto.producer;
  const consumer = proto.consumer;
  proto.producer = function (this: unknown, c?: ProducerConfig) {
    const p = producer.call(this, c);
    p.on(p.events.REQUEST, onRequest(c?.transactionalId ? 'writer (transactional producer)' : 'producer'));
    return p;
  };
  proto.consumer = function (this: unknown, c: ConsumerConfig) {
    const k = consumer.call(this, c);
    k.on(k.events.REQUEST, onRequest(c.groupId.includes('.ingress.') ? 'ingress consumer' : c.groupId.includes('.leader.') ? 'writer election consumer' : 'consumer'));
    return k;
  };
  // The log's reader talks to brokers directly (no instrumentation): time its ListOffsets, which
  // an append repeats (with pauses of 1, 2, 4 … ms) until the commit markers are written.
  const Broker = createRequire(import.meta.url)('kafkajs/src/broker/index.js') as { prototype: { listOffsets(...a: unknown[]): Promise<unknown> } };
  const listOffsets = Broker.prototype.listOffsets;
  const record = onRequest('reader (log)');
  Broker.prototype.listOffsets = async function (this: unknown, ...a: unknown[]) {
    const t0 = performance.now();
    try {
      return await listOffsets.apply(this, a);
    } finally {
      record({ payload: { apiName: 'ListOffsets', duration: performance.now() - t0 } } as RequestEvent);
    }
  };
}

const byType: Record<string, number> = {};
const t = { commits: 0, events: 0, appendMs: 0, outboxMessages: 0, deadLetters: 0, inputOffsets: 0, snapshots: 0, snapshotMs: 0, snapshotBytes: 0 };
let durations: number[] = [];
/** Pauses of the single writer between one append's end and the next one's start (a snapshot blocks it in between). */
let lastAppendEnd = 0;
let gaps: number[] = [];
/** Bench task ids are `t<seq>`: when the dispatcher took each in, to judge its own decisions by. */
let admittedSeqs: number[] = [];
let admittedAts: number[] = [];

const base = getKafkaEventLog({ brokers: cfg.brokers, prefix: cfg.prefix });
const deadLetterTopic = `${cfg.prefix}.dead-letter`;
/** The Kafka log, with its calls timed and counted (the dispatcher's one flush loop waits on each append). */
const log: EventLog = {
  ...base,
  async append(stream, events, expectedVersion, extras) {
    const t0 = performance.now();
    if (lastAppendEnd > 0) gaps.push(t0 - lastAppendEnd);
    try {
      return await base.append(stream, events, expectedVersion, extras);
    } finally {
      lastAppendEnd = performance.now();
      const d = lastAppendEnd - t0;
      t.commits++;
      t.appendMs += d;
      durations.push(d);
      t.events += events.length;
      for (const e of events) {
        byType[e.type] = (byType[e.type] ?? 0) + 1;
        if (e.type === 'TaskSubmitted' && e.task.id.startsWith('t')) { admittedSeqs.push(Number(e.task.id.slice(1))); admittedAts.push(e.at); }
      }
      for (const m of extras?.outbox ?? []) {
        t.outboxMessages++;
        if (m.topic === deadLetterTopic) t.deadLetters++;
      }
      t.inputOffsets += extras?.inputs?.length ?? 0;
    }
  },
  async saveSnapshot(stream, snapshot) {
    const t0 = performance.now();
    try { return await base.saveSnapshot(stream, snapshot); } finally { t.snapshots++; t.snapshotMs += performance.now() - t0; t.snapshotBytes += snapshot.data.length; }
  },
};

const send = (m: unknown): void => { process.send?.(m); };
// Never outlive the benchmark that started this process.
process.on('disconnect', () => process.exit(1));

const server = await startServer({
  log,
  policy: parsePolicy({}),
  host: '127.0.0.1',
  port: 0,
  logger: pino({ level: 'warn' }),
  kafka: { brokers: cfg.brokers, prefix: cfg.prefix },
  onFatal: (err) => {
    send({ kind: 'error', message: `dispatcher stopped: ${err.stack ?? err.message}` });
    setTimeout(() => process.exit(1), 100);
  },
});

function running(): number {
  let n = 0;
  for (const a of server.runtime.state.agents.values()) n += a.running.size;
  return n;
}
function alive(): { n: number; capacity: number } {
  let n = 0;
  let capacity = 0;
  for (const a of server.runtime.state.agents.values()) if (a.alive) { n++; capacity += a.capacity; }
  return { n, capacity };
}

let window: {
  t0: number; cpu: NodeJS.CpuUsage; elu: ReturnType<typeof performance.eventLoopUtilization>;
  counts: typeof t; byType: Record<string, number>; requests: Map<string, { count: number; totalMs: number }>; samples: { waiting: number; running: number; n: number }; timer: NodeJS.Timeout;
} | undefined;
let session: Session | undefined;

const pct = (sorted: number[], q: number): number => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]);

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }[];
  samples?: number[];
}

const here = fileURLToPath(new URL('../..', import.meta.url));

/** Which part of the code a frame belongs to, for the per-area totals. */
function areaOf(name: string, url: string): string {
  if (name === '(garbage collector)') return 'garbage collector';
  if (name === '(idle)') return 'idle (waiting for I/O)';
  if (name === '(program)') return 'V8/native (program)';
  if (url.includes('/node_modules/kafkajs/')) return 'kafkajs';
  if (url.includes('/node_modules/')) return `node_modules/${url.split('/node_modules/')[1].split('/')[0]}`;
  if (url.includes('/dist/src/domain/')) return 'switchyard domain';
  if (url.includes('/dist/src/runtime/')) return 'switchyard runtime';
  if (url.includes('/dist/src/adapters/kafka/')) return 'switchyard kafka adapter';
  if (url.includes('/dist/src/')) return 'switchyard other';
  if (url.includes('/dist/bench/')) return 'bench wrapper';
  if (url.startsWith('node:')) return 'node core';
  return url === '' ? 'V8/native (builtins)' : 'other';
}

function summarise(p: CpuProfile): NonNullable<DispatcherWindow['profile']> {
  const hits = new Map<number, number>();
  for (const s of p.samples ?? []) hits.set(s, (hits.get(s) ?? 0) + 1);
  const total = p.samples?.length ?? 0;
  const frames = new Map<string, { name: string; where: string; hits: number }>();
  const areas = new Map<string, number>();
  for (const n of p.nodes) {
    const h = hits.get(n.id) ?? 0;
    if (h === 0) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const name = functionName || '(anonymous)';
    const file = url.replace(/^file:\/\//, '').replace(here, '');
    const where = file ? `${file}:${lineNumber + 1}` : '';
    const key = `${name}@${where}`;
    const f = frames.get(key) ?? { name, where, hits: 0 };
    f.hits += h;
    frames.set(key, f);
    const area = areaOf(name, url);
    areas.set(area, (areas.get(area) ?? 0) + h);
  }
  const top = [...frames.values()].sort((a, b) => b.hits - a.hits).slice(0, 20)
    .map((f) => ({ selfPct: (f.hits / Math.max(1, total)) * 100, name: f.name, where: f.where }));
  const byArea = [...areas].sort((a, b) => b[1] - a[1]).map(([area, h]) => ({ area, selfPct: (h / Math.max(1, total)) * 100 }));
  return { file: '', samples: total, top, byArea };
}

process.on('message', (m: { cmd: string; profile?: boolean; name?: string }) => {
  void (async () => {
    try {
      if (m.cmd === 'stats') {
        const s = server.runtime.stats();
        const a = alive();
        send({ kind: 'stats', agentsAlive: a.n, capacity: a.capacity, waiting: server.runtime.state.waiting, running: running(), version: s.version, inbox: s.inbox });
      } else if (m.cmd === 'admissions') {
        send({ kind: 'admissions', seqs: admittedSeqs, ats: admittedAts });
        admittedSeqs = [];
        admittedAts = [];
      } else if (m.cmd === 'window-start') {
        if (m.profile) {
          session = new Session();
          session.connect();
          await session.post('Profiler.enable');
          await session.post('Profiler.setSamplingInterval', { interval: 1000 });
          await session.post('Profiler.start');
        }
        durations = [];
        gaps = [];
        const samples = { waiting: 0, running: 0, n: 0 };
        const timer = setInterval(() => { samples.waiting += server.runtime.state.waiting; samples.running += running(); samples.n++; }, 100);
        for (const r of requestStats.values()) r.maxMs = 0;
        const requests = new Map([...requestStats].map(([k, r]) => [k, { count: r.count, totalMs: r.totalMs }]));
        window = { t0: performance.now(), cpu: process.cpuUsage(), elu: performance.eventLoopUtilization(), counts: { ...t }, byType: { ...byType }, requests, samples, timer };
        send({ kind: 'ack' });
      } else if (m.cmd === 'window-end' && window) {
        const w = window;
        window = undefined;
        clearInterval(w.timer);
        const ms = performance.now() - w.t0;
        const cpu = process.cpuUsage(w.cpu);
        const elu = performance.eventLoopUtilization(w.elu).utilization;
        const d = (k: keyof typeof t) => t[k] - w.counts[k];
        const types: Record<string, number> = {};
        for (const [k, v] of Object.entries(byType)) if (v - (w.byType[k] ?? 0) > 0) types[k] = v - (w.byType[k] ?? 0);
        const sorted = [...durations].sort((a, b) => a - b);
        let profile: DispatcherWindow['profile'];
        if (session) {
          const { profile: p } = await session.post('Profiler.stop');
          session.disconnect();
          session = undefined;
          const file = join(cfg.profileDir, `dispatcher-${m.name ?? 'window'}.cpuprofile`);
          writeFileSync(file, JSON.stringify(p));
          profile = { ...summarise(p as unknown as CpuProfile), file };
        }
        const out: DispatcherWindow = {
          kind: 'window', ms, cpuMs: (cpu.user + cpu.system) / 1000, elu,
          commits: d('commits'), events: d('events'), byType: types, appendMs: d('appendMs'),
          commitMs: { p50: pct(sorted, 0.5), p90: pct(sorted, 0.9), p99: pct(sorted, 0.99), max: sorted[sorted.length - 1] ?? NaN },
          gapMs: { max: Math.max(0, ...gaps), over100Ms: gaps.filter((g) => g > 100).reduce((a, b) => a + b, 0), over100Count: gaps.filter((g) => g > 100).length },
          outboxMessages: d('outboxMessages'), deadLetters: d('deadLetters'), inputOffsets: d('inputOffsets'),
          snapshots: d('snapshots'), snapshotMs: d('snapshotMs'), snapshotBytes: d('snapshotBytes'),
          meanWaiting: w.samples.waiting / Math.max(1, w.samples.n), meanRunning: w.samples.running / Math.max(1, w.samples.n),
          profile,
          requests: [...requestStats].map(([k, r]) => {
            const count = r.count - (w.requests.get(k)?.count ?? 0);
            const totalMs = r.totalMs - (w.requests.get(k)?.totalMs ?? 0);
            return { client: r.client, api: r.api, count, totalMs, meanMs: totalMs / Math.max(1, count), maxMs: r.maxMs };
          }).filter((r) => r.count > 0).sort((a, b) => b.totalMs - a.totalMs),
        };
        send(out);
      } else if (m.cmd === 'stop') {
        await server.close();
        send({ kind: 'stopped' });
        setTimeout(() => process.exit(0), 50);
      }
    } catch (e) {
      send({ kind: 'error', message: (e as Error).stack ?? String(e) });
    }
  })();
});

send({ kind: 'ready', url: server.url });
