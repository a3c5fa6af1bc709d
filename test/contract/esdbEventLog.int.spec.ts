/**
 * The EventStoreDB log against a real server. Where the server comes from, first match wins:
 *   a. $ESDB_URL, a connection string (e.g. esdb://127.0.0.1:2113?tls=false): used as is.
 *      Its MaxAppendSize must be at least 8 MiB (EVENTSTORE_MAX_APPEND_SIZE=8388608) for the
 *      contract's 10,000-event append; the default 1 MiB server refuses it (with a clear error).
 *      Tests write fresh streams and leave them there.
 *   b. a usable Docker engine (`docker info`): the eventstore service of infra/docker-compose.yml
 *      (image and environment read from there, MaxAppendSize raised) through testcontainers.
 *   c. neither: the suite is skipped, and one loud "ESDB TESTS SKIPPED" line says why.
 * A Docker engine whose container does not come up fails the suite: that is a broken setup, not
 * a missing one.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startServer, type RunningServer } from '../../src/adapters/cli/startServer.js';
import { getEsdbEventLog, type EsdbEventLogOptions } from '../../src/adapters/esdb/esdbEventLog.js';
import { parsePolicy } from '../../src/domain/policy.js';
import { ConcurrencyError, WriterBusyError, type EventLog, type OutboxMessage } from '../../src/runtime/eventLog.js';
import { client, task } from '../integration/support/httpServer.js';
import { eventLogContract, freshStream, pause, range, readAll, recorder } from './eventLog.contract.js';
import { taskSubmitted, workload } from './sampleEvents.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const COMPOSE_FILE = join(ROOT, 'infra', 'docker-compose.yml');
/** Enough for the contract's 10,000-event append (about 2.7 MB), and below the server's 16 MiB ceiling. */
const MAX_APPEND_SIZE = 8 * 1024 * 1024;

const ESDB_URL = process.env.ESDB_URL?.trim() || undefined;
const source: 'env' | 'docker' | undefined = ESDB_URL ? 'env' : dockerUsable() ? 'docker' : undefined;
if (!source) console.log('!!!!! ESDB TESTS SKIPPED: no ESDB_URL and no Docker engine !!!!!');

function dockerUsable(): boolean {
  const r = spawnSync('docker', ['info'], { stdio: 'ignore', timeout: 15_000 });
  return r.error === undefined && r.status === 0;
}

/** The eventstore service of infra/docker-compose.yml: the one place its image and settings are pinned. */
function composeEventStoreService(): { image: string; environment: Record<string, string> } {
  const compose = parseYaml(readFileSync(COMPOSE_FILE, 'utf8')) as {
    services?: { eventstore?: { image?: string; environment?: Record<string, string | number | boolean> } };
  };
  const service = compose.services?.eventstore;
  if (!service?.image || !service.environment) throw new Error(`${COMPOSE_FILE} has no eventstore service with image and environment`);
  return { image: service.image, environment: Object.fromEntries(Object.entries(service.environment).map(([k, v]) => [k, String(v)])) };
}

let connectionString = '';
let stopServer: (() => Promise<void>) | undefined;

async function startEsdb(): Promise<void> {
  if (ESDB_URL) {
    connectionString = ESDB_URL;
  } else {
    const { GenericContainer, Wait } = await import('testcontainers');
    const { image, environment } = composeEventStoreService();
    console.log(`[esdb] starting ${image} with Docker...`);
    const container = await new GenericContainer(image)
      .withEnvironment({ ...environment, EVENTSTORE_MAX_APPEND_SIZE: String(MAX_APPEND_SIZE) })
      .withExposedPorts(2113)
      .withWaitStrategy(Wait.forHttp('/health/live', 2113).forStatusCodeMatching((code) => code >= 200 && code < 300))
      .withStartupTimeout(180_000)
      .start();
    connectionString = `esdb://${container.getHost()}:${container.getMappedPort(2113)}?tls=false`;
    stopServer = async () => { await container.stop(); };
  }
  // Live is not yet leader: wait until the node answers reads.
  const probe = getEsdbEventLog({ connectionString });
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        await probe.version(`probe-${randomUUID()}`);
        break;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`EventStoreDB at ${connectionString} does not answer: ${(error as Error).message}`, { cause: error });
        await pause(500);
      }
    }
  } finally {
    await probe.close();
  }
  console.log(`[esdb] using ${connectionString}`);
}

