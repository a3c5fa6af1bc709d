/**
 * vitest globalSetup: one Kafka broker for the whole run, provided to tests as `kafkaBrokers`
 * (read it with test/setup/kafka.ts) and exported to child processes as $KAFKA_BROKERS.
 *
 * Where the broker comes from, first match wins:
 *   a. $KAFKA_BROKERS, if set: used as is, nothing started or stopped.
 *   b. java and mvn on PATH: infra/kafka/fetch.sh (jars via Maven, cached), then
 *      infra/kafka/start.sh on free ports with a temporary data dir: a real single-node
 *      Apache Kafka (KRaft, broker+controller in one JVM). Stopped and removed at teardown;
 *      a watchdog stops it too if this process dies without a teardown.
 *   c. a usable Docker engine (`docker info`): the kafka service of infra/docker-compose.yml
 *      (image and settings read from there) through testcontainers' GenericContainer.
 *   d. none: tests that need Kafka skip, and one loud "KAFKA TESTS SKIPPED: ..." line says why.
 * Under CI=true, when java and mvn are present but the broker does not come up, the run fails.
 *
 * Env: KAFKA_BROKERS, KAFKA_CACHE (jar cache, see infra/kafka/fetch.sh), KAFKA_KEEP_DATA=1
 * (keep the temporary data dir and kafka.log after the run), CI.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import type { TestProject } from 'vitest/node';
import type {} from './kafka.js'; // the ProvidedContext declaration of 'kafkaBrokers'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const KAFKA_DIR = join(ROOT, 'infra', 'kafka');
const COMPOSE_FILE = join(ROOT, 'infra', 'docker-compose.yml');

type Teardown = () => Promise<void>;
interface Kafka { brokers: string; teardown?: Teardown }

const log = (line: string): void => console.log(`[kafka] ${line}`);

export default async function setup(project: TestProject): Promise<Teardown | undefined> {
  const kafka = await findKafka();
  project.provide('kafkaBrokers', kafka?.brokers ?? '');
  if (kafka) process.env.KAFKA_BROKERS = kafka.brokers;
  else delete process.env.KAFKA_BROKERS;
  return kafka?.teardown;
}

async function findKafka(): Promise<Kafka | undefined> {
  const fromEnv = process.env.KAFKA_BROKERS?.trim();
  if (fromEnv) {
    log(`using KAFKA_BROKERS=${fromEnv}`);
    return { brokers: fromEnv };
  }

  const why: string[] = ['no KAFKA_BROKERS'];
  const ci = process.env.CI === 'true' || process.env.CI === '1';

  if (succeeds('java', ['-version']) && succeeds('mvn', ['-v'])) {
    try {
      return await startLocalBroker();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (ci) throw new Error(`Kafka: java and mvn are present but the local broker did not start (CI=true fails the run):\n${message}`);
      log(`local broker failed to start:\n${message}`);
      why.push('local broker failed to start (see above)');
    }
  } else {
    why.push('no java+mvn');
  }

  if (succeeds('docker', ['info'], 15_000)) {
    try {
      return await startDockerBroker();
    } catch (err) {
      log(`docker broker failed to start: ${err instanceof Error ? err.message : String(err)}`);
      why.push('docker broker failed to start (see above)');
    }
  } else {
    why.push('no docker');
  }

  console.log(`\n!!!!! KAFKA TESTS SKIPPED: ${why.join(', ')} !!!!!\n`);
  return undefined;
}

// --- b. local broker from Maven Central jars -------------------------------------------------

async function startLocalBroker(): Promise<Kafka> {
  const fetched = await run(join(KAFKA_DIR, 'fetch.sh'), []);
  if (fetched.code !== 0) throw new Error(`infra/kafka/fetch.sh exited ${fetched.code}:\n${tail(fetched.output)}`);
  log(`${lastLine(fetched.output)} [${seconds(fetched.ms)}]`);

  const [port, controllerPort] = await freePorts(2);
  const dataDir = mkdtempSync(join(tmpdir(), 'switchyard-kafka-'));
  const started = await run(join(KAFKA_DIR, 'start.sh'), [String(port), dataDir, String(controllerPort)], {
    KAFKA_WATCH_PID: String(process.pid),
  });
  if (started.code !== 0) {
    removeData(dataDir, false);
    throw new Error(`infra/kafka/start.sh exited ${started.code}:\n${tail(started.output)}`);
  }
  log(`${lastLine(started.output)}; data ${dataDir}`);

  const brokers = `127.0.0.1:${port}`;
  return {
    brokers,
    teardown: async () => {
      const stopped = await run(join(KAFKA_DIR, 'stop.sh'), [dataDir]);
      log(`${lastLine(stopped.output)} [${seconds(stopped.ms)}]`);
      removeData(dataDir, stopped.code === 0);
    },
  };
}

function removeData(dataDir: string, ok: boolean): void {
  if (process.env.KAFKA_KEEP_DATA === '1' || !ok) {
    log(`kept ${dataDir} (kafka.log is there)`);
    return;
  }
  rmSync(dataDir, { recursive: true, force: true });
}

// --- c. Docker, through testcontainers ----------------------------------------------------------

/** The kafka service of infra/docker-compose.yml: the one place its image and settings are pinned. */
function composeKafkaService(): { image: string; environment: Record<string, string> } {
  const compose = parseYaml(readFileSync(COMPOSE_FILE, 'utf8')) as {
    services?: { kafka?: { image?: string; environment?: Record<string, string | number | boolean> } };
  };
  const service = compose.services?.kafka;
  if (!service?.image || !service.environment) throw new Error(`${COMPOSE_FILE} has no kafka service with image and environment`);
  const environment = Object.fromEntries(Object.entries(service.environment).map(([k, v]) => [k, String(v)]));
  return { image: service.image, environment };
}

async function startDockerBroker(): Promise<Kafka> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const { image, environment } = composeKafkaService();
  // A fixed host port, so the broker can advertise the address clients reach it at (the
  // Docker engine is assumed to be local: remote DOCKER_HOSTs are not supported here).
  const [port] = await freePorts(1);
  log(`starting ${image} with Docker on 127.0.0.1:${port}...`);
  const begun = Date.now();
  const container = await new GenericContainer(image)
    .withEnvironment({ ...environment, KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://127.0.0.1:${port}` })
    .withExposedPorts({ container: 9092, host: port })
    .withWaitStrategy(Wait.forLogMessage(/Kafka Server started/))
    .withStartupTimeout(120_000)
    .start();
  log(`${image} ready on 127.0.0.1:${port} [${seconds(Date.now() - begun)}]`);
  return {
    brokers: `127.0.0.1:${port}`,
    teardown: async () => {
      await container.stop();
    },
  };
}

// --- helpers --------------------------------------------------------------------------------------

function succeeds(cmd: string, args: string[], timeout = 20_000): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout });
  return r.error === undefined && r.status === 0;
}

function run(script: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string; ms: number }> {
  const begun = Date.now();
  return new Promise((res, rej) => {
    const child = spawn('bash', [script, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    child.once('error', rej);
    child.once('close', (code) => res({ code, output, ms: Date.now() - begun }));
  });
}

/** n distinct free TCP ports on 127.0.0.1 (held open together, so they differ). */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      ports.push(await new Promise<number>((res, rej) => {
        s.once('error', rej);
        s.listen(0, '127.0.0.1', () => res((s.address() as { port: number }).port));
      }));
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((res) => s.close(() => res()))));
  }
}

const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';
const tail = (text: string, lines = 40): string => text.trim().split('\n').slice(-lines).join('\n');
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
