import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { portFree, run } from './processes.js';

/** A Kafka broker for a benchmark: $KAFKA_BROKERS, or one of our own from infra/kafka. */
const infra = fileURLToPath(new URL('../../infra/kafka/', import.meta.url));

export interface Broker {
  brokers: string[];
  pid?: number;
  version: string;
  stop(): Promise<void>;
}

/** A free port whose successor (the controller's) is free too. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = 20_000 + Math.floor(Math.random() * 30_000);
    if (await portFree(p) && await portFree(p + 1)) return p;
  }
  throw new Error('no free port pair for the broker');
}

export async function startBroker(log: (l: string) => void): Promise<Broker> {
  if (process.env.KAFKA_BROKERS) {
    return { brokers: process.env.KAFKA_BROKERS.split(',').map((b) => b.trim()), version: 'external (KAFKA_BROKERS)', stop: async () => undefined };
  }
  const fetched = await run('bash', [join(infra, 'fetch.sh')], process.env, 600_000);
  log(`  ${fetched.trim()}`);
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-kafka-'));
  const port = await freePortPair();
  const t0 = performance.now();
  // The watchdog stops the broker if this process dies without stopping it.
  const out = await run('bash', [join(infra, 'start.sh'), String(port), dir], { ...process.env, KAFKA_WATCH_PID: String(process.pid) }, 180_000);
  const version = /kafka (\S+) ready/.exec(out)?.[1] ?? '?';
  log(`  broker: Kafka ${version} on 127.0.0.1:${port}, data ${dir}, ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const pid = Number(readFileSync(join(dir, 'kafka.pid'), 'utf8').trim());
  return {
    brokers: [`127.0.0.1:${port}`], pid, version,
    async stop() {
      try { await run('bash', [join(infra, 'stop.sh'), dir], process.env, 60_000); } finally { rmSync(dir, { recursive: true, force: true }); }
    },
  };
}

