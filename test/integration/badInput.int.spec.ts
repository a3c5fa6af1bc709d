/**
 * The bad-input campaign (issue "Proof", item 4): 1,000 seeded junk requests spread over every
 * HTTP route of a real server (loopback port, real SQLite file), then 1,000 junk records on the
 * Kafka input topics of a real dispatcher on a real broker. The cases and the judging are in
 * test/support/junk.ts (bench/badInput.ts runs the same with 10,000 a surface).
 */
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/adapters/cli/startServer.js';
import { getKafkaEventLog } from '../../src/adapters/kafka/kafkaEventLog.js';
import { topicNames } from '../../src/adapters/kafka/topics.js';
import { parsePolicy } from '../../src/domain/policy.js';
import { describeKafka, requireKafkaBrokers } from '../setup/kafka.js';
import {
  CAMPAIGN_POLICY, SHED_POLICY, checkAccepted, checkHealth, httpCases, httpClient, kafkaCases, makeWorld, prepareShed,
  prepareWorld, prototypeProblems, runHttpCases, runKafkaCases, type HttpClient, type HttpRoute,
} from '../support/junk.js';
import { removeTempDirs, startTestServer, type TestServer } from './support/httpServer.js';

const SEED = 0x5eed_bad;
const CASES = 1000;
const ROUTES: HttpRoute[] = [
  'POST /v1/tasks', 'GET /v1/tasks/:id', 'POST /v1/tasks/:id/cancel', 'POST /v1/tasks/:id/complete', 'POST /v1/agents/:id/ready',
  'POST /v1/agents/:id/heartbeat', 'POST /v1/agents/:id/leave', 'GET /v1/agents/:id/assignments', 'other',
];

/** At most `n` lines of a list, so a failure prints what matters. */
const first = (xs: string[], n = 30): string[] => (xs.length <= n ? xs : [...xs.slice(0, n), `… and ${xs.length - n} more`]);

describe('bad input over HTTP: 1,000 junk requests on every route of a real server', () => {
  let main: TestServer | undefined;
  let shed: TestServer | undefined;
  const clients: HttpClient[] = [];
  afterAll(async () => {
    for (const c of clients) c.close();
    await main?.close();
    await shed?.close();
    await removeTempDirs();
  });

  it('answers each with its expected status and a JSON error naming the problem; no crash, no pollution, no accepted task lost', async () => {
    main = await startTestServer({ policy: CAMPAIGN_POLICY });
    shed = await startTestServer({ policy: SHED_POLICY });
    const mc = httpClient(main.url);
    const sc = httpClient(shed.url);
    clients.push(mc, sc);
    const world = makeWorld(CASES);
    const alive = await prepareWorld(mc, world);
    await prepareShed(sc);

    const cases = httpCases(SEED, CASES, world);
    expect(new Set(cases.map((c) => c.route))).toEqual(new Set(ROUTES));
    const run = await runHttpCases({ main: mc, shed: sc, cases, concurrency: 16 });
    alive.stop();

    expect(first(run.violations)).toEqual([]);
    // The campaign reached every kind of answer.
    expect([...run.statuses.keys()]).toEqual(expect.arrayContaining([200, 202, 204, 400, 404, 409, 413, 415, 429]));
    // No crash: both servers answer, their dispatchers run, nothing fatal happened.
    expect([...await checkHealth(mc), ...await checkHealth(sc)]).toEqual([]);
    expect(main.server.runtime.healthy && shed.server.runtime.healthy).toBe(true);
    expect([...main.fatal, ...shed.fatal]).toEqual([]);
    // Nothing reached a prototype, here or in the server (it runs in this process).
    expect(prototypeProblems()).toEqual([]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // Every 202 is a task the server knows, with a valid status.
    expect(run.accepted.size).toBeGreaterThan(100);
    expect(first(await checkAccepted(mc, run.accepted))).toEqual([]);
  }, 60_000);

  it('keeps its fairness arithmetic numeric whatever the tenants are called (constructor, __proto__, toString…)', () => {
    // The campaign above submitted tasks for such tenants. A tenant's weight is looked up in the
    // policy's weights object (weightOf, src/domain/policy.ts): one named after an Object.prototype
    // member must still get a number, not the inherited function, or the sum of active weights
    // becomes a string and every tenant's fair target NaN (fairness deferral silently stops).
    const state = main!.server.runtime.state;
    const odd = [...state.tenants.values()].filter((t) => typeof t.weight !== 'number' || !Number.isFinite(t.weight)).map((t) => `${t.name}: ${typeof t.weight}`);
    expect(odd).toEqual([]);
    expect(typeof state.activeWeight === 'number' && Number.isFinite(state.activeWeight) ? 'finite number' : String(state.activeWeight).slice(0, 80)).toBe('finite number');
  });
});

describeKafka('bad input over Kafka: 1,000 junk records on <prefix>.tasks and <prefix>.agents', () => {
  let server: RunningServer | undefined;
  let client: HttpClient | undefined;
  afterEach(async () => {
    client?.close();
    await server?.close();
    server = undefined;
  });

  it('dead-letters each invalid record with its bytes and reason, accepts the valid ones, and keeps dispatching', async () => {
    const brokers = requireKafkaBrokers().split(',');
    const prefix = `junk${randomUUID().slice(0, 8)}`;
    const topics = topicNames(prefix);
    const fatal: Error[] = [];
    // The Kafka log: input offsets, dead letters and events commit in one transaction.
    server = await startServer({
      log: getKafkaEventLog({ brokers, prefix }), policy: parsePolicy(CAMPAIGN_POLICY), port: 0, logger: pino({ level: 'silent' }),
      kafka: { brokers, prefix }, onFatal: (e) => fatal.push(e),
    });
    client = httpClient(server.url);
    const world = makeWorld(CASES);
    const alive = await prepareWorld(client, world);

    const cases = kafkaCases(SEED, CASES, world);
    expect(new Set(cases.map((c) => c.topic))).toEqual(new Set(['tasks', 'agents']));
    const run = await runKafkaCases({ brokers, topics, cases, world, http: client, timeoutMs: 40_000 });
    alive.stop();

    expect(first(run.violations)).toEqual([]);
    expect(run.finalAssigned).toBe(true);
    expect(run.deadLetters).toBe(cases.filter((c) => c.expect.dead).length);
    expect([...run.codes.keys()]).toEqual(expect.arrayContaining(['validation', 'not-found', 'stale-attempt', 'agent-not-alive', 'quota']));
    expect(fatal).toEqual([]);
    expect(server.runtime.healthy).toBe(true);
    expect(await checkHealth(client)).toEqual([]);
    expect(prototypeProblems()).toEqual([]);
  }, 90_000);
});
