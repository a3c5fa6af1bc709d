import Database from 'better-sqlite3';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { getSqliteEventLog, writerLockPath, type SqliteEventLogOptions } from '../../src/adapters/log/sqliteEventLog.js';
import { WriterBusyError, type EventLog } from '../../src/runtime/eventLog.js';
import { eventLogContract, freshStream, range, readAll, recorder, waitFor, type EventLogFixture } from './eventLog.contract.js';
import { taskSubmitted, workload } from './sampleEvents.js';

eventLogContract('sqlite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-log-'));
  const path = join(dir, 'log.db');
  const logs: EventLog[] = [];
  const openLog = (): EventLog => {
    const log = getSqliteEventLog({ path });
    logs.push(log);
    return log;
  };
  const fixture: EventLogFixture = {
    log: openLog(),
    openSecond: async () => openLog(),
    cleanup: async () => {
      for (const log of logs) await log.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return fixture;
});

describe('sqlite event log', () => {
  let dir: string;
  let path: string;
  let stream: string;
  const logs: EventLog[] = [];
  const children: ChildProcess[] = [];

  const openLog = (options: Partial<SqliteEventLogOptions> = {}): EventLog => {
    const log = getSqliteEventLog({ path, ...options });
    logs.push(log);
    return log;
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'switchyard-sqlite-'));
    path = join(dir, 'log.db');
    stream = freshStream();
  });
  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const log of logs.splice(0)) await log.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('file format', () => {
    it('stores one row per event in WAL mode, with type, task id and time as columns and the event as JSON', async () => {
      const log = openLog();
      const submitted = taskSubmitted('t1');
      await log.append(stream, [submitted, ...workload(2)], 0);
      await log.saveSnapshot(stream, { version: 3, data: 'state' });

      const db = new Database(path, { readonly: true });
      try {
        expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
        const rows = db.prepare('SELECT stream, version, type, task_id, at, data FROM events ORDER BY position').all();
        expect(rows).toEqual([
          { stream, version: 1, type: 'TaskSubmitted', task_id: 't1', at: submitted.at, data: JSON.stringify(submitted) },
          expect.objectContaining({ version: 2, type: 'TaskSubmitted', task_id: 'task-0' }),
          expect.objectContaining({ version: 3, type: 'TaskAssigned', task_id: 'task-0' }),
        ]);
        expect(db.prepare('SELECT stream, version, data FROM snapshots').all()).toEqual([{ stream, version: 3, data: 'state' }]);
        expect(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").pluck().get()).toBe('1');
      } finally {
        db.close();
      }
    });

    it('names the stream and version of a row that is not valid JSON', async () => {
      const log = openLog();
      await log.append(stream, workload(3), 0);
      const db = new Database(path);
      db.prepare('UPDATE events SET data = ? WHERE stream = ? AND version = 2').run('{"type":"TaskAss', stream);
      db.close();

      await expect(readAll(log, stream)).rejects.toThrow(`stream ${stream} version 2 is not valid JSON`);
    });

    it('reads and subscribes across page boundaries', async () => {
      const log = openLog({ readPageSize: 7 });
      await log.append(stream, workload(50), 0);
      expect((await readAll(log, stream, 3)).map((s) => s.version)).toEqual(range(4, 50));

      const seen = recorder();
      const subscription = log.subscribe(stream, 0, seen.onEvents);
      await seen.until(50);
      await log.append(stream, workload(20, 'more'), 50);
      await seen.until(70);
      await subscription.close();
      expect(seen.versions()).toEqual(range(1, 70));
    });

    it('refuses :memory:, which no second process or writer lock could share', () => {
      expect(() => getSqliteEventLog({ path: ':memory:' })).toThrow(/needs a file path/);
    });
  });

  describe('subscriptions', () => {
    it('stops a subscription whose onEvents throws and reports the error', async () => {
      const reported: unknown[] = [];
      const log = openLog({ onSubscriptionError: (error) => reported.push(error) });
      let calls = 0;
      log.subscribe(stream, 0, () => {
        calls++;
        throw new Error('projection bug');
      });
      await log.append(stream, workload(1), 0);
      await waitFor(() => reported.length === 1, 'the error to be reported');
      await log.append(stream, workload(1, 'next'), 1);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(calls).toBe(1);
      expect((reported[0] as Error).message).toBe('projection bug');
    });

    it('lets onEvents close its own subscription', async () => {
      const log = openLog();
      await log.append(stream, workload(3), 0);
      let calls = 0;
      const subscription = log.subscribe(stream, 0, async () => {
        calls++;
        await subscription.close();
      });
      await waitFor(() => calls === 1, 'the first delivery');
      await log.append(stream, workload(1, 'after'), 3);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(calls).toBe(1);
    });
  });

  describe('read-only', () => {
    it('reads and follows the log while another connection writes, and refuses to write', async () => {
      const writer = openLog();
      await writer.append(stream, workload(3), 0);

      const reader = openLog({ readonly: true, pollMs: 10 });
      expect((await readAll(reader, stream)).map((s) => s.version)).toEqual([1, 2, 3]);
      const seen = recorder();
      const subscription = reader.subscribe(stream, 0, seen.onEvents);
      await writer.append(stream, workload(4, 'later'), 3);
      await seen.until(7);
      await subscription.close();
      expect(seen.versions()).toEqual(range(1, 7));
      expect(await reader.version(stream)).toBe(7);

      await expect(reader.append(stream, workload(1), 7)).rejects.toThrow(`${path} is open read-only: cannot append`);
      await expect(reader.saveSnapshot(stream, { version: 7, data: '' })).rejects.toThrow(/read-only: cannot save a snapshot/);
      await expect(reader.acquireWriter(stream, { wait: false })).rejects.toThrow(/read-only: cannot become the writer/);
      expect(await writer.version(stream)).toBe(7);
    });

    it('fails to open a missing file, naming it', () => {
      const missing = join(dir, 'missing.db');
      expect(() => getSqliteEventLog({ path: missing, readonly: true })).toThrow(`cannot open sqlite event log ${missing} read-only`);
    });
  });

  describe('writer lease', () => {
    it('refuses a second lease in the same process and frees it when the log closes', async () => {
      const log = openLog();
      await log.acquireWriter(stream, { wait: false });
      await expect(log.acquireWriter(stream, { wait: false })).rejects.toBeInstanceOf(WriterBusyError);
      await log.close();

      const lease = await openLog().acquireWriter(stream, { wait: false });
      await lease.release();
    });

    it('stops a standby waiting for the lease when its log closes', async () => {
      const holder = openLog();
      await holder.acquireWriter(stream, { wait: false });
      const standbyLog = openLog();
      const standby = standbyLog.acquireWriter(stream, { wait: true });
      await standbyLog.close();
      await expect(standby).rejects.toThrow(/closed while waiting to become the writer/);
    });
  });

  describe('across processes', () => {
    const builtAdapter = fileURLToPath(new URL('../../dist/src/adapters/log/sqliteEventLog.js', import.meta.url));
    const sourceAdapter = fileURLToPath(new URL('../../src/adapters/log/sqliteEventLog.ts', import.meta.url));

    beforeAll(() => {
      // The children run the compiled adapter, the code a deployment runs; a missing or stale
      // build would test something else.
      if (!existsSync(builtAdapter)) {
        throw new Error(`${builtAdapter} does not exist: run "npx tsc -p tsconfig.build.json" first (npm test builds before testing)`);
      }
      if (statSync(sourceAdapter).mtimeMs > statSync(builtAdapter).mtimeMs) {
        throw new Error(`${builtAdapter} is older than its source: run "npx tsc -p tsconfig.build.json" again`);
      }
    });

    /** Appends `rounds` batches from a JSON file, printing each acknowledged version, then idles. */
    const APPENDER = `
      import { readFileSync } from 'node:fs';
      const [adapter, path, stream, batchesFile, rounds, delayMs] = process.argv.slice(2);
      const { getSqliteEventLog } = await import(adapter);
      const batches = JSON.parse(readFileSync(batchesFile, 'utf8'));
      const log = getSqliteEventLog({ path });
      let version = await log.version(stream);
      for (let i = 0; i < Number(rounds); i++) {
        version = await log.append(stream, batches[i % batches.length], version);
        process.stdout.write('appended ' + version + '\\n');
        if (Number(delayMs) > 0) await new Promise((r) => setTimeout(r, Number(delayMs)));
      }
      process.stdout.write('done\\n');
      setInterval(() => {}, 1000);
    `;
    /** Becomes the writer of a stream, prints its pid, and idles. */
    const HOLDER = `
      const [adapter, path, stream] = process.argv.slice(2);
      const { getSqliteEventLog } = await import(adapter);
      const log = getSqliteEventLog({ path });
      await log.acquireWriter(stream, { wait: false });
      process.stdout.write('locked ' + process.pid + '\\n');
      setInterval(() => {}, 1000);
    `;

    /** Races for the next version `rounds` times; any failure other than ConcurrencyError is fatal. */
    const COMPETITOR = `
      const [adapter, path, stream, rounds, eventJson] = process.argv.slice(2);
      const { getSqliteEventLog } = await import(adapter);
      const log = getSqliteEventLog({ path });
      const event = JSON.parse(eventJson);
      process.stdout.write('ready\\n');
      while (!(await log.version(stream + '-start'))) await new Promise((r) => setTimeout(r, 1));
      let wins = 0;
      let losses = 0;
      for (let i = 0; i < Number(rounds); i++) {
        try {
          await log.append(stream, [event], await log.version(stream));
          wins++;
        } catch (error) {
          if (error.name !== 'ConcurrencyError') throw error;
          losses++;
        }
      }
      process.stdout.write('wins ' + wins + ' losses ' + losses + '\\n');
      await log.close();
    `;

    const startChild = async (source: string, args: string[]) => {
      const script = join(dir, `child-${children.length}.mjs`);
      await writeFile(script, source);
      const child = spawn(process.execPath, [script, pathToFileURL(builtAdapter).href, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
      child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
      const lines = () => stdout.split('\n').filter((l) => l.length > 0);
      return {
        child,
        lines,
        async waitForLine(match: (line: string) => boolean, what: string) {
          await waitFor(() => {
            if (lines().some(match)) return true;
            if (child.exitCode !== null) throw new Error(`child exited with ${child.exitCode} before ${what}: ${stderr}`);
            return false;
          }, `${what} from the child (stderr: ${stderr || 'empty'})`, 15_000);
        },
        async kill() {
          const exited = once(child, 'exit');
          child.kill('SIGKILL');
          await exited;
        },
      };
    };

    const writeBatches = async (batchSize: number, batches: number): Promise<string> => {
      const file = join(dir, 'batches.json');
      const events = workload(batchSize * batches);
      await writeFile(file, JSON.stringify(range(0, batches - 1).map((b) => events.slice(b * batchSize, (b + 1) * batchSize))));
      return file;
    };

    it('keeps every acknowledged append, and no partial batch, after the appender is killed with SIGKILL', async () => {
      const batchSize = 50;
      const batchesFile = await writeBatches(batchSize, 40);
      const appender = await startChild(APPENDER, [path, stream, batchesFile, '400', '0']);
      await appender.waitForLine((l) => l === 'appended 1000', 'an acknowledgement of version 1000');
      await appender.kill();
      const acknowledged = Math.max(...appender.lines().filter((l) => l.startsWith('appended ')).map((l) => Number(l.slice(9))));

      const log = openLog();
      const version = await log.version(stream);
      expect(version).toBeGreaterThanOrEqual(acknowledged);
      expect(version % batchSize).toBe(0);
      const stored = await readAll(log, stream);
      expect(stored.map((s) => s.version)).toEqual(range(1, version));
      const expected = workload(batchSize * 40);
      expect(stored.every((s) => JSON.stringify(s.event) === JSON.stringify(expected[(s.version - 1) % expected.length]))).toBe(true);
    });

    it('lets exactly one of two processes win each race for the same version', async () => {
      openLog();
      const competitors = await Promise.all(['a', 'b'].map((name) =>
        startChild(COMPETITOR, [path, stream, '300', JSON.stringify(taskSubmitted(`from-${name}`))])));
      for (const c of competitors) await c.waitForLine((l) => l === 'ready', 'readiness');
      await logs[0].append(`${stream}-start`, workload(1), 0);
      const results = [];
      for (const c of competitors) {
        await c.waitForLine((l) => l.startsWith('wins '), 'the tally');
        const [, wins, , losses] = c.lines().find((l) => l.startsWith('wins '))!.split(' ').map(Number);
        results.push({ wins, losses });
      }

      const version = await logs[0].version(stream);
      expect(version).toBe(results[0].wins + results[1].wins);
      expect((await readAll(logs[0], stream)).map((s) => s.version)).toEqual(range(1, version));
    });

    it('frees the writer lock of a holder killed with SIGKILL, and names the holder while it lives', async () => {
      const holder = await startChild(HOLDER, [path, stream]);
      await holder.waitForLine((l) => l.startsWith('locked '), 'the lock');
      const log = openLog();

      const refused = await log.acquireWriter(stream, { wait: false }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(WriterBusyError);
      const message = (refused as Error).message;
      expect(message).toContain('holds the data dir');
      expect(message).toContain(writerLockPath(path, stream));
      expect(message).toContain(`pid ${holder.child.pid}`);

      let takenOver = false;
      const standby = log.acquireWriter(stream, { wait: true }).then((lease) => {
        takenOver = true;
        return lease;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(takenOver).toBe(false);

      await holder.kill();
      const lease = await standby;
      await lease.release();
    });

    it('delivers to a read-only subscriber the events another process appends', async () => {
      await openLog().append(stream, workload(1, 'seed'), 0);
      const reader = openLog({ readonly: true });
      const seen = recorder();
      const subscription = reader.subscribe(stream, 0, seen.onEvents);

      const batchesFile = await writeBatches(5, 4);
      const appender = await startChild(APPENDER, [path, stream, batchesFile, '12', '5']);
      await appender.waitForLine((l) => l === 'done', 'the end of the appends');
      await seen.until(61);
      await subscription.close();
      expect(seen.versions()).toEqual(range(1, 61));
    });
  });
});
