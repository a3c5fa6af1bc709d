import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  client, removeTempDirs, startTestServer, task, type Client, type ErrorBody, type TestServer,
} from './support/httpServer.js';

/** The contract fields of an assignment (DESIGN §5), plus the delivery `kind`. */
const ASSIGNMENT_KEYS = ['assignedAt', 'attempt', 'deadline', 'kind', 'payload', 'priority', 'sessionRef', 'taskId', 'tenant', 'type'];

interface Delivery { kind: string; taskId: string; attempt: number; [k: string]: unknown }
interface AgentView { id: string; state: string; capabilities: string[]; capacity: number; running: string[]; freeSlots: number }
interface HistoryEntry { type: string; summary: string; why?: { rule: string; [k: string]: unknown } }
interface TaskView { id: string; status: string; attempt: number; agent: string | null; history: HistoryEntry[] }

let srv: TestServer;
let c: Client;

async function start(policy?: Record<string, unknown>): Promise<void> {
  srv = await startTestServer({ policy });
  c = client(srv.url);
}

async function ready(agentId: string, capabilities: string[], capacity?: number): Promise<AgentView> {
  const r = await c.json<AgentView>('POST', `/v1/agents/${agentId}/ready`, capacity === undefined ? { capabilities } : { capabilities, capacity });
  expect(r.status).toBe(200);
  return r.body;
}

async function submit(body: Record<string, unknown>): Promise<string> {
  const r = await c.json<{ id: string; status: string }>('POST', '/v1/tasks', body);
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body.id;
}

async function poll(agentId: string, waitMs = 0): Promise<{ status: number; deliveries: Delivery[] }> {
  const r = await c.get(`/v1/agents/${agentId}/assignments?waitMs=${waitMs}`);
  const text = await r.text();
  return { status: r.status, deliveries: text === '' ? [] : JSON.parse(text) as Delivery[] };
}

async function getTask(id: string): Promise<TaskView> {
  const r = await c.json<TaskView>('GET', `/v1/tasks/${id}`);
  expect(r.status).toBe(200);
  return r.body;
}

async function dashboard(): Promise<Record<string, unknown> & { throughput: Record<string, number>; counts: Record<string, number> }> {
  const r = await c.json<Record<string, unknown> & { throughput: Record<string, number>; counts: Record<string, number> }>('GET', '/v1/dashboard');
  expect(r.status).toBe(200);
  return r.body;
}

