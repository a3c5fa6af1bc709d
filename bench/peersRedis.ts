import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, run } from './processes.js';

/**
 * A Redis server for the BullMQ side of the peer benchmark: Debian's redis-server, started by
 * infra/redis/start.sh on a free loopback port with a temporary data dir (the script installs
 * the package if it is missing), stopped by infra/redis/stop.sh. A watchdog stops it if this
 * process dies first.
 */

const infra = fileURLToPath(new URL('../../infra/redis/', import.meta.url));

export interface RedisServer {
  host: string;
  port: number;
  pid?: number;
  version: string;
  stop(): Promise<void>;
}

export async function startRedis(log: (l: string) => void): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-redis-'));
  const port = await freePort();
  const t0 = performance.now();
  let out: string;
  try {
    out = await run('bash', [join(infra, 'start.sh'), String(port), dir], { ...process.env, REDIS_WATCH_PID: String(process.pid) }, 600_000);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`could not start redis-server with infra/redis/start.sh: ${(e as Error).message}`);
  }
  const version = /redis (\S+) ready/.exec(out)?.[1] ?? '?';
  log(`  redis: ${version} on 127.0.0.1:${port}, data ${dir}, ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const pid = Number(readFileSync(join(dir, 'redis.pid'), 'utf8').trim());
  return {
    host: '127.0.0.1', port, pid, version,
    async stop() {
      try { await run('bash', [join(infra, 'stop.sh'), dir], process.env, 60_000); } finally { rmSync(dir, { recursive: true, force: true }); }
    },
  };
}
