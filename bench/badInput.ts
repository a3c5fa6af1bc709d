import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, type RunningServer } from '../src/adapters/cli/startServer.js';
import { getKafkaEventLog } from '../src/adapters/kafka/kafkaEventLog.js';
import { topicNames } from '../src/adapters/kafka/topics.js';
import { getSqliteEventLog } from '../src/adapters/log/sqliteEventLog.js';
import { parsePolicy, type PolicyInput } from '../src/domain/policy.js';
import {
  CAMPAIGN_POLICY, SHED_POLICY, checkAccepted, checkHealth, httpCases, httpClient, kafkaCases, makeWorld, prepareShed, prepareWorld,
  prototypeProblems, runHttpCases, runKafkaCases,
} from '../test/support/junk.js';
import { startBroker } from './broker.js';
import { num, type BenchReport, type ResultRow } from './support.js';

/**
 * The bad-input campaign at scale (issue "Proof", item 4): the generator of
 * test/integration/badInput.int.spec.ts (test/support/junk.ts) with 10,000 cases a surface.
 *
 * 1. HTTP: 10,000 junk requests over every route of a real server (in this process, loopback
 *    port, SQLite in a temp dir), plus a second server overloaded on purpose for the shed cases.
 *    Every answer is judged (status, JSON error naming the problem, issues for a 400), then every
 *    accepted task is looked up.
 * 2. Kafka (when $KAFKA_BROKERS is set, or a broker can be started with infra/kafka/start.sh):
 *    10,000 raw records on `<prefix>.tasks` and `<prefix>.agents` of a dispatcher on the Kafka
 *    log; every invalid one must reach `<prefix>.dead-letter` with its bytes and reason, and a
 *    task sent after the junk must be assigned.
 *
 * Crashes (5xx, no answer, a fatal dispatcher error, /healthz not ok), prototype pollution and
 * every other violation are counted and the first ones printed.
 */

export interface BadInputOptions {
  /** Cases a surface. Default 10000. */
  cases?: number;
  seed?: number;
  /** HTTP requests in flight. Default 32. */
  concurrency?: number;
  /** Run the Kafka surface. Default: when a broker is at hand. */
  kafka?: boolean;
}

/** $KAFKA_BROKERS, or a broker of our own from infra/kafka (stopped after), or undefined. */
async function findBroker(log: (l: string) => void): Promise<{ brokers: string[]; stop(): Promise<void> } | undefined> {
  try {
    return await startBroker(log);
  } catch (e) {
    log(`  Kafka: no broker (${(e as Error).message.split('\n')[0]}); the Kafka surface is skipped`);
    return undefined;
  }
}

