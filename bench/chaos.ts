import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BrokerCtl, sleep } from './chaosProcesses.js';
import { runSegment, type SegmentResult } from './chaosSegment.js';
import type { Violation } from './chaosCheck.js';

/**
 * The chaos campaign: `npm run chaos -- --rounds N [--seed S]`.
 *
 * A real deployment of Switchyard (the built CLI's `serve`, a leader and a standby under a
 * supervisor that restarts them, agents as separate processes using the client library over Kafka
 * and HTTP, producers over HTTP and the Kafka tasks topic, and the campaign's own Kafka broker) is
 * put under a steady load while a seeded PRNG picks faults: SIGKILL a dispatcher (the leader or
 * the standby; sometimes armed to kill itself inside a later commit), SIGKILL an agent and revive
 * it (before or after the dispatcher times it out), stop or SIGKILL the broker and start it again.
 *
 * Most rounds run on the Kafka log (exactly once); the last quarter on the SQLite log with Kafka
 * ingress and egress (the outbox relay, at least once). After each round: everything is revived,
 * and once the fleet is healthy every accepted task must reach a terminal state within a bound; the
 * agents' receipts must show no (taskId, attempt) handled by two agents. At the end of each part:
 * every accepted task terminal in the log itself, no double assignment in the log, no delivery
 * the log does not have, and `switchyard verify` identical. Exit 1 on any violation.
 */

const KINDS = ['broker', 'dispatcher', 'agent'] as const;

export interface ChaosReport {
  seed: number;
  rounds: number;
  roundsRun: { kafka: number; sqlite: number };
  seconds: number;
  kills: Record<string, number>;
  dispatcherRestarts: number;
  tasks: { submitted: number; submittedHttp: number; submittedKafka: number; accepted: number; unacknowledged: number; refused: number; terminal: Record<string, number>; acceptedNotTerminal: number };
  deliveries: number;
  redeliveries: number;
  reattempts: number;
  verify: Record<string, string>;
  violations: Violation[];
  workDir: string;
}

function usage(): never {
  process.stderr.write(`usage: npm run chaos -- [--rounds N] [--seed S] [--first R] [--load-ms MS] [--mode both|kafka|sqlite] [--broker-faults both|stop|kill] [--report file.json] [--keep] [--keep-going]
  --rounds N      rounds in the campaign (default 10); the last quarter run on the SQLite log (--mode both)
  --seed S        seed of the fault plan (default: random, printed)
  --first R       start at round R of the N (re-run a failing round: same --seed, --rounds and --first)
  --load-ms MS    load (and fault) phase of a round (default 6000)
  --broker-faults how the broker is taken down: a controlled stop, a SIGKILL, or either (default both)
  --report FILE   write the summary as JSON
  --keep          keep the work dir (logs, receipts, broker data); it is kept anyway after a violation
  --keep-going    do not end a part early after a round that did not recover
`);
  process.exit(2);
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        rounds: { type: 'string', default: '10' },
        seed: { type: 'string' },
        first: { type: 'string', default: '1' },
        'load-ms': { type: 'string', default: '6000' },
        mode: { type: 'string', default: 'both' },
        'broker-faults': { type: 'string', default: 'both' },
        report: { type: 'string' },
        dir: { type: 'string' },
        keep: { type: 'boolean', default: false },
        'keep-going': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    process.stderr.write(`chaos: ${(e as Error).message}\n`);
    usage();
  }
  if (args.help) usage();
  const rounds = Number(args.rounds);
  const seed = args.seed === undefined ? Math.floor(Math.random() * 1e9) : Number(args.seed);
  const first = Number(args.first);
  const loadMs = Number(args['load-ms']);
  const mode = args.mode;
  const brokerFaults = args['broker-faults'];
  if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(seed) || !Number.isInteger(first) || first < 1 || first > rounds
    || !(loadMs >= 1000) || !['both', 'kafka', 'sqlite'].includes(mode)
    || !['both', 'stop', 'kill'].includes(brokerFaults)) usage();

  // Which rounds run on which log: the last quarter (at least one round when there are two or more) on SQLite.
  const sqliteRounds = mode === 'sqlite' ? rounds : mode === 'kafka' ? 0 : rounds >= 2 ? Math.max(1, Math.round(rounds / 4)) : 0;
  const kafkaRounds = rounds - sqliteRounds;
  const parts: { mode: 'kafka' | 'sqlite'; from: number; to: number }[] = [];
  if (kafkaRounds > 0 && first <= kafkaRounds) parts.push({ mode: 'kafka', from: first, to: kafkaRounds });
  if (sqliteRounds > 0) parts.push({ mode: 'sqlite', from: Math.max(first, kafkaRounds + 1), to: rounds });

  const log = (l: string): void => { process.stdout.write(`${l}\n`); };
  const workDir = args.dir ?? mkdtempSync(join(tmpdir(), 'switchyard-chaos-'));
  mkdirSync(workDir, { recursive: true });
  const t0 = Date.now();
  log(`chaos: seed ${seed}, rounds ${first}..${rounds} (${kafkaRounds} on the Kafka log, ${sqliteRounds} on SQLite + Kafka egress), load ${loadMs} ms a round`);
  log(`  machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}, node ${process.version}`);
  log(`  work dir ${workDir}`);

  const broker = await BrokerCtl.create(join(workDir, 'broker'), log);
  log(`  broker: Kafka ${broker.version} on 127.0.0.1:${broker.port} (the campaign's own: stopped and restarted on the same port and data dir)`);

  let stopping = false;
  const results: SegmentResult[] = [];
  const cleanup = async (): Promise<void> => { await broker.stop().catch(() => undefined); };
  process.once('SIGINT', () => { stopping = true; void cleanup().then(() => process.exit(130)); });

  try {
    for (const part of parts) {
      if (stopping) break;
      results.push(await runSegment({
        mode: part.mode, from: part.from, to: part.to, total: rounds, seed, loadMs, broker, log,
        dir: join(workDir, part.mode), keepGoing: args['keep-going'], brokerFaults: brokerFaults as 'both' | 'stop' | 'kill',
        // The first rounds of the campaign each get one fault of a given kind, so that even a
        // three-round run has every kind at least once.
        forcedKind: (r) => (r <= KINDS.length ? KINDS[r - 1] : undefined),
      }));
    }
  } finally {
    await broker.stop().catch((e: unknown) => log(`  broker stop failed: ${(e as Error).message}`));
  }

  const report = summarize(results, seed, rounds, (Date.now() - t0) / 1000, workDir);
  printSummary(report, log);
  if (args.report) writeFileSync(args.report, `${JSON.stringify(report, null, 2)}\n`);
  if (report.violations.length === 0 && !args.keep) {
    // The broker is stopped; give its last files a moment, then remove everything.
    await sleep(200);
    rmSync(workDir, { recursive: true, force: true });
  } else {
    log(`work dir kept: ${workDir}`);
  }
  return report.violations.length === 0 ? 0 : 1;
}

