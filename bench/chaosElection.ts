import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import kafkajs from 'kafkajs';
import { decodeClaim } from '../src/adapters/kafka/kafkaEventLog.js';
import { createKafka, topicNames } from '../src/adapters/kafka/topics.js';
import { Rng } from './chaosRandom.js';
import { BrokerCtl, dispatcherProcess, getJson, sleep } from './chaosProcesses.js';
import { freePort } from './processes.js';

/**
 * Writer election under double kills: `npm run chaos:election -- --rounds N [--seed S]`.
 *
 * Two `serve` processes on the Kafka log (a writer and a standby, under a supervisor that restarts
 * whatever dies) and no load: each round SIGKILLs both, the writer or the standby first and the
 * other 0–1.2 s later, and measures how long until one of the restarted processes answers
 * /healthz as the writer. The case the full campaign hits only now and then (its rounds 25–26):
 * both restarts find the dead members still in the election group, and their first try gives up
 * while its join is still under way. A round without a writer within --stall-ms is a stall: the
 * group's members and their claims are printed, and the run exits 1.
 */

function usage(): never {
  process.stderr.write(`usage: npm run chaos:election -- [--rounds N] [--seed S] [--stall-ms MS] [--keep]
  --rounds N     double kills (default 30)
  --seed S       seed of the kill order and gaps (default: random, printed)
  --stall-ms MS  a round without a writer for this long is a stall (default 60000)
  --keep         keep the work dir (dispatcher logs, broker data); it is kept anyway after a stall
`);
  process.exit(2);
}

async function main(): Promise<number> {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        rounds: { type: 'string', default: '30' },
        seed: { type: 'string' },
        'stall-ms': { type: 'string', default: '60000' },
        keep: { type: 'boolean', default: false },
        help: { type: 'boolean', default: false },
      },
    }));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    usage();
  }
  if (args.help) usage();
  const rounds = Number(args.rounds);
  const seed = args.seed === undefined ? Math.floor(Math.random() * 1e9) : Number(args.seed);
  const stallMs = Number(args['stall-ms']);
  if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(seed) || !Number.isInteger(stallMs) || stallMs < 1000) usage();

  const t0 = Date.now();
  const log = (line: string): void => { process.stdout.write(`${line}\n`); };
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-election-'));
  log(`election: seed ${seed}, ${rounds} double kills, stall after ${stallMs} ms`);
  log(`  machine: ${cpus().length} × ${cpus()[0]?.model.split(' ').slice(0, 2).join(' ')}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}, node ${process.version}`);
  log(`  work dir ${dir}`);
  const broker = await BrokerCtl.create(join(dir, 'broker'), log);
  log(`  broker: Kafka ${broker.version} on 127.0.0.1:${broker.port}`);

  const ports = [await freePort(), await freePort()];
  const policyFile = join(dir, 'policy.json');
  writeFileSync(policyFile, JSON.stringify({ health: { agentTimeoutMs: 3000 } }));
  const prefix = 'election';
  const dispatchers = ports.map((port, i) => dispatcherProcess(`d${i + 1}`, [
    '--log', `kafka:${broker.brokers.join(',')}`, '--data', join(dir, `data-${i + 1}`), '--topic-prefix', prefix,
    '--port', String(port), '--config', policyFile,
  ], join(dir, `dispatcher-${i + 1}.log`)));

  /** Which dispatcher serves (only the writer listens). */
  const writer = async (): Promise<number | undefined> => {
    const answers = await Promise.all(ports.map((p) => getJson(`http://127.0.0.1:${p}/healthz`, 1500)));
    const i = answers.findIndex((a) => a.status === 200);
    return i < 0 ? undefined : i;
  };
  const waitWriter = async (timeoutMs: number): Promise<number | undefined> => {
    for (const until = Date.now() + timeoutMs; Date.now() < until; await sleep(100)) {
      const i = await writer();
      if (i !== undefined) return i;
    }
    return undefined;
  };

  /** The election group as the broker sees it: each member, its claim, and whether it holds the partition. */
  const describeGroup = async (): Promise<string> => {
    const admin = createKafka(broker.brokers, 'election-describe').admin();
    await admin.connect();
    try {
      const groupId = topicNames(prefix).leader('dispatcher-main');
      const { groups } = await admin.describeGroups([groupId]);
      return (groups[0]?.members ?? []).map((m) => {
        const claim = decodeClaim(m.memberMetadata);
        const assignment = m.memberAssignment.length > 0 ? kafkajs.AssignerProtocol.MemberAssignment.decode(m.memberAssignment) : null;
        const holds = (assignment?.assignment[groupId] ?? []).includes(0);
        return `    ${m.memberId}: pid ${claim.pid ?? '?'}, waiting since ${claim.since}${claim.gaveUp ? ', gave up' : ''}${holds ? ', HOLDS the partition' : ''}`;
      }).join('\n') || '    (no members)';
    } finally {
      await admin.disconnect();
    }
  };

  const rng = Rng.derive(seed, 'election', 0);
  const takeovers: number[] = [];
  let stalls = 0;
  try {
    for (const d of dispatchers) d.start();
    let current = await waitWriter(120_000);
    if (current === undefined) throw new Error('no dispatcher became the writer within 120 s of the start');
    log(`  d${current + 1} is the writer`);
    for (let round = 1; round <= rounds; round++) {
      await sleep(rng.int(3000, 7000));
      const writerFirst = rng.chance(0.5);
      const gapMs = rng.int(0, 1200);
      const first = dispatchers[writerFirst ? current : 1 - current];
      const second = dispatchers[writerFirst ? 1 - current : current];
      first.crash();
      await sleep(gapMs);
      second.crash();
      const killedAt = Date.now();
      let next = await waitWriter(stallMs);
      const what = `round ${String(round).padStart(3)}/${rounds}: SIGKILL the ${writerFirst ? 'writer' : 'standby'}, the other ${gapMs} ms later`;
      if (next === undefined) {
        stalls++;
        log(`${what} | STALL: no writer ${stallMs} ms after the second kill; the election group:\n${await describeGroup()}`);
        next = await waitWriter(240_000);
        if (next === undefined) { log('  still no writer 240 s later: ending the run'); break; }
        log(`  d${next + 1} became the writer ${Date.now() - killedAt} ms after the second kill`);
      } else {
        const ms = Date.now() - killedAt;
        takeovers.push(ms);
        log(`${what} | d${next + 1} is the writer after ${ms} ms`);
      }
      current = next;
    }
  } finally {
    for (const d of dispatchers) await d.stop('SIGKILL');
    await broker.stop().catch((e: unknown) => log(`  broker stop failed: ${(e as Error).message}`));
  }

  takeovers.sort((a, b) => a - b);
  const pct = (p: number): number => takeovers[Math.min(takeovers.length - 1, Math.floor(p * takeovers.length))] ?? NaN;
  log('\n== election summary ==');
  log(`seed ${seed}: ${takeovers.length + stalls} double kills in ${Math.round((Date.now() - t0) / 1000)} s; stalls: ${stalls}`);
  log(`writer again after the second kill: median ${pct(0.5)} ms, p90 ${pct(0.9)} ms, max ${takeovers.at(-1) ?? NaN} ms`);
  if (stalls > 0 || args.keep) log(`work dir kept: ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
  return stalls > 0 ? 1 : 0;
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
