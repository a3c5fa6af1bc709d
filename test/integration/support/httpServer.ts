import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startServer, type RunningServer } from '../../../src/adapters/cli/startServer.js';
import { getSqliteEventLog } from '../../../src/adapters/log/sqliteEventLog.js';
import { parsePolicy, type PolicyInput } from '../../../src/domain/policy.js';

/** A real server on a loopback port over a real SQLite file, with its fatal errors recorded. */
export interface TestServer {
  server: RunningServer;
  url: string;
  dbPath: string;
  fatal: Error[];
  close(): Promise<void>;
}

export interface StartOptions {
  policy?: PolicyInput;
  standby?: boolean;
  /** Database file; a fresh one in a temp dir by default. */
  dbPath?: string;
}

const tempDirs: string[] = [];

export async function tempDbPath(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-http-'));
  tempDirs.push(dir);
  return join(dir, 'log.db');
}

export async function removeTempDirs(): Promise<void> {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
}

export async function startTestServer(o: StartOptions = {}): Promise<TestServer> {
  const dbPath = o.dbPath ?? await tempDbPath();
  const log = getSqliteEventLog({ path: dbPath, lockRetryMs: 50 });
  const fatal: Error[] = [];
  let server: RunningServer;
  try {
    server = await startServer({
      log,
      policy: parsePolicy(o.policy ?? {}),
      host: '127.0.0.1',
      port: 0,
      logger: pino({ level: 'silent' }),
      standby: o.standby ?? false,
      onFatal: (err) => { fatal.push(err); },
    });
  } catch (error) {
    await log.close();
    throw error;
  }
  return { server, url: server.url, dbPath, fatal, close: () => server.close() };
}

/** A small JSON client for one server. */
export function client(base: string) {
  const send = async (method: string, path: string, body?: unknown): Promise<Response> => fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return {
    base,
    get: (path: string) => send('GET', path),
    post: (path: string, body?: unknown) => send('POST', path, body),
    /** Body parsed as JSON, with the status, for one-line assertions. */
    async json<T = Record<string, unknown>>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: T }> {
      const r = await send(method, path, body);
      const text = await r.text();
      return { status: r.status, body: (text === '' ? undefined : JSON.parse(text)) as T };
    },
  };
}
export type Client = ReturnType<typeof client>;

export interface Issue { path: string; message: string }
export interface ErrorBody { error: string; message: string; issues?: Issue[] }

/** A minimal valid submission. */
export function task(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { tenant: 'acme', source: 'api', type: 'summarise', ...over };
}