function add(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

function summarize(results: SegmentResult[], seed: number, rounds: number, seconds: number, workDir: string): ChaosReport {
  const kills: Record<string, number> = {};
  const terminal: Record<string, number> = {};
  const r: ChaosReport = {
    seed, rounds, roundsRun: { kafka: 0, sqlite: 0 }, seconds: Math.round(seconds), kills, dispatcherRestarts: 0,
    tasks: { submitted: 0, submittedHttp: 0, submittedKafka: 0, accepted: 0, unacknowledged: 0, refused: 0, terminal, acceptedNotTerminal: 0 },
    deliveries: 0, redeliveries: 0, reattempts: 0, verify: {}, violations: [], workDir,
  };
  for (const s of results) {
    r.roundsRun[s.mode] += s.roundsRun;
    add(kills, s.kills);
    r.dispatcherRestarts += s.dispatcherRestarts;
    r.tasks.submitted += s.submittedHttp + s.submittedKafka;
    r.tasks.submittedHttp += s.submittedHttp;
    r.tasks.submittedKafka += s.submittedKafka;
    r.tasks.accepted += s.accepted;
    r.tasks.unacknowledged += s.unacknowledged;
    r.tasks.refused += s.refused;
    add(terminal, s.terminal);
    r.tasks.acceptedNotTerminal += s.acceptedNotTerminal;
    r.deliveries += s.deliveries;
    r.redeliveries += s.redeliveries;
    r.reattempts += s.reattempts;
    r.verify[s.mode] = s.verify;
    r.violations.push(...s.violations);
  }
  return r;
}

function printSummary(r: ChaosReport, log: (l: string) => void): void {
  const total = Object.values(r.kills).reduce((a, b) => a + b, 0);
  log('');
  log('== chaos summary ==');
  log(`seed ${r.seed}: ${r.roundsRun.kafka + r.roundsRun.sqlite} rounds (${r.roundsRun.kafka} Kafka log, ${r.roundsRun.sqlite} SQLite log + Kafka egress) in ${r.seconds} s`);
  log(`faults: ${total} — ${Object.entries(r.kills).sort().map(([k, v]) => `${k} ${v}`).join(', ')}`);
  log(`dispatcher restarts by the supervisor: ${r.dispatcherRestarts}`);
  const t = r.tasks;
  log(`tasks: submitted ${t.submitted} (HTTP ${t.submittedHttp}, Kafka ${t.submittedKafka}), accepted ${t.accepted}, never acknowledged ${t.unacknowledged}, refused ${t.refused}`);
  log(`       terminal in the log: ${Object.entries(t.terminal).sort().map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; accepted but not terminal: ${t.acceptedNotTerminal}`);
  log(`deliveries ${r.deliveries}, redeliveries ${r.redeliveries} (same agent, same attempt, again), re-attempts ${r.reattempts} (attempt > 1)`);
  log(`verify: ${Object.entries(r.verify).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
  log(`violations: ${r.violations.length}`);
  const byKind = new Map<string, Violation[]>();
  for (const v of r.violations) byKind.set(v.kind, [...(byKind.get(v.kind) ?? []), v]);
  for (const [kind, vs] of byKind) {
    log(`  ${kind}: ${vs.length}`);
    for (const v of vs.slice(0, 3)) log(`    round ${v.round} (${v.mode}): ${v.message}${v.examples.length ? `; e.g. ${v.examples.join(' | ')}` : ''}`);
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`chaos: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(2);
});