describe.skipIf(!source)('esdb event log', () => {
  beforeAll(startEsdb, 300_000);
  afterAll(async () => { await stopServer?.(); }, 60_000);

  const logs: EventLog[] = [];
  const openLog = (options: Partial<EsdbEventLogOptions> = {}): EventLog => {
    const log = getEsdbEventLog({ connectionString, lockPollMs: 100, ...options });
    logs.push(log);
    return log;
  };
  afterEach(async () => {
    for (const log of logs.splice(0)) await log.close();
  });

  // Each contract test gets fresh stream names (freshStream), so tests sharing the server never meet.
  eventLogContract('esdb', async () => {
    const opened: EventLog[] = [];
    const open = (): EventLog => {
      const log = getEsdbEventLog({ connectionString, lockPollMs: 100 });
      opened.push(log);
      return log;
    };
    return {
      log: open(),
      openSecond: async () => open(),
      cleanup: async () => { for (const log of opened) await log.close(); },
    };
  });

  describe('appends', () => {
    it('answers a retried append (same events, same version) as done, without writing them twice', async () => {
      const log = openLog();
      const stream = freshStream();
      expect(await log.append(stream, workload(3), 0)).toBe(3);
      expect(await log.append(stream, workload(3), 0)).toBe(3);
      expect((await readAll(log, stream)).map((s) => s.event)).toEqual(workload(3));
      // Different events at that version are another writer's: refused, with the actual version.
      const error = await openLog().append(stream, workload(3, 'other'), 0).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConcurrencyError);
      expect(error).toMatchObject({ expected: 0, actual: 3 });
    });

    it('refuses a batch larger than any server takes, and writes none of it', async () => {
      const log = openLog();
      const stream = freshStream();
      const big = 'x'.repeat(1024 * 1024);
      const events = range(1, 17).map((i) => {
        const event = taskSubmitted(`big-${i}`);
        event.task.payload = { big };
        return event;
      });
      const error = await log.append(stream, events, 0).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(ConcurrencyError);
      expect(await log.version(stream)).toBe(0);
    });

    it('takes a connection string without its esdb: scheme, and keeps the side streams\' names for itself', async () => {
      const log = openLog({ connectionString: connectionString.replace(/^esdb:/, '') });
      expect(await log.version(freshStream())).toBe(0);
      await expect(log.append(`${freshStream()}-writer`, workload(1), 0)).rejects.toThrow(/side streams/);
      await expect(log.append('$system', workload(1), 0)).rejects.toThrow(/system streams/);
    });
  });

  describe('snapshots', () => {
    it('keeps a snapshot larger than one append can take, and the newest of several', async () => {
      const log = openLog({ snapshotChunkBytes: 256 * 1024 });
      const stream = freshStream();
      const big = randomBytes(1536 * 1024).toString('base64'); // 2 MiB that gzip cannot shrink: 8 chunks
      await log.saveSnapshot(stream, { version: 7, data: big });
      expect(await openLog().loadSnapshot(stream)).toEqual({ version: 7, data: big });
      await log.saveSnapshot(stream, { version: 9, data: '' });
      expect(await openLog().loadSnapshot(stream)).toEqual({ version: 9, data: '' });
      await log.saveSnapshot(stream, { version: 12, data: big.slice(0, 1000) });
      expect(await log.loadSnapshot(stream)).toEqual({ version: 12, data: big.slice(0, 1000) });
    });
  });

  describe('writer lease', () => {
    it('stays with a live holder past the lease timeout, and names the holder', async () => {
      const options = { leaseTimeoutMs: 1200, heartbeatMs: 300 };
      const stream = freshStream();
      const lease = await openLog(options).acquireWriter(stream, { wait: false });
      try {
        await pause(2500);
        const error = await openLog(options).acquireWriter(stream, { wait: false }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(WriterBusyError);
        expect((error as Error).message).toContain(`pid ${process.pid}`);
        expect((error as Error).message).toContain(`${stream}-writer`);
      } finally {
        await lease.release();
      }
      await (await openLog(options).acquireWriter(stream, { wait: false })).release();
    });

    it('tells the holder its lease is lost when its log is closed, but not on release, and frees the lease at once', async () => {
      const stream = freshStream();
      const log = openLog();
      const released = await log.acquireWriter(stream, { wait: false });
      const lostOnRelease: Error[] = [];
      released.onLost?.((reason) => lostOnRelease.push(reason));
      await released.release();

      const lease = await log.acquireWriter(stream, { wait: false });
      const lost: Error[] = [];
      lease.onLost?.((reason) => lost.push(reason));
      await log.append(stream, workload(2), 0);
      const standbyLog = openLog();
      const standby = standbyLog.acquireWriter(stream, { wait: true });
      await pause(300);
      await log.close();
      expect(lost.map((e) => e.message)).toEqual([expect.stringMatching(/closed/)]);
      expect(lostOnRelease).toEqual([]);
      const standbyLease = await standby;
      expect(await standbyLog.append(stream, [taskSubmitted('new-writer')], 2)).toBe(3);
      await standbyLease.release();
    });

    it('fences a writer whose lease was taken: its appends are refused by the version check', async () => {
      const stream = freshStream();
      const first = openLog();
      const second = openLog();
      const lease = await first.acquireWriter(stream, { wait: false });
      await first.append(stream, workload(2), 0);
      await lease.release();
      const next = await second.acquireWriter(stream, { wait: false });
      expect(await second.append(stream, [taskSubmitted('second')], 2)).toBe(3);
      await expect(first.append(stream, [taskSubmitted('stale')], 2)).rejects.toMatchObject({ name: 'ConcurrencyError', expected: 2, actual: 3 });
      await next.release();
    });
  });

  describe('outbox', () => {
    const m = (topic: string, key: string, value: string | Buffer, headers?: Record<string, string>): OutboxMessage => ({ topic, key, value, ...(headers ? { headers } : {}) });

    it('stores messages in the commit of their events, relays them in commit order, and resumes where the relay stopped', async () => {
      const stream = freshStream();
      const writer = openLog();
      const lease = await writer.acquireWriter(stream, { wait: false });
      const binary = Buffer.from([0xff, 0x00, 0xfe]);
      expect(await writer.append(stream, workload(2), 0, { outbox: [m('a', 'k1', 'one', { h: '1' }), m('a', 'k2', 'two')] })).toBe(2);
      // Refused appends store nothing, with events or without.
      await expect(writer.append(stream, workload(1, 'late'), 1, { outbox: [m('a', 'lost', 'x')] })).rejects.toBeInstanceOf(ConcurrencyError);
      await expect(writer.append(stream, [], 1, { outbox: [m('dlq', 'lost', 'x')] })).rejects.toBeInstanceOf(ConcurrencyError);
      expect(await writer.append(stream, [], 2, { outbox: [m('dlq', 'd1', 'dead')] })).toBe(2);
      expect(await writer.append(stream, workload(1, 'more'), 2, { outbox: [m('b', 'k3', binary)] })).toBe(3);
      expect((await readAll(writer, stream)).map((s) => s.version)).toEqual([1, 2, 3]);

      const pending = await writer.readOutbox!(10);
      expect(pending.map(({ id: _id, ...rest }) => rest)).toEqual([
        m('a', 'k1', 'one', { h: '1' }), m('a', 'k2', 'two'), m('dlq', 'd1', 'dead'), m('b', 'k3', binary),
      ]);
      expect(new Set(pending.map((p) => p.id)).size).toBe(4);
      expect((await writer.readOutbox!(2)).map((p) => p.key)).toEqual(['k1', 'k2']);

      await writer.markRelayed!(pending.slice(0, 2).map((p) => p.id));
      expect((await writer.readOutbox!(10)).map((p) => p.key)).toEqual(['d1', 'k3']);
      await lease.release();
      await writer.close();

      // The next writer resumes after what was marked relayed.
      const next = openLog();
      const nextLease = await next.acquireWriter(stream, { wait: false });
      const rest = await next.readOutbox!(10);
      expect(rest.map((p) => p.key)).toEqual(['d1', 'k3']);
      expect(rest[1].value).toEqual(binary);
      await next.markRelayed!(rest.map((p) => p.id));
      expect(await next.readOutbox!(10)).toEqual([]);
      await nextLease.release();

      const last = openLog();
      await (await last.acquireWriter(stream, { wait: false })).release();
      expect(await last.readOutbox!(10)).toEqual([]);
    });
  });

  describe('read-only', () => {
    it('reads and follows beside the writer, and refuses to write', async () => {
      const stream = freshStream();
      const writer = openLog();
      await writer.append(stream, workload(3), 0);
      const reader = openLog({ readonly: true });
      expect((await readAll(reader, stream)).map((s) => s.version)).toEqual([1, 2, 3]);
      const seen = recorder();
      const subscription = reader.subscribe(stream, 0, seen.onEvents);
      await writer.append(stream, workload(2, 'later'), 3);
      await seen.until(5);
      await subscription.close();
      expect(seen.versions()).toEqual(range(1, 5));
      await expect(reader.append(stream, workload(1), 5)).rejects.toThrow(/read-only: cannot append/);
      await expect(reader.saveSnapshot(stream, { version: 5, data: '' })).rejects.toThrow(/read-only: cannot save a snapshot/);
      await expect(reader.acquireWriter(stream, { wait: false })).rejects.toThrow(/read-only: cannot become the writer/);
    });
  });

  describe('a dispatcher on EventStoreDB', () => {
    interface Delivery { kind: string; taskId: string; attempt: number }
    const servers: { server: RunningServer; fatal: Error[] }[] = [];
    const start = async (shard: string): Promise<RunningServer> => {
      const fatal: Error[] = [];
      const server = await startServer({
        log: openLog(),
        policy: parsePolicy({}),
        host: '127.0.0.1',
        port: 0,
        shard,
        logger: pino({ level: 'silent' }),
        onFatal: (err) => { fatal.push(err); },
      });
      servers.push({ server, fatal });
      return server;
    };
    afterEach(async () => {
      for (const { server, fatal } of servers.splice(0)) {
        await server.close();
        expect(fatal).toEqual([]);
      }
    });

    it('dispatches a task over HTTP, refuses a second writer, and still knows the task after a restart on the same stream', async () => {
      const shard = `e2e-${randomUUID().slice(0, 8)}`;
      const first = await start(shard);
      const a = client(first.url);
      expect((await a.post('/v1/agents/a1/ready', { capabilities: ['x'], capacity: 2 })).status).toBe(200);
      expect((await a.post('/v1/tasks', task({ id: 'done', requires: ['x'], payload: { n: 1 } }))).status).toBe(202);
      expect((await a.post('/v1/tasks', task({ id: 'waiting', requires: ['gpu'] }))).status).toBe(202);
      const got = await a.json<Delivery[]>('GET', '/v1/agents/a1/assignments?waitMs=5000');
      expect(got.status).toBe(200);
      expect(got.body.map((d) => d.taskId)).toEqual(['done']);
      expect(await a.json('POST', '/v1/tasks/done/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' }))
        .toEqual({ status: 200, body: { id: 'done', status: 'succeeded', attempt: 1 } });

      await expect(start(shard)).rejects.toBeInstanceOf(WriterBusyError);
      expect((await a.json('GET', '/healthz')).body).toMatchObject({ ok: true, log: 'esdb', stream: `dispatcher-${shard}` });

      const [stopped] = servers.splice(0, 1);
      await stopped.server.close();
      expect(stopped.fatal).toEqual([]);
      const second = await start(shard);
      const b = client(second.url);
      expect((await b.json('GET', '/v1/tasks/done')).body).toMatchObject({ id: 'done', status: 'succeeded', attempt: 1, agent: 'a1' });
      expect((await b.json('GET', '/v1/tasks/waiting')).body).toMatchObject({ id: 'waiting', status: 'queued' });
      // The completion recorded before the restart is known: its duplicate is a no-op.
      expect(await b.json('POST', '/v1/tasks/done/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' }))
        .toEqual({ status: 200, body: { id: 'done', status: 'succeeded', attempt: 1 } });
      const dashboard = await b.json<{ throughput: Record<string, number> }>('GET', '/v1/dashboard');
      expect(dashboard.body.throughput).toMatchObject({ submitted_total: 2, completed_total: 1, assigned_total: 1 });
    }, 60_000);
  });
});
