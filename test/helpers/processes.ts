import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

export const CLI = resolve('dist/src/adapters/cli/main.js');

/** The e2e tests run the built CLI, the real thing users run; `npm test` builds it first. */
export function requireBuild(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' (npm test does) before the e2e tests`);
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

export interface Child {
  proc: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

export function startCli(args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr?.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return { proc, output: () => out, exited };
}

/** Run the CLI to completion. */
export async function runCli(args: string[]): Promise<{ code: number | null; output: string }> {
  const c = startCli(args);
  const code = await c.exited;
  return { code, output: c.output() };
}

export async function waitForHttp(url: string, timeoutMs = 15_000, child?: Child): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(url);
      if (r.status < 500) return;
    } catch { /* not up yet */ }
    if (child && child.proc.exitCode !== null) throw new Error(`process exited (${child.proc.exitCode}) before answering: ${child.output()}`);
    if (Date.now() > until) throw new Error(`${url} did not answer within ${timeoutMs} ms${child ? `: ${child.output()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
