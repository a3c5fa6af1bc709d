import Database from 'better-sqlite3';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startServer } from '../../src/adapters/cli/startServer.js';
import { getSqliteEventLog } from '../../src/adapters/log/sqliteEventLog.js';
import { parsePolicy } from '../../src/domain/policy.js';
import { WriterBusyError } from '../../src/runtime/eventLog.js';
import {
  client, removeTempDirs, startTestServer, task, tempDbPath, type TestServer,
} from './support/httpServer.js';

interface Delivery { kind: string; taskId: string; attempt: number }

const servers: TestServer[] = [];
async function start(dbPath: string, standby = false): Promise<TestServer> {
  const s = await startTestServer({ dbPath, standby });
  servers.push(s);
  return s;
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    await s.close();
    expect(s.fatal).toEqual([]);
  }
});
afterAll(removeTempDirs);

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms); });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('a restarted server on the same SQLite file', () => {
  it('does not time out agents for its own downtime: they get a fresh timeout period to be heard', async () => {
    const dbPath = await tempDbPath();
    const policy = { health: { agentTimeoutMs: 1500 }, tickMs: 50 };
    const first = await startTestServer({ dbPath, policy });
    servers.push(first);
    const a = client(first.url);
    expect((await a.post('/v1/agents/a1/ready', { capabilities: [], capacity: 1 })).status).toBe(200);
    expect((await a.post('/v1/tasks', task({ id: 'long' }))).status).toBe(202);
    await first.close();
    servers.splice(servers.indexOf(first), 1);
    // Down for longer than agentTimeoutMs: the agent could not be heard, through no fault of its own.
    await new Promise((r) => setTimeout(r, 2000));

    const second = await startTestServer({ dbPath, policy });
    servers.push(second);
    const b = client(second.url);
    await new Promise((r) => setTimeout(r, 300)); // several ticks
    expect((await b.json('GET', '/v1/tasks/long')).body).toMatchObject({ status: 'assigned', attempt: 1, agent: 'a1' });
    const resumed = second.server.runtime.state.agents.get('a1');
    expect(resumed?.alive).toBe(true);
    // The credit is a recorded fact, so replay and verify see it.
    const db = new Database(dbPath, { readonly: true });
    const types = (db.prepare('SELECT type FROM events').all() as { type: string }[]).map((r) => r.type);
    db.close();
    expect(types).toContain('DispatcherResumed');
    // A silent agent is still timed out, a whole period after the resume.
    await new Promise((r) => setTimeout(r, 1800));
    expect(second.server.runtime.state.agents.get('a1')?.alive).toBe(false);
  });

  it.each([
    ['from the snapshot saved at close', false],
    ['by replaying the whole log', true],
  ])('still has every task with its status, and delivers a still-assigned task to its agent again (%s)', async (_how, dropSnapshot) => {
    const dbPath = await tempDbPath();
    const first = await start(dbPath);
    const a = client(first.url);
    expect((await a.post('/v1/agents/a1/ready', { capabilities: ['x'], capacity: 2 })).status).toBe(200);
    for (const body of [
      task({ id: 'done', requires: ['x'] }),
      task({ id: 'running', requires: ['x'], payload: { step: 2 } }),
      task({ id: 'waiting', requires: ['gpu'] }),
      task({ id: 'dropped', requires: ['gpu'] }),
      task({ id: 'child', dependsOn: ['waiting'] }),
    ]) expect((await a.post('/v1/tasks', body)).status).toBe(202);
    const got = await (await a.get('/v1/agents/a1/assignments?waitMs=0')).json() as Delivery[];
    expect(got.map((d) => d.taskId).sort()).toEqual(['done', 'running']);
    expect((await a.post('/v1/tasks/done/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' })).status).toBe(200);
    expect((await a.post('/v1/tasks/dropped/cancel')).status).toBe(200);
    await first.close();
    await expect(fetch(`${first.url}/healthz`)).rejects.toThrow();
    if (dropSnapshot) {
      const db = new Database(dbPath);
      expect(db.prepare('DELETE FROM snapshots').run().changes).toBe(1);
      db.close();
    }

    const second = await start(dbPath);
    const b = client(second.url);
    const statuses: Record<string, unknown> = {};
    for (const id of ['done', 'running', 'waiting', 'dropped', 'child']) {
      const r = await b.json<{ status: string; attempt: number; agent: string | null }>('GET', `/v1/tasks/${id}`);
      expect(r.status, id).toBe(200);
      statuses[id] = r.body.status;
    }
    expect(statuses).toEqual({ done: 'succeeded', running: 'assigned', waiting: 'queued', dropped: 'cancelled', child: 'blocked' });
    expect((await b.json('GET', '/v1/tasks/running')).body).toMatchObject({ attempt: 1, agent: 'a1' });

    // At least once: the running assignment is delivered again, with the same attempt and payload.
    const again = await b.json<(Delivery & { payload: unknown })[]>('GET', '/v1/agents/a1/assignments?waitMs=1000');
    expect(again.status).toBe(200);
    expect(again.body).toEqual([expect.objectContaining({ kind: 'assignment', taskId: 'running', attempt: 1, payload: { step: 2 } })]);
    expect((await b.json('POST', '/v1/tasks/running/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' })).body)
      .toEqual({ id: 'running', status: 'succeeded', attempt: 1 });
    // The completion recorded before the restart is still known: its duplicate is a no-op.
    expect(await b.json('POST', '/v1/tasks/done/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' }))
      .toEqual({ status: 200, body: { id: 'done', status: 'succeeded', attempt: 1 } });
    const d = await b.json<{ throughput: Record<string, number> }>('GET', '/v1/dashboard');
    expect(d.body.throughput).toMatchObject({ submitted_total: 5, completed_total: 2, assigned_total: 2 });
  });
});

