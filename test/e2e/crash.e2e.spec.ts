import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, requireBuild, runCli, startCli, waitForHttp, type Child } from '../helpers/processes.js';

describe('a dispatcher killed with SIGKILL mid-load', () => {
  let data: string;
  const children: Child[] = [];
  beforeAll(() => { requireBuild(); data = mkdtempSync(join(tmpdir(), 'switchyard-crash-')); });
  afterAll(() => { for (const c of children) c.proc.kill('SIGKILL'); });

  it('keeps every acknowledged task in the right state after restart, and verify passes', async () => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const first = startCli(['serve', '--data', data, '--port', String(port)]);
    children.push(first);
    await waitForHttp(`${base}/healthz`, 15_000, first);

    // One agent takes and completes work while producers load the server.
    const post = (path: string, body: unknown) => fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post('/v1/agents/a1/ready', { capabilities: ['x'], capacity: 4 })).status).toBe(200);
    const acked = new Map<string, number>();
    const completed = new Set<string>();
    let killed = false;
    const producers = Array.from({ length: 4 }, async (_, p) => {
      for (let i = 0; !killed; i++) {
        const id = `t-${p}-${i}`;
        try {
          const r = await post('/v1/tasks', { id, tenant: `tenant-${p}`, source: 'api', type: 'job', requires: ['x'] });
          if (r.status === 202) acked.set(id, r.status);
        } catch { return; }
      }
    });
    const agent = (async () => {
      while (!killed) {
        try {
          const r = await fetch(`${base}/v1/agents/a1/assignments?waitMs=200`);
          if (r.status !== 200) continue;
          for (const a of await r.json() as { taskId: string; attempt: number }[]) {
            const c = await post(`/v1/tasks/${a.taskId}/complete`, { agentId: 'a1', attempt: a.attempt, outcome: 'succeeded' });
            if (c.status === 200) completed.add(a.taskId);
          }
        } catch { return; }
      }
    })();
    await new Promise((r) => setTimeout(r, 1500));
    first.proc.kill('SIGKILL');
    killed = true;
    await first.exited;
    await Promise.allSettled([...producers, agent]);
    expect(acked.size).toBeGreaterThan(50);

    const second = startCli(['serve', '--data', data, '--port', String(port)]);
    children.push(second);
    await waitForHttp(`${base}/healthz`, 15_000, second);
    for (const id of acked.keys()) {
      const r = await fetch(`${base}/v1/tasks/${id}`);
      expect(r.status, `acknowledged task ${id} after restart`).toBe(200);
      const body = await r.json() as { status: string };
      if (completed.has(id)) expect(body.status, id).toBe('succeeded');
      else expect(['queued', 'assigned', 'succeeded']).toContain(body.status);
    }
    second.proc.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    const v = await runCli(['verify', '--data', data]);
    expect(v.output).toMatch(/identical/);
    expect(v.code).toBe(0);
  }, 90_000);
});
