import { execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Process plumbing the benchmarks share: running the infra scripts, finding free loopback ports,
 * talking to child processes over IPC, and reading what a process (or the machine) spent on CPU.
 */

/** Run a command to completion; rejects with its output when it fails or times out. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** CPU ms a process has used (Linux /proc; undefined elsewhere). */
export function procCpuMs(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms
  } catch {
    return undefined;
  }
}

/** Busy and total CPU ms of the whole machine (all cores), from /proc/stat. */
export function machineCpu(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = line.reduce((a, b) => a + b, 0) * 10;
    const idle = (line[3] + (line[4] ?? 0)) * 10;
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** Waits for messages of a child by kind, in order. */
export function mailbox(child: ChildProcess, name: string) {
  const queued: { kind: string }[] = [];
  const waiting: { kind: string; resolve: (m: never) => void; reject: (e: Error) => void }[] = [];
  let failed: Error | undefined;
  const fail = (e: Error) => {
    failed ??= e;
    for (const w of waiting.splice(0)) w.reject(e);
  };
  child.on('message', (m: { kind: string; message?: string }) => {
    if (m.kind === 'error') { fail(new Error(`${name}: ${m.message}`)); return; }
    const i = waiting.findIndex((w) => w.kind === m.kind);
    if (i >= 0) waiting.splice(i, 1)[0].resolve(m as never);
    else queued.push(m);
  });
  child.on('exit', (code) => fail(new Error(`${name} exited (${code})`)));
  return {
    next<T>(kind: string, timeoutMs = 300_000): Promise<T> {
      const i = queued.findIndex((m) => m.kind === kind);
      if (i >= 0) return Promise.resolve(queued.splice(i, 1)[0] as T);
      if (failed) return Promise.reject(failed);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: no ${kind} within ${timeoutMs} ms`)), timeoutMs);
        waiting.push({
          kind,
          resolve: (m) => { clearTimeout(timer); resolve(m as T); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        });
      });
    },
  };
}

/** Resolves when the child has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  return new Promise((r) => { if (child.exitCode !== null || child.signalCode !== null) r(); else child.once('exit', () => r()); });
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