describe('a second server on a file another server writes', () => {
  it('refuses to start without standby, with a WriterBusyError', async () => {
    const dbPath = await tempDbPath();
    const first = await start(dbPath);
    const refused = startTestServer({ dbPath, standby: false });
    await expect(refused).rejects.toBeInstanceOf(WriterBusyError);
    await expect(refused).rejects.toThrow(/another dispatcher is the writer of dispatcher-main/);
    // The leader is untouched.
    expect((await fetch(`${first.url}/healthz`)).status).toBe(200);
    expect((await client(first.url).post('/v1/tasks', task({ id: 'still-leader' }))).status).toBe(202);
  });

  it('waits as a standby, and takes over and answers HTTP once the leader is closed', async () => {
    const dbPath = await tempDbPath();
    const first = await start(dbPath);
    expect((await client(first.url).post('/v1/tasks', task({ id: 'before' }))).status).toBe(202);
    let settled = false;
    const standby = start(dbPath, true).finally(() => { settled = true; });
    await new Promise((r) => setTimeout(r, 400));
    expect(settled).toBe(false);
    expect((await client(first.url).post('/v1/tasks', task({ id: 'while-standing-by' }))).status).toBe(202);

    await first.close();
    const second = await within(standby, 5000, 'the standby taking over');
    expect(second.url).not.toBe(first.url);
    const b = client(second.url);
    expect((await b.json('GET', '/healthz')).status).toBe(200);
    for (const id of ['before', 'while-standing-by']) expect((await b.json('GET', `/v1/tasks/${id}`)).body).toMatchObject({ id, status: 'queued' });
    expect(await b.json('POST', '/v1/tasks', task({ id: 'after' }))).toEqual({ status: 202, body: { id: 'after', status: 'queued' } });
  });
});

describe('server lifecycle', () => {
  it('answers a parked long-poll at once when the server closes', async () => {
    const s = await start(await tempDbPath());
    const c = client(s.url);
    expect((await c.post('/v1/agents/a1/ready', { capabilities: ['x'] })).status).toBe(200);
    const parked = c.get('/v1/agents/a1/assignments?waitMs=10000');
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    await s.close();
    expect(performance.now() - t0).toBeLessThan(2000);
    expect((await parked).status).toBe(204);
  });

  it('closes promptly after an agent aborted its long-poll', async () => {
    const s = await start(await tempDbPath());
    const c = client(s.url);
    expect((await c.post('/v1/agents/a1/ready', { capabilities: ['x'] })).status).toBe(200);
    const gone = new AbortController();
    const abandoned = fetch(`${s.url}/v1/agents/a1/assignments?waitMs=10000`, { signal: gone.signal }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 50));
    gone.abort();
    expect(await abandoned).toBeInstanceOf(Error);
    await new Promise((r) => setTimeout(r, 50));
    const t0 = performance.now();
    await s.close();
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('answers a poll that arrives after the dispatcher stopped with 503 at once', async () => {
    const s = await start(await tempDbPath());
    const c = client(s.url);
    expect((await c.post('/v1/agents/a1/ready', { capabilities: ['x'] })).status).toBe(200);
    await s.server.runtime.stop(); // the HTTP server is still up, as it is during close()
    const t0 = performance.now();
    const r = await c.json<{ error: string }>('GET', '/v1/agents/a1/assignments?waitMs=10000');
    expect(r).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((await c.json('GET', '/healthz')).status).toBe(503);
  });

  it('releases the writer lease when it cannot listen', async () => {
    const dbPath = await tempDbPath();
    const holder = await start(dbPath);
    const port = Number(new URL(holder.url).port);
    // Another file, same port: the dispatcher starts, the listen fails.
    const otherPath = await tempDbPath();
    const log = getSqliteEventLog({ path: otherPath });
    try {
      await expect(startServer({ log, policy: parsePolicy({}), port, logger: pino({ level: 'silent' }), onFatal: () => undefined }))
        .rejects.toThrow(/EADDRINUSE/);
      // Nobody else may be kept from the file by a server that never answered.
      const next = await start(otherPath);
      expect((await fetch(`${next.url}/healthz`)).status).toBe(200);
    } finally {
      await log.close();
    }
  });
});
