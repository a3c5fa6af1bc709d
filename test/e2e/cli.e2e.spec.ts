import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { requireBuild, runCli } from '../helpers/processes.js';

describe('the switchyard CLI', () => {
  beforeAll(() => requireBuild());

  it.each(['serve', 'demo', 'replay', 'explain', 'verify'])('prints help for %s and exits 0', async (cmd) => {
    const r = await runCli([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.output).toContain(`Usage: switchyard ${cmd}`);
    expect(r.output).toContain('--data');
  });

  it('answers a usage error with one clear line and a non-zero exit', async () => {
    const unknownFlag = await runCli(['replay', '--bogus']);
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.output.trim().split('\n')).toHaveLength(1);
    expect(unknownFlag.output).toMatch(/--bogus/);
    const unknownCommand = await runCli(['frobnicate']);
    expect(unknownCommand.code).toBe(2);
    expect(unknownCommand.output).toMatch(/unknown command "frobnicate"/);
    const badPort = await runCli(['serve', '--port', 'eighty']);
    expect(badPort.code).toBe(2);
    expect(badPort.output).toMatch(/--port must be an integer/);
  });

  it('refuses a policy file with an unknown key, naming it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchyard-cli-'));
    const cfg = join(dir, 'policy.json');
    writeFileSync(cfg, JSON.stringify({ fairness: { windowMs: 1000, bogus: 1 } }));
    const r = await runCli(['serve', '--data', dir, '--port', '0', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.output).toMatch(/fairness\.bogus: unknown key/);
  });

  it('runs a demo that shows every rule, then replays, explains and verifies its log', async () => {
    const data = mkdtempSync(join(tmpdir(), 'switchyard-demo-'));
    const demo = await runCli(['demo', '--seconds', '6', '--data', data]);
    expect(demo.code, demo.output).toBe(0);
    for (const rule of ['priority queues', 'capability routing', 'load balancing', 'affinity', 'deadlines', 'aging', 'fairness', 'quotas', 'dependencies', 'graceful degradation', 'health', 'retries']) {
      expect(demo.output).toContain(rule);
    }
    expect(demo.output).toMatch(/timed out: agent-07/);
    expect(demo.output).toMatch(/\[\s*\d+\.\ds\] queue c\/h\/n\/l/);

    const replay = await runCli(['replay', '--json', '--data', data]);
    expect(replay.code).toBe(0);
    const dash = JSON.parse(replay.output) as Record<string, unknown>;
    for (const k of ['queue_depth', 'agent_utilization', 'avg_wait_time_seconds', 'avg_task_duration_seconds', 'sla_compliance_pct', 'fairness_distribution']) {
      expect(dash).toHaveProperty(k);
    }
    expect((dash.throughput as { completed_total: number }).completed_total).toBeGreaterThan(10);

    const explain = await runCli(['explain', 'incident-1', '--data', data]);
    expect(explain.code).toBe(0);
    expect(explain.output).toMatch(/Task incident-1: \w+/);
    expect(explain.output).toMatch(/assigned to agent-\d\d/);
    expect(explain.output).toMatch(/why: /);

    const missing = await runCli(['explain', 'no-such-task', '--data', data]);
    expect(missing.code).toBe(1);

    const verify = await runCli(['verify', '--data', data]);
    expect(verify.output).toMatch(/verify: identical/);
    expect(verify.code).toBe(0);
  }, 60_000);
});
