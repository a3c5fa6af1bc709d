import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ChaosReport } from '../../bench/chaos.js';
import { requireBuild } from '../helpers/processes.js';

/**
 * The chaos campaign, three rounds (`npm run chaos -- --rounds 3`): real processes (the built CLI's
 * `serve` as a leader and a standby under a supervisor, agents using the client library over
 * Kafka and HTTP, producers over HTTP and Kafka) while a dispatcher, an agent and the broker are
 * killed. Its own broker, started and restarted by the campaign (the run's shared broker cannot
 * be stopped under the other tests). The campaign checks the invariants itself; this asserts it
 * found no violation and that every kind of fault happened.
 *
 * Needs java and mvn (the broker comes from infra/kafka). Without them the test is skipped with a
 * loud line, except under CI=true, where a missing Java or Maven fails it.
 */
const CHAOS = resolve('dist/bench/chaos.js');
const ci = process.env.CI === 'true' || process.env.CI === '1';
const canRunKafka = spawnSync('java', ['-version'], { stdio: 'ignore' }).status === 0 && spawnSync('mvn', ['-v'], { stdio: 'ignore', timeout: 20_000 }).status === 0;
if (!canRunKafka && !ci) console.log('\n!!!!! CHAOS TEST SKIPPED: no java+mvn for its own Kafka broker !!!!!\n');

describe.skipIf(!canRunKafka && !ci)('the chaos campaign, 3 rounds', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-chaos-test-'));
  let passed = false;
  // After a failure the work dir (dispatcher and agent logs, receipts, the broker's data) is the evidence: kept.
  afterAll(() => {
    if (passed) rmSync(dir, { recursive: true, force: true });
    else console.log(`chaos test: work dir kept at ${dir}`);
  });

  it('loses no acknowledged task, delivers no attempt to two agents, recovers, and verifies, under every kind of fault', async () => {
    if (!canRunKafka) throw new Error('CI=true: the chaos test needs java and mvn to start its own Kafka broker');
    requireBuild();
    if (!existsSync(CHAOS)) throw new Error(`${CHAOS} is missing: run 'npm run build' first`);
    const reportFile = join(dir, 'report.json');
    // The campaign runs as its own process: it forks agents and supervises dispatchers, and a
    // test worker is no place for that. KAFKA_BROKERS (the shared broker) is not for it.
    const env = { ...process.env };
    delete env.KAFKA_BROKERS;
    // Both deployments (rounds 1–2 on the Kafka log, round 3 on the SQLite log with Kafka ingress
    // and egress), with a controlled broker stop. Broker SIGKILLs run in the long campaign
    // (`npm run chaos`): on its one broker a SIGKILL mid-commit once left a transaction without
    // its marker (a hanging transaction, after an unclean election), which stops the Kafka log
    // until an operator ends it (README, Operations; BENCHMARKS.md §8).
    const child = spawn(process.execPath, [
      '--max-old-space-size=2048', CHAOS, '--rounds', '3', '--seed', '20261127', '--mode', 'both', '--broker-faults', 'stop',
      '--report', reportFile, '--dir', join(dir, 'work'),
    ], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    process.stdout.write(output.split('\n').filter((l) => /^(round|==|faults|tasks|deliveries|verify|violations| {2})/.test(l)).join('\n') + '\n');
    expect(existsSync(reportFile), output).toBe(true);
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as ChaosReport;
    expect(report.violations, output).toEqual([]);
    expect(code, output).toBe(0);
    const kills = (prefix: string) => Object.entries(report.kills).filter(([k]) => k.startsWith(prefix)).reduce((s, [, v]) => s + v, 0);
    expect(kills('dispatcher'), 'dispatcher kills').toBeGreaterThan(0);
    expect(kills('agent'), 'agent kills').toBeGreaterThan(0);
    expect(kills('broker'), 'broker restarts').toBeGreaterThan(0);
    expect(report.tasks.accepted).toBeGreaterThan(100);
    expect(report.tasks.acceptedNotTerminal).toBe(0);
    expect(Object.keys(report.verify).sort()).toEqual(['kafka', 'sqlite']);
    for (const v of Object.values(report.verify)) expect(v).toMatch(/^identical/);
    passed = true;
  }, 600_000);
});