/** The value of one Prometheus sample, by its full name with labels. */
async function metric(sample: string): Promise<number> {
  const text = await (await c.get('/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  if (line === undefined) throw new Error(`no sample ${sample} in /metrics`);
  return Number(line.slice(sample.length + 1));
}

afterEach(async () => {
  await srv?.close();
  expect(srv?.fatal ?? []).toEqual([]);
});
afterAll(removeTempDirs);

describe('POST /v1/tasks', () => {
  beforeEach(() => start());

  it('accepts a submission with 202 and answers its id and status, generating an id when none is given', async () => {
    const given = await c.json('POST', '/v1/tasks', task({ id: 'task-1' }));
    expect(given).toEqual({ status: 202, body: { id: 'task-1', status: 'queued' } });
    const generated = await c.json<{ id: string; status: string }>('POST', '/v1/tasks', task());
    expect(generated.status).toBe(202);
    expect(generated.body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(generated.body.status).toBe('queued');
    expect((await getTask(generated.body.id)).status).toBe('queued');
  });

  it('is idempotent by id: a second submission answers the same id and records no second task', async () => {
    expect(await c.json('POST', '/v1/tasks', task({ id: 'same', payload: { n: 1 } }))).toEqual({ status: 202, body: { id: 'same', status: 'queued' } });
    expect(await c.json('POST', '/v1/tasks', task({ id: 'same', payload: { n: 2 } }))).toEqual({ status: 202, body: { id: 'same', status: 'queued' } });
    const view = await getTask('same');
    expect(view.history.filter((h) => h.type === 'TaskSubmitted')).toHaveLength(1);
    const d = await dashboard();
    expect(d.throughput.submitted_total).toBe(1);
    expect(d.queue_depth).toEqual({ critical: 0, high: 0, normal: 1, low: 0 });
    expect(await metric('switchyard_tasks_submitted_total')).toBe(1);
  });

  it('records one task for concurrent submissions of the same id', async () => {
    const replies = await Promise.all(Array.from({ length: 20 }, () => c.json('POST', '/v1/tasks', task({ id: 'burst' }))));
    for (const r of replies) expect(r).toEqual({ status: 202, body: { id: 'burst', status: 'queued' } });
    expect((await getTask('burst')).history.filter((h) => h.type === 'TaskSubmitted')).toHaveLength(1);
    expect((await dashboard()).throughput.submitted_total).toBe(1);
  });

  it.each([
    ['an unknown field', task({ colour: 'red' }), 'colour', /unknown field/],
    ['a wrong type', task({ tenant: 42 }), 'tenant', /string/i],
    ['a missing field', { source: 'api', type: 'x' }, 'tenant', /.+/],
    ['a bad source enum', task({ source: 'email' }), 'source', /.+/],
    ['a bad priority enum', task({ priority: 'urgent' }), 'priority', /.+/],
    ['a bad deadline', task({ deadline: 'tomorrow at noon' }), 'deadline', /ISO-8601/],
    ['a non-integer estimate', task({ estimatedDurationMs: 1.5 }), 'estimatedDurationMs', /.+/],
    ['a nested wrong type', task({ requires: ['gpu', 7] }), 'requires.1', /.+/],
  ])('refuses %s with 400 and a zod issue naming the field', async (_what, body, path, message) => {
    const r = await c.json<ErrorBody>('POST', '/v1/tasks', body);
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('validation');
    expect(r.body.issues).toContainEqual({ path, message: expect.stringMatching(message) });
    // Nothing was recorded for a refused body.
    expect((await dashboard()).throughput.submitted_total).toBe(0);
    expect((await dashboard()).counts.rejected).toBe(0);
  });

  it('refuses a dependency on an unknown task with 400 naming dependsOn.N', async () => {
    await submit(task({ id: 'parent' }));
    const r = await c.json<ErrorBody>('POST', '/v1/tasks', task({ id: 'child', dependsOn: ['parent', 'ghost'] }));
    expect(r.status).toBe(400);
    expect(r.body.issues).toEqual([{ path: 'dependsOn.1', message: expect.stringContaining('ghost') }]);
    // The index is the one the client sent, duplicates included.
    const dup = await c.json<ErrorBody>('POST', '/v1/tasks', task({ id: 'child', dependsOn: ['parent', 'parent', 'ghost'] }));
    expect(dup.body.issues).toEqual([{ path: 'dependsOn.2', message: expect.stringContaining('"ghost"') }]);
    // A dependency on a known task is accepted and waits for it.
    expect(await c.json('POST', '/v1/tasks', task({ id: 'child2', dependsOn: ['parent'] }))).toEqual({ status: 202, body: { id: 'child2', status: 'blocked' } });
  });

  it('answers 413 for a body over the 1 MiB limit', async () => {
    const r = await c.post('/v1/tasks', task({ payload: { blob: 'x'.repeat(2 * 1024 * 1024) } }));
    expect(r.status).toBe(413);
    expect(await r.json()).toMatchObject({ error: 'too-large' });
    expect((await dashboard()).throughput.submitted_total).toBe(0);
  });

  it('answers 400 for malformed JSON', async () => {
    const r = await fetch(`${srv.url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"tenant": "acme",' });
    expect(r.status).toBe(400);
    expect(await r.json()).toMatchObject({ error: 'bad-request' });
  });
});

describe('POST /v1/tasks admission under quota and overload', () => {
  it('refuses work over the tenant maxQueued quota with 429 and the reason', async () => {
    await start({ quotas: { acme: { maxQueued: 2 } } });
    await submit(task({ id: 'q1' }));
    await submit(task({ id: 'q2' }));
    const r = await c.post('/v1/tasks', task({ id: 'q3' }));
    expect(r.status).toBe(429);
    expect(r.headers.get('retry-after')).toBe('1');
    const body = await r.json() as ErrorBody;
    expect(body.error).toBe('quota');
    expect(body.message).toMatch(/acme.*maxQueued 2/);
    // Other tenants are not limited by acme's quota; the refusal is on record.
    await submit(task({ id: 'other', tenant: 'globex' }));
    expect((await getTask('q3')).status).toBe('rejected');
    expect((await dashboard()).counts.rejected).toBe(1);
  });

  it('sheds new work above the high watermark with 429 and the reason, by priority, and always admits critical', async () => {
    await start({ shedding: { highWatermark: 2 } });
    await submit(task({ id: 'n1' }));
    await submit(task({ id: 'n2' }));
    // 2 waiting: low is shed at 2, normal only above 2.5.
    const low = await c.post('/v1/tasks', task({ id: 'low1', priority: 'low' }));
    expect(low.status).toBe(429);
    const body = await low.json() as ErrorBody;
    expect(body.error).toBe('shed');
    expect(body.message).toMatch(/shed under overload: 2 tasks waiting/);
    await submit(task({ id: 'n3' }));
    expect((await c.post('/v1/tasks', task({ id: 'n4' }))).status).toBe(429);
    expect(await c.json('POST', '/v1/tasks', task({ id: 'crit', priority: 'critical' }))).toEqual({ status: 202, body: { id: 'crit', status: 'queued' } });
    expect((await getTask('low1')).status).toBe('shed');
    expect((await dashboard()).counts.shed).toBe(2);
    expect(await metric('switchyard_tasks_shed_total')).toBe(2);
  });
});

describe('GET /v1/tasks/:id', () => {
  beforeEach(() => start());

  it('answers status, attempt, agent and the history of facts and decisions with why', async () => {
    await ready('a1', ['gpu']);
    await submit(task({ id: 't1', requires: ['gpu'] }));
    const v = await getTask('t1');
    expect(v).toMatchObject({ id: 't1', status: 'assigned', attempt: 1, agent: 'a1' });
    expect(v.history.map((h) => h.type)).toEqual(['TaskSubmitted', 'TaskAssigned']);
    expect(v.history[0].why).toBeUndefined();
    expect(v.history[1].why).toMatchObject({ rule: 'load-balance' });
    expect(v.history[1].summary).toMatch(/assigned to a1/);
  });

  it('answers 404 for an unknown task', async () => {
    const r = await c.json<ErrorBody>('GET', '/v1/tasks/nope');
    expect(r).toEqual({ status: 404, body: { error: 'not-found', message: expect.stringContaining('nope') } });
  });
});

describe('POST /v1/tasks/:id/cancel', () => {
  beforeEach(() => start());

  it('cancels a queued task with 200 and status cancelled', async () => {
    await submit(task({ id: 'c1' }));
    expect(await c.json('POST', '/v1/tasks/c1/cancel')).toEqual({ status: 200, body: { id: 'c1', status: 'cancelled' } });
    const v = await getTask('c1');
    expect(v.status).toBe('cancelled');
    expect(v.history.at(-1)).toMatchObject({ type: 'TaskCancelled', summary: expect.stringMatching(/by request/) });
  });

  it('tells the agent running a cancelled task with a cancellation on its long-poll', async () => {
    await ready('a1', ['x']);
    await submit(task({ id: 'c2', requires: ['x'] }));
    expect((await poll('a1')).deliveries).toMatchObject([{ kind: 'assignment', taskId: 'c2', attempt: 1 }]);
    const waiting = poll('a1', 10_000);
    const r = await c.json('POST', '/v1/tasks/c2/cancel', { reason: 'user gave up' });
    expect(r).toEqual({ status: 200, body: { id: 'c2', status: 'cancelled' } });
    const { status, deliveries } = await waiting;
    expect(status).toBe(200);
    expect(deliveries).toEqual([{ kind: 'cancellation', taskId: 'c2', attempt: 1, reason: 'user gave up', cancelledAt: expect.any(String) }]);
    // The slot is free again.
    const agents = await c.json<AgentView[]>('GET', '/v1/agents');
    expect(agents.body[0]).toMatchObject({ id: 'a1', state: 'idle', running: [], freeSlots: 1 });
  });

  it('accepts an empty body sent as JSON, as clients that always send content-type do', async () => {
    await submit(task({ id: 'c4' }));
    const r = await fetch(`${c.base}/v1/tasks/c4/cancel`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ id: 'c4', status: 'cancelled' });
  });

  it('refuses a body that tries to set __proto__', async () => {
    const r = await fetch(`${c.base}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"tenant":"a","source":"api","type":"t","__proto__":{"polluted":true}}' });
    expect(r.status).toBe(400);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('answers 404 for an unknown task and 400 for a bad body', async () => {
    expect((await c.json<ErrorBody>('POST', '/v1/tasks/ghost/cancel')).status).toBe(404);
    await submit(task({ id: 'c3' }));
    const bad = await c.json<ErrorBody>('POST', '/v1/tasks/c3/cancel', { reason: 5 });
    expect(bad.status).toBe(400);
    expect(bad.body.issues).toContainEqual({ path: 'reason', message: expect.any(String) });
  });
});

describe('POST /v1/agents/:id/ready and heartbeat', () => {
  beforeEach(() => start());

  it('registers an agent with 200, and a second ready does not add capacity', async () => {
    expect(await ready('a1', ['x'])).toMatchObject({ id: 'a1', state: 'idle', capabilities: ['x'], capacity: 1, freeSlots: 1 });
    await ready('a1', ['x']);
    await submit(task({ id: 'r1', requires: ['x'] }));
    await submit(task({ id: 'r2', requires: ['x'] }));
    expect((await getTask('r1')).status).toBe('assigned');
    expect((await getTask('r2')).status).toBe('queued');
    // Ready while running: still one slot, and it is taken.
    expect(await ready('a1', ['x'])).toMatchObject({ capacity: 1, running: ['r1'], freeSlots: 0 });
    expect((await getTask('r2')).status).toBe('queued');
  });

  it('updates the capabilities (and capacity) of a known agent', async () => {
    await ready('a1', ['x']);
    await submit(task({ id: 'u1', requires: ['y'] }));
    expect((await getTask('u1')).status).toBe('queued');
    expect((await dashboard()).counts.unroutable).toBe(1);
    expect(await ready('a1', ['y', 'x'], 2)).toMatchObject({ capabilities: ['x', 'y'], capacity: 2 });
    expect((await getTask('u1')).status).toBe('assigned');
    expect((await c.json<AgentView[]>('GET', '/v1/agents')).body).toMatchObject([{ id: 'a1', capabilities: ['x', 'y'], capacity: 2, freeSlots: 1 }]);
  });

  it.each([
    ['no capabilities', {}, 'capabilities'],
    ['capabilities of the wrong type', { capabilities: 'x' }, 'capabilities'],
    ['a zero capacity', { capabilities: ['x'], capacity: 0 }, 'capacity'],
    ['an unknown field', { capabilities: ['x'], speed: 2 }, 'speed'],
  ])('refuses a ready with %s with 400 naming the field', async (_what, body, path) => {
    const r = await c.json<ErrorBody>('POST', '/v1/agents/a1/ready', body);
    expect(r.status).toBe(400);
    expect(r.body.issues?.map((i) => i.path)).toContain(path);
    expect((await c.json('GET', '/v1/agents')).body).toEqual([]);
  });

  it('answers a heartbeat with 200 for a known agent and 404 for an unknown one', async () => {
    await ready('a1', ['x']);
    expect(await c.json('POST', '/v1/agents/a1/heartbeat')).toMatchObject({ status: 200, body: { id: 'a1', state: 'idle' } });
    expect(await c.json('POST', '/v1/agents/ghost/heartbeat')).toEqual({ status: 404, body: { error: 'not-found', message: expect.stringContaining('ghost') } });
  });
});

describe('GET /v1/agents/:id/assignments', () => {
  beforeEach(() => start());

  it('answers 200 with assignments carrying exactly the contract fields', async () => {
    await ready('a1', ['x']);
    const deadline = new Date(Date.now() + 3_600_000).toISOString();
    await submit(task({ id: 'f1', requires: ['x'], priority: 'high', sessionRef: 's-1', deadline, payload: { prompt: 'hi', n: [1, 2] } }));
    const { status, deliveries } = await poll('a1');
    expect(status).toBe(200);
    expect(deliveries).toHaveLength(1);
    expect(Object.keys(deliveries[0]).sort()).toEqual(ASSIGNMENT_KEYS);
    expect(deliveries[0]).toEqual({
      kind: 'assignment', taskId: 'f1', attempt: 1, tenant: 'acme', type: 'summarise', priority: 'high',
      payload: { prompt: 'hi', n: [1, 2] }, sessionRef: 's-1', deadline, assignedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    // Without the optional fields they are null, not missing.
    await ready('a2', ['z']);
    await submit(task({ id: 'f2', requires: ['z'] }));
    const bare = (await poll('a2')).deliveries[0];
    expect(Object.keys(bare).sort()).toEqual(ASSIGNMENT_KEYS);
    expect(bare).toMatchObject({ payload: null, sessionRef: null, deadline: null, priority: 'normal' });
  });

  it('answers 204 when nothing arrives by waitMs', async () => {
    await ready('a1', ['x']);
    const t0 = performance.now();
    const r = await c.get('/v1/agents/a1/assignments?waitMs=150');
    const ms = performance.now() - t0;
    expect(r.status).toBe(204);
    expect(await r.text()).toBe('');
    expect(ms).toBeGreaterThanOrEqual(140);
    expect((await c.get('/v1/agents/a1/assignments')).status).toBe(204);
  });

  it('answers a waiting long-poll the moment an assignment exists, not when the wait ends', async () => {
    await ready('a1', ['x']);
    const t0 = performance.now();
    const waiting = poll('a1', 10_000).then((r) => ({ ...r, ms: performance.now() - t0 }));
    await new Promise((r) => setTimeout(r, 50)); // the poll is parked before the task exists
    await submit(task({ id: 'fast', requires: ['x'] }));
    const { status, deliveries, ms } = await waiting;
    expect(status).toBe(200);
    expect(deliveries).toMatchObject([{ kind: 'assignment', taskId: 'fast' }]);
    expect(ms).toBeLessThan(1000);
  });

  it('keeps an assignment for the next poll when the agent hangs up as it is assigned', async () => {
    await ready('a1', ['x'], 10);
    for (let i = 0; i < 5; i++) {
      const gone = new AbortController();
      const abandoned = fetch(`${srv.url}/v1/agents/a1/assignments?waitMs=10000`, { signal: gone.signal }).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, 20)); // parked
      // The agent hangs up while the server is busy committing the task that will be assigned to it.
      const submitted = submit(task({ id: `hangup-${i}`, requires: ['x'] }));
      gone.abort();
      expect(await abandoned).toBeInstanceOf(Error);
      await submitted;
      expect((await poll('a1', 1000)).deliveries, `attempt ${i}`).toMatchObject([{ kind: 'assignment', taskId: `hangup-${i}` }]);
    }
  });

  it.each(['-1', 'abc', '1.5', ''])('answers 400 for waitMs=%s', async (raw) => {
    await ready('a1', ['x']);
    const r = await c.json<ErrorBody>('GET', `/v1/agents/a1/assignments?waitMs=${raw}`);
    expect(r.status).toBe(400);
    expect(r.body.issues).toEqual([{ path: 'waitMs', message: expect.any(String) }]);
  });

  it('answers 404 for an unknown agent', async () => {
    const r = await c.json<ErrorBody>('GET', '/v1/agents/ghost/assignments?waitMs=0');
    expect(r.status).toBe(404);
    expect(r.body.error).toBe('not-found');
  });
});

describe('POST /v1/tasks/:id/complete', () => {
  beforeEach(() => start());

  async function running(id: string, agentId = 'a1'): Promise<void> {
    await ready(agentId, ['x']);
    await submit(task({ id, requires: ['x'] }));
    expect((await poll(agentId)).deliveries).toMatchObject([{ taskId: id, attempt: 1 }]);
  }

  it('records a completion with 200, frees the slot for the next task, and a duplicate is a no-op 200', async () => {
    await running('d1');
    await submit(task({ id: 'd2', requires: ['x'] }));
    expect((await getTask('d2')).status).toBe('queued');
    const done = { agentId: 'a1', attempt: 1, outcome: 'succeeded', result: { summary: 'ok' } };
    expect(await c.json('POST', '/v1/tasks/d1/complete', done)).toEqual({ status: 200, body: { id: 'd1', status: 'succeeded', attempt: 1 } });
    expect((await poll('a1')).deliveries).toMatchObject([{ taskId: 'd2' }]);
    expect(await c.json('POST', '/v1/tasks/d1/complete', done)).toEqual({ status: 200, body: { id: 'd1', status: 'succeeded', attempt: 1 } });
    const v = await getTask('d1');
    expect(v.history.filter((h) => h.type === 'TaskCompleted')).toHaveLength(1);
    expect((await dashboard()).throughput.completed_total).toBe(1);
  });

  it('requeues a retryable failure with the next attempt', async () => {
    await running('d3');
    const r = await c.json('POST', '/v1/tasks/d3/complete', { agentId: 'a1', attempt: 1, outcome: 'failed', error: 'rate limited', retryable: true });
    expect(r).toEqual({ status: 200, body: { id: 'd3', status: 'queued', attempt: 1 } });
    expect((await getTask('d3')).history.at(-1)).toMatchObject({ type: 'TaskFailed', summary: expect.stringMatching(/rate limited; retry from/) });
  });

  it('refuses a stale attempt with 409', async () => {
    await running('d4');
    const stale = await c.json<ErrorBody>('POST', '/v1/tasks/d4/complete', { agentId: 'a1', attempt: 2, outcome: 'succeeded' });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ error: 'stale-attempt' });
    const otherAgent = await c.json<ErrorBody>('POST', '/v1/tasks/d4/complete', { agentId: 'a2', attempt: 1, outcome: 'succeeded' });
    expect(otherAgent.status).toBe(409);
    // An agent that left loses the task to a new attempt; its late completion is stale.
    expect((await c.post('/v1/agents/a1/leave')).status).toBe(200);
    expect((await getTask('d4'))).toMatchObject({ status: 'queued', attempt: 2 });
    expect((await c.json('POST', '/v1/tasks/d4/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' })).status).toBe(409);
    expect((await getTask('d4')).status).toBe('queued');
  });

  it('answers 404 for an unknown task', async () => {
    const r = await c.json<ErrorBody>('POST', '/v1/tasks/ghost/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' });
    expect(r.status).toBe(404);
  });

  it.each([
    ['a bad outcome', { agentId: 'a1', attempt: 1, outcome: 'done' }, 'outcome'],
    ['a missing agentId', { attempt: 1, outcome: 'succeeded' }, 'agentId'],
    ['attempt 0', { agentId: 'a1', attempt: 0, outcome: 'succeeded' }, 'attempt'],
    ['a non-boolean retryable', { agentId: 'a1', attempt: 1, outcome: 'failed', retryable: 'yes' }, 'retryable'],
    ['an unknown field', { agentId: 'a1', attempt: 1, outcome: 'succeeded', score: 1 }, 'score'],
  ])('answers 400 for %s', async (_what, body, path) => {
    await running('d5');
    const r = await c.json<ErrorBody>('POST', '/v1/tasks/d5/complete', body);
    expect(r.status).toBe(400);
    expect(r.body.issues?.map((i) => i.path)).toContain(path);
    expect((await getTask('d5')).status).toBe('assigned');
  });
});

describe('read endpoints', () => {
  beforeEach(() => start());

  it('lists agents by id with their state', async () => {
    await ready('b', ['x']);
    await ready('a', ['x', 'y'], 3);
    await submit(task({ id: 'l1', requires: ['y'] }));
    const r = await c.json<AgentView[]>('GET', '/v1/agents');
    expect(r.status).toBe(200);
    expect(r.body.map((a) => a.id)).toEqual(['a', 'b']);
    expect(r.body[0]).toMatchObject({ state: 'busy', capacity: 3, running: ['l1'], freeSlots: 2 });
    expect(r.body[1]).toMatchObject({ state: 'idle', capacity: 1, running: [], freeSlots: 1 });
  });

  it('serves the dashboard with the contract keys and numbers that follow the traffic', async () => {
    const empty = await dashboard();
    for (const key of ['queue_depth', 'agent_utilization', 'avg_wait_time_seconds', 'avg_task_duration_seconds', 'sla_compliance_pct',
      'fairness_distribution', 'wait_time_percentiles_seconds', 'throughput', 'counts']) {
      expect(empty, key).toHaveProperty(key);
    }
    expect(Object.keys(empty.queue_depth as object).sort()).toEqual(['critical', 'high', 'low', 'normal']);
    expect(Object.keys(empty.avg_wait_time_seconds as object).sort()).toEqual(['critical', 'high', 'low', 'normal']);
    expect(Object.keys(empty.agent_utilization as object).sort()).toEqual(['busy', 'idle', 'total']);
    for (const k of ['deferred', 'shed', 'unroutable', 'dead_lettered']) expect(empty.counts[k], k).toBe(0);
    expect(empty.sla_compliance_pct).toBe(100);
    expect(empty.fairness_distribution).toEqual({});

    await ready('a1', ['x'], 2);
    await ready('a2', ['x']);
    const deadline = new Date(Date.now() + 3_600_000).toISOString();
    await submit(task({ id: 'w1', tenant: 'acme', requires: ['x'], deadline, estimatedDurationMs: 1000 }));
    await submit(task({ id: 'w2', tenant: 'globex', requires: ['x'] }));
    await submit(task({ id: 'w3', tenant: 'acme', requires: ['nobody'], priority: 'high' }));
    await submit(task({ id: 'w4', tenant: 'acme', requires: ['nobody'], priority: 'low' }));
    const w1 = await getTask('w1');
    await new Promise((r) => setTimeout(r, 20));
    await c.json('POST', '/v1/tasks/w1/complete', { agentId: w1.agent, attempt: 1, outcome: 'succeeded' });

    const d = await dashboard();
    expect(d.queue_depth).toEqual({ critical: 0, high: 1, normal: 0, low: 1 });
    expect(d.agent_utilization).toEqual({ busy: 1, idle: 1, total: 2 });
    expect(d.avg_task_duration_seconds).toBeGreaterThan(0);
    expect(d.avg_task_duration_seconds).toBeLessThan(5);
    expect(d.sla_compliance_pct).toBe(100);
    expect(d.sla).toEqual({ met: 1, missed: 0 });
    expect(d.fairness_distribution).toEqual({ acme: 0.5, globex: 0.5 });
    expect(d.throughput).toMatchObject({ submitted_total: 4, assigned_total: 2, completed_total: 1 });
    expect(d.counts.unroutable).toBe(2);
    const avgWait = d.avg_wait_time_seconds as Record<string, number>;
    expect(avgWait.normal).toBeGreaterThanOrEqual(0);
    expect(avgWait.normal).toBeLessThan(1);
  });

  it('answers /healthz with 200', async () => {
    expect(await c.json('GET', '/healthz')).toMatchObject({ status: 200, body: { ok: true, log: 'sqlite', stream: 'dispatcher-main' } });
  });

  it('exposes Prometheus metrics that follow the traffic', async () => {
    const r = await c.get('/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await r.text();
    expect(text).toContain('# TYPE switchyard_queue_depth gauge');
    expect(text).toContain('# TYPE switchyard_wait_seconds histogram');
    expect(text).toMatch(/^switchyard_wait_seconds_bucket\{priority="normal",le="\+Inf"\} 0$/m);
    expect(await metric('switchyard_assignments_total')).toBe(0);

    await ready('a1', ['x']);
    await ready('a2', ['x']);
    await ready('a3', ['x']);
    await submit(task({ id: 'm1', requires: ['x'] }));
    await submit(task({ id: 'm2', requires: ['x'], priority: 'high' }));
    await submit(task({ id: 'm3', requires: ['gpu'], priority: 'low' }));
    await submit(task({ id: 'm4', requires: ['gpu'], priority: 'low' }));
    await c.post('/v1/agents/a3/leave');

    expect(await metric('switchyard_queue_depth{priority="low"}')).toBe(2);
    expect(await metric('switchyard_queue_depth{priority="normal"}')).toBe(0);
    expect(await metric('switchyard_queue_depth{priority="critical"}')).toBe(0);
    expect(await metric('switchyard_assignments_total')).toBe(2);
    expect(await metric('switchyard_agents{state="busy"}')).toBe(2);
    expect(await metric('switchyard_agents{state="idle"}')).toBe(0);
    expect(await metric('switchyard_agents{state="dead"}')).toBe(1);
    // Both assignments were immediate: counted in the smallest bucket and in +Inf, once each.
    expect(await metric('switchyard_wait_seconds_count{priority="normal"}')).toBe(1);
    expect(await metric('switchyard_wait_seconds_count{priority="high"}')).toBe(1);
    expect(await metric('switchyard_wait_seconds_bucket{priority="normal",le="+Inf"}')).toBe(1);
    expect(await metric('switchyard_wait_seconds_bucket{priority="normal",le="0.005"}')).toBe(1);
    expect(await metric('switchyard_wait_seconds_bucket{priority="normal",le="1800"}')).toBe(1);
    expect(await metric('switchyard_wait_seconds_bucket{priority="low",le="+Inf"}')).toBe(0);
  });

  it('answers an unknown route with 404 JSON', async () => {
    const r = await c.get('/v1/nowhere');
    expect(r.status).toBe(404);
    expect(r.headers.get('content-type')).toMatch(/application\/json/);
    expect(await r.json()).toEqual({ error: 'not-found', message: 'no route GET /v1/nowhere' });
    expect((await c.post('/v1/tasks/x/explode', {})).status).toBe(404);
  });
});

describe('policy', () => {
  it('runs Ticks at the configured tickMs, not the default', async () => {
    // With one tick a minute, nothing times the agent out between requests, however short agentTimeoutMs is.
    await start({ tickMs: 60_000, health: { agentTimeoutMs: 100 } });
    await ready('a1', ['x']);
    await new Promise((r) => setTimeout(r, 700));
    expect((await c.json<AgentView[]>('GET', '/v1/agents')).body).toMatchObject([{ id: 'a1', state: 'idle' }]);
    // The next command decides at its own time, and sees the silence.
    await submit(task({ id: 'late' }));
    expect((await c.json<AgentView[]>('GET', '/v1/agents')).body).toMatchObject([{ id: 'a1', state: 'dead' }]);
  });

  it('times a silent agent out and requeues its task with the next attempt', async () => {
    await start({ tickMs: 20, health: { agentTimeoutMs: 150 } });
    await ready('a1', ['x']);
    await submit(task({ id: 'orphan', requires: ['x'] }));
    expect((await getTask('orphan')).status).toBe('assigned');
    // Ticks every 20 ms notice the silence soon after 150 ms; the bound only guards a loaded machine.
    let v = await getTask('orphan');
    for (const t0 = performance.now(); v.status === 'assigned' && performance.now() - t0 < 5000;) {
      await new Promise((r) => setTimeout(r, 25));
      v = await getTask('orphan');
    }
    expect(v).toMatchObject({ status: 'queued', attempt: 2 });
    expect(v.history.at(-1)).toMatchObject({ type: 'TaskRequeued', why: { rule: 'agent-timed-out', agentId: 'a1', previousAttempt: 1 } });
    expect((await c.json('POST', '/v1/tasks/orphan/complete', { agentId: 'a1', attempt: 1, outcome: 'succeeded' })).status).toBe(409);
    expect(await metric('switchyard_agents{state="dead"}')).toBe(1);
  });
});
