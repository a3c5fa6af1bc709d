import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { EventLog } from '../../runtime/eventLog.js';
import { getSqliteEventLog } from './sqliteEventLog.js';
import { getKafkaEventLog } from '../kafka/kafkaEventLog.js';

/** Where the durable log lives: `sqlite:<path>`, `kafka:<brokers>` or `esdb:<url>`. */
export interface LogTarget { kind: 'sqlite' | 'kafka' | 'esdb'; target: string }

/** Parse `--log`; the default is SQLite in the data dir. */
export function parseLogTarget(spec: string | undefined, dataDir: string): LogTarget {
  if (!spec) return { kind: 'sqlite', target: join(resolve(dataDir), 'switchyard.db') };
  const m = /^(sqlite|kafka|esdb):(.+)$/.exec(spec);
  if (!m) throw new Error(`--log must be sqlite:<path>, kafka:<brokers> or esdb:<url>, got "${spec}"`);
  return { kind: m[1] as LogTarget['kind'], target: m[1] === 'sqlite' ? resolve(m[2]) : m[2] };
}

/** `host:port,host:port` → a list, refusing an empty one. */
export function parseBrokers(spec: string): string[] {
  const brokers = spec.split(',').map((b) => b.trim()).filter((b) => b !== '');
  if (brokers.length === 0 || brokers.some((b) => !/^[^:\s]+:\d+$/.test(b))) {
    throw new Error(`Kafka brokers must be host:port[,host:port…], got "${spec}"`);
  }
  return brokers;
}

/** Open the log a target names. */
export async function openLog(t: LogTarget, options: { readonly?: boolean; prefix?: string } = {}): Promise<EventLog> {
  switch (t.kind) {
    case 'sqlite':
      if (!options.readonly) mkdirSync(dirname(t.target), { recursive: true });
      return getSqliteEventLog({ path: t.target, readonly: options.readonly });
    case 'kafka':
      return getKafkaEventLog({ brokers: parseBrokers(t.target), prefix: options.prefix, readonly: options.readonly, beforeCommit: crashHook() });
    case 'esdb': {
      // Loaded on use: the EventStoreDB client (gRPC) costs ~0.4 s to import, too much for every start.
      const { getEsdbEventLog } = await import('../esdb/esdbEventLog.js');
      return getEsdbEventLog({ connectionString: t.target, readonly: options.readonly });
    }
  }
}

/**
 * Fault injection for crash tests: with SWITCHYARD_KILL_BEFORE_COMMIT=n the process kills itself
 * (SIGKILL) inside its n-th append transaction, after the sends and before the commit.
 */
function crashHook(): (() => void) | undefined {
  const n = Number(process.env.SWITCHYARD_KILL_BEFORE_COMMIT);
  if (!Number.isSafeInteger(n) || n <= 0) return undefined;
  let commits = 0;
  return () => { if (++commits === n) process.kill(process.pid, 'SIGKILL'); };
}