const fmt = (m: ReadonlyMap<number | string, number>): string => [...m].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}×${num(v)}`).join(' ');

/** Tenants whose fairness weight is not a number (named after an Object.prototype member), and what that did to the sum. */
function fairnessProblems(server: RunningServer): { tenants: number; problems: string[] } {
  const s = server.runtime.state;
  const bad = [...s.tenants.values()].filter((t) => typeof t.weight !== 'number' || !Number.isFinite(t.weight)).map((t) => `${JSON.stringify(t.name)} (${typeof t.weight})`);
  const problems = bad.length > 0 ? [`tenant weights that are not numbers: ${bad.join(', ')}`] : [];
  if (typeof s.activeWeight !== 'number' || !Number.isFinite(s.activeWeight)) problems.push(`activeWeight is a ${typeof s.activeWeight}: ${String(s.activeWeight).slice(0, 60)}…`);
  return { tenants: bad.length, problems };
}

async function sqliteServer(policy: PolicyInput, fatal: Error[]): Promise<{ server: RunningServer; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-junk-'));
  const server = await startServer({
    log: getSqliteEventLog({ path: join(dir, 'log.db') }), policy: parsePolicy(policy), port: 0, logger: pino({ level: 'silent' }),
    onFatal: (e) => fatal.push(e),
  });
  return { server, dir };
}

export async function runBadInput(options: BadInputOptions = {}, log: (l: string) => void = console.log): Promise<BenchReport> {
  const cases = options.cases ?? 10_000;
  const seed = options.seed ?? 0x5eed_bad;
  const concurrency = options.concurrency ?? 32;
  const results: ResultRow[] = [];
  const notes: string[] = [];
  const violations: string[] = [];
  const workload = [
    `seed ${seed.toString(16)}, ${num(cases)} cases a surface (test/support/junk.ts; the int test runs 1,000)`,
    `HTTP: every route, ${concurrency} requests in flight, SQLite log in a temp dir, a second server overloaded for the shed cases`,
  ];

  // --- HTTP --------------------------------------------------------------------------------
  {
    const fatal: Error[] = [];
    const main = await sqliteServer(CAMPAIGN_POLICY, fatal);
    const shed = await sqliteServer(SHED_POLICY, fatal);
    const mc = httpClient(main.server.url, concurrency);
    const sc = httpClient(shed.server.url, concurrency);
    try {
      const world = makeWorld(cases);
      const alive = await prepareWorld(mc, world);
      await prepareShed(sc);
      const list = httpCases(seed, cases, world);
      log(`  HTTP: ${num(list.length)} cases generated (${num(list.reduce((a, c) => a + (c.body?.length ?? 0), 0) / 2 ** 20, 0)} MiB of bodies)`);
      const run = await runHttpCases({ main: mc, shed: sc, cases: list, concurrency });
      alive.stop();
      const lost = await checkAccepted(mc, run.accepted);
      const health = [...await checkHealth(mc), ...await checkHealth(sc)];
      const crashes = run.results.filter((r) => r.status === 0 || r.status >= 500).length + fatal.length + health.length
        + (main.server.runtime.healthy && shed.server.runtime.healthy ? 0 : 1);
      const fairness = fairnessProblems(main.server);
      const http = [...run.violations, ...lost, ...health, ...fatal.map((e) => `fatal: ${e.message}`), ...fairness.problems];
      violations.push(...http.map((v) => `http ${v}`));
      log(`  HTTP: ${num(list.length)} answered in ${(run.ms / 1000).toFixed(1)} s; statuses ${fmt(run.statuses)}; ${num(run.accepted.size)} accepted; ${num(http.length)} violations`);
      results.push(
        { name: 'http cases', value: list.length, unit: 'requests' },
        { name: 'http requests/s', value: list.length / (run.ms / 1000), unit: '/s' },
        { name: 'http crashes (5xx, no answer, fatal, unhealthy)', value: crashes, unit: '', note: 'must be 0' },
        { name: 'http answers not as expected', value: run.violations.length, unit: '', note: 'must be 0' },
        { name: 'http accepted tasks (202)', value: run.accepted.size, unit: 'tasks' },
        { name: 'http accepted tasks not found after', value: lost.length, unit: '', note: 'must be 0' },
        { name: 'http tenants whose fairness weight is not a number', value: fairness.tenants, unit: '', note: 'must be 0' },
      );
      notes.push(`http statuses: ${fmt(run.statuses)}`);
      for (const [route, m] of [...run.byRoute].sort()) notes.push(`  ${route}: ${fmt(m)}`);
    } finally {
      mc.close();
      sc.close();
      await main.server.close();
      await shed.server.close();
      rmSync(main.dir, { recursive: true, force: true });
      rmSync(shed.dir, { recursive: true, force: true });
    }
  }

  // --- Kafka -------------------------------------------------------------------------------
  const broker = options.kafka === false ? undefined : await findBroker(log);
  if (broker) {
    const prefix = `junk${Date.now().toString(36)}`;
    const fatal: Error[] = [];
    workload.push(`Kafka: raw records on ${prefix}.tasks / ${prefix}.agents of a dispatcher on the Kafka log (exactly once), broker ${broker.brokers.join(',')}`);
    let server: RunningServer | undefined;
    let client: ReturnType<typeof httpClient> | undefined;
    try {
      server = await startServer({
        log: getKafkaEventLog({ brokers: broker.brokers, prefix }), policy: parsePolicy(CAMPAIGN_POLICY), port: 0, logger: pino({ level: 'silent' }),
        kafka: { brokers: broker.brokers, prefix }, onFatal: (e) => fatal.push(e),
      });
      client = httpClient(server.url);
      const world = makeWorld(cases);
      const alive = await prepareWorld(client, world);
      const list = kafkaCases(seed, cases, world);
      const expectedDead = list.filter((c) => c.expect.dead).length;
      log(`  Kafka: ${num(list.length)} records generated (${num(list.reduce((a, c) => a + (c.value?.length ?? 0), 0) / 2 ** 20, 0)} MiB), ${num(expectedDead)} of them invalid`);
      const run = await runKafkaCases({ brokers: broker.brokers, topics: topicNames(prefix), cases: list, world, http: client, timeoutMs: 600_000, log });
      alive.stop();
      const health = await checkHealth(client);
      const crashes = fatal.length + health.length + (server.runtime.healthy ? 0 : 1);
      const kafka = [...run.violations, ...health, ...fatal.map((e) => `fatal: ${e.message}`)];
      violations.push(...kafka.map((v) => `kafka ${v}`));
      log(`  Kafka: done in ${(run.ms / 1000).toFixed(1)} s; ${num(run.deadLetters)} dead letters (${fmt(run.codes)}); ${num(run.accepted)} accepted; task after the junk ${run.finalAssigned ? 'assigned' : 'NOT assigned'}; ${num(kafka.length)} violations`);
      results.push(
        { name: 'kafka records', value: list.length, unit: 'records' },
        { name: 'kafka records/s (to the last verdict)', value: list.length / (run.ms / 1000), unit: '/s' },
        { name: 'kafka dead letters', value: run.deadLetters, unit: 'records', note: `expected ${num(expectedDead)}` },
        { name: 'kafka accepted records', value: run.accepted, unit: 'records' },
        { name: 'kafka crashes (fatal, unhealthy)', value: crashes, unit: '', note: 'must be 0' },
        { name: 'kafka violations', value: kafka.length, unit: '', note: 'must be 0' },
        { name: 'kafka task after the junk assigned', value: run.finalAssigned ? 1 : 0, unit: '', target: { kind: 'min', value: 1 } },
      );
      notes.push(`kafka dead letters by code: ${fmt(run.codes)}`);
    } catch (e) {
      violations.push(`kafka campaign failed: ${(e as Error).message}`);
      results.push({ name: 'kafka crashes (fatal, unhealthy)', value: 1, unit: '', note: `must be 0: ${(e as Error).message.slice(0, 120)}` });
    } finally {
      client?.close();
      await server?.close().catch(() => undefined);
      await broker.stop();
    }
  } else {
    notes.push('kafka: skipped (no KAFKA_BROKERS and no broker could be started)');
  }

  const pollution = prototypeProblems();
  violations.push(...pollution.map((p) => `prototype ${p}`));
  results.push(
    { name: 'prototype pollution', value: pollution.length, unit: '', note: 'must be 0' },
    { name: 'violations in all', value: violations.length, unit: '', note: 'must be 0' },
  );
  for (const v of violations.slice(0, 25)) notes.push(`violation: ${v.length > 300 ? `${v.slice(0, 300)}…` : v}`);
  if (violations.length > 25) notes.push(`… and ${num(violations.length - 25)} more violations`);
  return { title: 'bad input: junk on every surface', workload, results, notes };
}
