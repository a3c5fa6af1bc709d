import { execFile, fork, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { portFree } from './processes.js';

/**
 * The real processes of the chaos campaign: a Kafka broker it can stop and start again on the
 * same port and data dir, dispatchers and agents under a supervisor that restarts them when they
 * die (as systemd would), and a TCP proxy that is the one address HTTP clients use (a load
 * balancer in front of a leader and its standby: only the writer listens on HTTP).
 */

const infra = fileURLToPath(new URL('../../infra/kafka/', import.meta.url));
export const CLI = fileURLToPath(new URL('../src/adapters/cli/main.js', import.meta.url));
export const AGENT = fileURLToPath(new URL('./chaosAgent.js', import.meta.url));

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** GET a JSON answer; status 0 when nothing answered in time. */
export async function getJson<T>(url: string, timeoutMs = 3000): Promise<{ status: number; body?: T }> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) as T : undefined };
  } catch {
    return { status: 0 };
  }
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      resolve({ ok: !err, out: `${stdout}${stderr}${err ? `\n${err.message}` : ''}` });
    });
  });
}

/** A free port whose successor (the broker's controller listener) is free too. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const p = 20_000 + Math.floor(Math.random() * 30_000);
    if (await portFree(p) && await portFree(p + 1)) return p;
  }
  throw new Error('no free port pair for the broker');
}

/**
 * The campaign's own broker (never $KAFKA_BROKERS: a broker someone else owns cannot be stopped).
 * Restarts reuse the port and the data dir, so clients reconnect to the same address and every
 * topic, committed offset and transaction survives, as with a real broker restart.
 */
export class BrokerCtl {
  up = false;
  version = '?';
  private constructor(readonly port: number, readonly dir: string) {}

  static async create(dir: string, log: (l: string) => void): Promise<BrokerCtl> {
    const fetched = await run('bash', [join(infra, 'fetch.sh')], process.env, 600_000);
    if (!fetched.ok) throw new Error(`infra/kafka/fetch.sh failed:\n${fetched.out}`);
    log(`  ${fetched.out.trim().split('\n').at(-1)}`);
    const b = new BrokerCtl(await freePortPair(), dir);
    await b.start();
    return b;
  }

  get brokers(): string[] { return [`127.0.0.1:${this.port}`]; }

  private env(): NodeJS.ProcessEnv {
    // The watchdog stops the broker if the campaign dies without stopping it. A loaded machine
    // (and a broker recovering its logs after a SIGKILL) can take far longer than the default 60 s.
    return { ...process.env, KAFKA_WATCH_PID: String(process.pid), KAFKA_START_TIMEOUT: '240', KAFKA_STOP_TIMEOUT: '30' };
  }

  async start(): Promise<number> {
    const t0 = Date.now();
    // The port of a broker that just died can take a moment to be released: start.sh refuses a busy port.
    for (let i = 0; i < 600 && !(await portFree(this.port) && await portFree(this.port + 1)); i++) await sleep(100);
    for (let attempt = 1; ; attempt++) {
      const r = await run('bash', [join(infra, 'start.sh'), String(this.port), this.dir], this.env(), 300_000);
      if (r.ok) {
        this.version = /kafka (\S+) ready/.exec(r.out)?.[1] ?? this.version;
        this.up = true;
        return Date.now() - t0;
      }
      if (attempt >= 3) throw new Error(`the broker did not start (3 attempts):\n${r.out}`);
      await sleep(1000);
    }
  }

  /** A controlled shutdown (SIGTERM, then SIGKILL after 30 s): infra/kafka/stop.sh. */
  async stop(): Promise<void> {
    this.up = false;
    const r = await run('bash', [join(infra, 'stop.sh'), this.dir], this.env(), 120_000);
    if (!r.ok) throw new Error(`infra/kafka/stop.sh failed:\n${r.out}`);
  }

  /** SIGKILL: no controlled shutdown; the next start recovers the logs. */
  async kill(): Promise<void> {
    this.up = false;
    const pidFile = join(this.dir, 'kafka.pid');
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
      // stop.sh waits until the pid no longer runs a broker, then removes the pid file.
    }
    await this.stop();
  }
}

export interface ExitRecord { at: number; code: number | null; signal: NodeJS.Signals | null; uptimeMs: number }

/**
 * A process kept running: when it exits while wanted, it is started again after a backoff that
 * grows while it keeps dying young (a dispatcher that cannot reach its broker exits at once) and
 * resets after a healthy run.
 */
export class Supervised {
  proc: ChildProcess | undefined;
  wanted = false;
  starts = 0;
  readonly exits: ExitRecord[] = [];
  private startedAt = 0;
  private failures = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private readyWaiters: (() => void)[] = [];
  private isReady = false;
  /** Environment for the next start only (set by a fault, e.g. a self-kill inside a commit). */
  nextEnv: Record<string, string> | undefined;

  constructor(
    readonly name: string,
    private readonly launch: (env: Record<string, string>, logFd: number) => ChildProcess,
    private readonly logFile: string,
    /** How a start is known to be done: 'ipc' waits for {kind: 'started'}; 'spawn' is immediate. */
    private readonly readiness: 'ipc' | 'spawn',
  ) {}

  get alive(): boolean { return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null; }
  get pid(): number | undefined { return this.proc?.pid; }

  start(): void {
    this.wanted = true;
    if (this.alive || this.restartTimer) return;
    this.spawnNow();
  }

  private spawnNow(): void {
    this.restartTimer = undefined;
    if (!this.wanted) return;
    const env = this.nextEnv ?? {};
    this.nextEnv = undefined;
    const fd = openSync(this.logFile, 'a');
    const proc = this.launch(env, fd);
    closeSync(fd);
    this.proc = proc;
    this.starts++;
    this.startedAt = Date.now();
    this.isReady = false;
    if (this.readiness === 'spawn') this.markReady();
    proc.on('message', (m: { kind?: string }) => { if (m?.kind === 'started' && proc === this.proc) this.markReady(); });
    proc.once('exit', (code, signal) => {
      const uptimeMs = Date.now() - this.startedAt;
      this.exits.push({ at: Date.now(), code, signal, uptimeMs });
      if (proc !== this.proc) return;
      this.isReady = false;
      if (!this.wanted) return;
      this.failures = uptimeMs > 10_000 ? 0 : this.failures + 1;
      const backoff = Math.min(3000, 150 * 2 ** Math.min(this.failures, 5));
      this.restartTimer = setTimeout(() => this.spawnNow(), backoff);
    });
  }

  private markReady(): void {
    this.isReady = true;
    for (const w of this.readyWaiters.splice(0)) w();
  }

  /** Resolves once the current (or next) incarnation says it started. */
  ready(): Promise<void> {
    if (this.isReady && this.alive) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  /** SIGKILL; the supervisor restarts it (a crash). */
  crash(): void {
    this.proc?.kill('SIGKILL');
  }

  /** SIGKILL and keep it down until start() (an agent that is gone for a while). */
  killAndHold(): void {
    this.wanted = false;
    if (this.restartTimer) { clearTimeout(this.restartTimer); this.restartTimer = undefined; }
    this.proc?.kill('SIGKILL');
  }

  /** Stop for good, with `signal`, and wait for the exit (SIGKILL after graceMs). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 20_000): Promise<void> {
    this.wanted = false;
    if (this.restartTimer) { clearTimeout(this.restartTimer); this.restartTimer = undefined; }
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(signal);
    const timer = setTimeout(() => p.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

/** `switchyard serve …` under a supervisor; its output goes to a file. */
export function dispatcherProcess(name: string, args: string[], logFile: string): Supervised {
  return new Supervised(name, (env, fd) => spawn(process.execPath, [CLI, 'serve', ...args], {
    // CHAOS_DISPATCHER_LOG_LEVEL=trace puts kafkajs's own protocol log in the dispatcher logs, for diagnosis.
    env: { ...process.env, LOG_LEVEL: process.env.CHAOS_DISPATCHER_LOG_LEVEL ?? 'warn', ...env },
    stdio: ['ignore', fd, fd],
  }), logFile, 'spawn');
}

/** A chaos agent process under a supervisor; ready once it registered and receives. */
export function agentProcess(name: string, config: object, logFile: string): Supervised {
  return new Supervised(name, (env, fd) => fork(AGENT, [JSON.stringify(config)], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', fd, fd, 'ipc'],
    execArgv: ['--max-old-space-size=256'],
  }), logFile, 'ipc');
}

/**
 * A TCP proxy to whichever dispatcher listens: only the writer serves HTTP (a standby opens its
 * port when it takes over), so a refused connection means "try the other one". A client whose
 * backend dies sees its connection cut, as behind any load balancer.
 */
export class Proxy {
  private server: Server | undefined;
  private preferred = 0;
  private readonly sockets = new Set<Socket>();
  /** Connections and where they went, for diagnosis (set CHAOS_PROXY_LOG=<file>). */
  private readonly trace = process.env.CHAOS_PROXY_LOG;
  constructor(readonly port: number, private readonly backends: number[]) {}

  private note(line: string): void {
    if (this.trace) appendFileSync(this.trace, `${new Date().toISOString()} ${line}\n`);
  }

  get url(): string { return `http://127.0.0.1:${this.port}`; }

  async start(): Promise<void> {
    this.server = createServer((client) => {
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      client.on('error', () => undefined);
      client.pause();
      this.connectTo(client, 0);
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  private connectTo(client: Socket, tried: number): void {
    if (tried >= this.backends.length) {
      // No writer: answer 503 as a load balancer does. (Closing the accepted connection instead
      // made some fetch() calls hang forever: undici does not always notice a close that comes
      // before its request is written.)
      this.note(`client ${client.remotePort}: no backend`);
      const body = '{"error":"unavailable","message":"no dispatcher is serving"}';
      client.resume();
      client.end(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
      setTimeout(() => client.destroy(), 1000).unref();
      return;
    }
    const i = (this.preferred + tried) % this.backends.length;
    const upstream = connect(this.backends[i], '127.0.0.1');
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      this.note(`client ${client.remotePort}: connected to ${this.backends[i]}`);
      this.preferred = i;
      this.sockets.add(upstream);
      upstream.on('close', () => this.sockets.delete(upstream));
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    upstream.on('error', () => {
      if (!connected) this.connectTo(client, tried + 1);
      else client.destroy();
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}
