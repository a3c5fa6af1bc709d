import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openLog, parseLogTarget } from '../src/adapters/log/openLog.js';
import { foldLog, readReceipts, some, type Violation, type ViolationKind } from './chaosCheck.js';
import type { ChaosAgentConfig } from './chaosAgent.js';
import { Rng } from './chaosRandom.js';
import { agentProcess, CLI, dispatcherProcess, getJson, Proxy, sleep, type BrokerCtl, type Supervised } from './chaosProcesses.js';
import { freePort } from './processes.js';
import { createWorkload } from './chaosWorkload.js';
import { spawn } from 'node:child_process';

/**
 * One part of the campaign: a deployment on one log (Kafka, or SQLite with Kafka ingress and
 * egress), rounds of load and faults against it, and the checks.
 */

export type Mode = 'kafka' | 'sqlite';
type Kind = 'broker' | 'dispatcher' | 'agent';

export interface SegmentOptions {
  mode: Mode;
  /** Rounds `from`..`to` (1-based, of `total`). */
  from: number;
  to: number;
  total: number;
  seed: number;
  loadMs: number;
  broker: BrokerCtl;
  dir: string;
  log: (l: string) => void;
  keepGoing: boolean;
  /** How the broker is taken down: as the seeded plan says (`both`), or always one way. */
  brokerFaults: 'both' | 'stop' | 'kill';
  forcedKind: (round: number) => Kind | undefined;
}

export interface SegmentResult {
  mode: Mode;
  roundsRun: number;
  kills: Record<string, number>;
  dispatcherRestarts: number;
  submittedHttp: number;
  submittedKafka: number;
  accepted: number;
  unacknowledged: number;
  refused: number;
  terminal: Record<string, number>;
  acceptedNotTerminal: number;
  deliveries: number;
  redeliveries: number;
  reattempts: number;
  verify: string;
  violations: Violation[];
}

/** The policy under test: agents are declared dead fast, and tasks get many attempts. */
const POLICY = {
  health: { agentTimeoutMs: 3000 },
  retry: { maxAttempts: 25, backoffMs: 200 },
};

/** The fleet: capabilities, transport. A third of the agents use HTTP (through the proxy). */
const AGENTS: { id: string; transport: 'kafka' | 'http'; capabilities: string[] }[] = [
  { id: 'a1', transport: 'kafka', capabilities: ['x', 'y'] },
  { id: 'a2', transport: 'kafka', capabilities: ['x'] },
  { id: 'a3', transport: 'kafka', capabilities: ['x', 'y'] },
  { id: 'a4', transport: 'kafka', capabilities: ['x'] },
  { id: 'a5', transport: 'http', capabilities: ['x', 'y'] },
  { id: 'a6', transport: 'http', capabilities: ['x'] },
];

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled', 'shed', 'rejected', 'dead-lettered']);

/** How long the fleet may take to be healthy after a round's faults, and accepted tasks to finish after that. */
const RECOVER_MS = 120_000;
const SETTLE_MS = 120_000;

interface Fault {
  at: number;
  kind: Kind;
  /** dispatcher: kill the writer or the standby; whether the restarted process is armed to kill itself inside its n-th commit. */
  target?: 'leader' | 'standby';
  selfKillAt?: number;
  /** agent: which one, back after how long. */
  agent?: number;
  reviveMs?: number;
  /** broker: controlled stop or SIGKILL, down for how long. */
  how?: 'stop' | 'kill';
  downMs?: number;
}

function planRound(seed: number, round: number, mode: Mode, loadMs: number, forced: Kind | undefined, brokerFaults: 'both' | 'stop' | 'kill'): Fault[] {
  const rng = Rng.derive(seed, 'round', round);
  const n = 1 + (rng.chance(0.5) ? 1 : 0) + (rng.chance(0.2) ? 1 : 0);
  const kinds: Kind[] = forced ? [forced] : [];
  while (kinds.length < n) {
    // Broker restarts are slow (a JVM stop and start): about one round in six has one.
    const k = rng.weighted({ dispatcher: 0.45, agent: 0.45, broker: 0.1 });
    kinds.push(k === 'broker' && kinds.includes('broker') ? 'agent' : k);
  }
  return kinds.map((kind): Fault => {
    const at = rng.int(Math.round(loadMs * 0.1), Math.round(loadMs * 0.8));
    if (kind === 'dispatcher') {
      return { at, kind, target: rng.chance(0.75) ? 'leader' : 'standby', selfKillAt: mode === 'kafka' && rng.chance(0.25) ? rng.int(3, 40) : undefined };
    }
    if (kind === 'agent') {
      // Half come back before the dispatcher declares them dead (3 s), half after.
      return { at, kind, agent: rng.int(0, AGENTS.length - 1), reviveMs: rng.chance(0.5) ? rng.int(300, 2000) : rng.int(3500, 7000) };
    }
    // Drawn either way, so that the rest of the plan is the same whatever --broker-faults says.
    const how = rng.chance(0.5) ? 'stop' : 'kill';
    return { at, kind, how: brokerFaults === 'both' ? how : brokerFaults, downMs: rng.int(500, 3000) };
  }).sort((a, b) => a.at - b.at);
}

function describe(f: Fault): string {
  const at = `@${(f.at / 1000).toFixed(1)}s`;
  if (f.kind === 'dispatcher') return `kill ${f.target}${f.selfKillAt ? ` (restart armed to die in commit ${f.selfKillAt})` : ''}${at}`;
  if (f.kind === 'agent') return `kill ${AGENTS[f.agent!].id}, back after ${(f.reviveMs! / 1000).toFixed(1)}s${at}`;
  return `broker ${f.how === 'stop' ? 'stop' : 'SIGKILL'}, down ${(f.downMs! / 1000).toFixed(1)}s${at}`;
}


export async function runSegment(o: SegmentOptions): Promise<SegmentResult> {
  const { mode, log, broker } = o;
  mkdirSync(o.dir, { recursive: true });
  const receiptsDir = join(o.dir, 'receipts');
  mkdirSync(receiptsDir, { recursive: true });
  const policyFile = join(o.dir, 'policy.json');
  writeFileSync(policyFile, JSON.stringify(POLICY));
  const prefix = `chaos-${mode}`;
  const brokers = broker.brokers.join(',');
  const ports = [await freePort(), await freePort()];
  const proxy = new Proxy(await freePort(), ports);
  await proxy.start();

  const violations: Violation[] = [];
  const kills: Record<string, number> = {};
  const count = (k: string): void => { kills[k] = (kills[k] ?? 0) + 1; };
  let round = o.from;
  const violate = (kind: ViolationKind, message: string, examples: string[] = []): void => {
    violations.push({ kind, round, mode, message, examples });
    log(`  VIOLATION ${kind} (round ${round}, ${mode}): ${message}${examples.length ? `; e.g. ${examples.join(' | ')}` : ''}`);
  };

  // The dispatchers: two `serve` processes on one log; whichever holds it serves, the other stands by.
  const sqliteData = join(o.dir, 'data');
  const dispatchers = ports.map((port, i) => {
    const args = mode === 'kafka'
      ? ['--log', `kafka:${brokers}`, '--data', join(o.dir, `data-${i + 1}`)]
      : ['--data', sqliteData, '--kafka', brokers];
    return dispatcherProcess(`d${i + 1}`, [...args, '--topic-prefix', prefix, '--port', String(port), '--config', policyFile], join(o.dir, `dispatcher-${i + 1}.log`));
  });
  const agents = AGENTS.map((a, i) => {
    const config: ChaosAgentConfig = {
      agentId: a.id, transport: a.transport, brokers: broker.brokers, prefix, url: proxy.url, capabilities: a.capabilities, capacity: 2,
      receipts: join(receiptsDir, `${a.id}.jsonl`), workMs: [20, 250], failRate: 0.03, heartbeatMs: 500, seed: o.seed + i,
    };
    return agentProcess(a.id, config, join(o.dir, `agent-${a.id}.log`));
  });
  const workload = createWorkload({ url: proxy.url, brokers: broker.brokers, prefix, httpPerSecond: 15, kafkaPerSecond: 20, seed: o.seed });

  const leaderIndex = async (): Promise<number | undefined> => {
    const answers = await Promise.all(ports.map((p) => getJson<{ ok: boolean }>(`http://127.0.0.1:${p}/healthz`, 1500)));
    const i = answers.findIndex((a) => a.status === 200 && a.body?.ok);
    return i < 0 ? undefined : i;
  };

  /** The dispatcher answers, and every agent is alive as it sees them. */
  const waitHealthy = async (timeoutMs: number): Promise<{ ok: boolean; detail: string }> => {
    const until = Date.now() + timeoutMs;
    let detail = 'no dispatcher answered';
    for (;;) {
      const h = await getJson<{ ok: boolean }>(`${proxy.url}/healthz`, 2000);
      if (h.status === 200 && h.body?.ok) {
        const a = await getJson<{ id: string; state: string }[]>(`${proxy.url}/v1/agents`, 5000);
        const seen = new Map((a.body ?? []).map((x) => [x.id, x.state]));
        const notAlive = AGENTS.filter((x) => !seen.has(x.id) || seen.get(x.id) === 'dead').map((x) => `${x.id}: ${seen.get(x.id) ?? 'unknown'}`);
        if (a.status === 200 && notAlive.length === 0) return { ok: true, detail: '' };
        detail = a.status === 200 ? `agents not alive for the dispatcher (their processes run): ${notAlive.join(', ')}` : `GET /v1/agents: ${a.status}`;
      } else {
        detail = `no dispatcher answered /healthz (status ${h.status}); broker ${broker.up ? 'up' : 'down'}; processes ${dispatchers.map((d) => `${d.name} ${d.alive ? 'running' : 'down'}`).join(', ')}`;
      }
      if (Date.now() > until) return { ok: false, detail };
      await sleep(250);
    }
  };

  const terminalSeen = new Map<string, string>();
  const stuck = new Set<string>();
  /** Every accepted task terminal, asking the dispatcher (its state is a fold of the committed log). */
  const settle = async (timeoutMs: number): Promise<{ ok: boolean; pending: string[] }> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const pending = [...workload.accepted.keys()].filter((id) => !terminalSeen.has(id) && !stuck.has(id));
      if (pending.length === 0) return { ok: true, pending };
      for (let i = 0; i < pending.length; i += 32) {
        await Promise.all(pending.slice(i, i + 32).map(async (id) => {
          const r = await getJson<{ status: string }>(`${proxy.url}/v1/tasks/${encodeURIComponent(id)}`, 5000);
          if (r.status === 200 && r.body && TERMINAL.has(r.body.status)) terminalSeen.set(id, r.body.status);
        }));
      }
      if (pending.every((id) => terminalSeen.has(id))) return { ok: true, pending: [] };
      if (Date.now() > until) return { ok: false, pending: pending.filter((id) => !terminalSeen.has(id)) };
      await sleep(300);
    }
  };

  const describeTask = async (id: string): Promise<string> => {
    const r = await getJson<{ status: string; attempt: number; agent?: string }>(`${proxy.url}/v1/tasks/${encodeURIComponent(id)}`, 5000);
    return r.status === 200 && r.body ? `${id} ${r.body.status} attempt ${r.body.attempt}${r.body.agent ? ` on ${r.body.agent}` : ''}` : `${id} (HTTP ${r.status})`;
  };

  const reportedDoubles = new Set<string>();
  const checkReceipts = (): ReturnType<typeof readReceipts> => {
    const d = readReceipts(receiptsDir);
    const fresh = [...d.doubles].filter(([k]) => !reportedDoubles.has(k));
    for (const [k] of fresh) reportedDoubles.add(k);
    if (fresh.length > 0) violate('double-delivery', `${fresh.length} (taskId, attempt) handled by two agents`, some(fresh.map(([k, a]) => `${k} → ${[...a].join(', ')}`)));
    return d;
  };

  let roundsRun = 0;
  let brokerBusy: Promise<void> | undefined;
  const reviveTimers = new Map<number, NodeJS.Timeout>();

  const execute = async (f: Fault): Promise<void> => {
    if (f.kind === 'dispatcher') {
      const leader = await leaderIndex();
      let target: Supervised | undefined;
      if (leader !== undefined) target = f.target === 'leader' ? dispatchers[leader] : dispatchers[1 - leader];
      if (!target?.alive) target = dispatchers.find((d) => d.alive);
      if (!target) return;
      const role = leader === undefined ? 'dispatcher (no writer at the time)' : target === dispatchers[leader] ? 'dispatcher (writer)' : 'dispatcher (standby)';
      if (f.selfKillAt) target.nextEnv = { SWITCHYARD_KILL_BEFORE_COMMIT: String(f.selfKillAt) };
      target.crash();
      count(role);
    } else if (f.kind === 'agent') {
      const i = f.agent!;
      const a = agents[i];
      if (!a.wanted) return;
      a.killAndHold();
      count('agent');
      clearTimeout(reviveTimers.get(i));
      reviveTimers.set(i, setTimeout(() => { reviveTimers.delete(i); a.start(); }, f.reviveMs));
    } else {
      if (brokerBusy) return;
      brokerBusy = (async () => {
        if (f.how === 'stop') await broker.stop();
        else await broker.kill();
        count(f.how === 'stop' ? 'broker (stop)' : 'broker (SIGKILL)');
        await sleep(f.downMs!);
        await broker.start();
      })().finally(() => { brokerBusy = undefined; });
      await brokerBusy;
    }
  };

  let verify = 'not run';
  let fold: Awaited<ReturnType<typeof foldLog>> | undefined;
  try {
    // --- start the deployment -------------------------------------------------------------
    await workload.prepare();
    dispatchers[0].start();
    const up = await waitFor(async () => (await leaderIndex()) !== undefined, 120_000);
    if (!up) throw new Error(`the first dispatcher did not come up; see ${o.dir}/dispatcher-1.log`);
    dispatchers[1].start();
    for (const a of agents) a.start();
    const started = await Promise.race([Promise.all(agents.map((a) => a.ready())).then(() => true), sleep(120_000).then(() => false)]);
    if (!started) throw new Error(`agents did not start; see ${o.dir}/agent-*.log`);
    const healthy = await waitHealthy(RECOVER_MS);
    if (!healthy.ok) throw new Error(`the fleet did not come up: ${healthy.detail}`);
    log(`  [${mode}] deployment up: dispatchers on ${ports.join(' and ')} behind ${proxy.url}, ${agents.length} agents (${AGENTS.filter((a) => a.transport === 'kafka').length} Kafka, ${AGENTS.filter((a) => a.transport === 'http').length} HTTP), prefix ${prefix}`);

    // --- rounds -----------------------------------------------------------------------------
    for (round = o.from; round <= o.to; round++) {
      const plan = planRound(o.seed, round, mode, o.loadMs, o.forcedKind(round), o.brokerFaults);
      const acceptedBefore = workload.accepted.size;
      const violationsBefore = violations.length;
      const roundStart = Date.now();
      workload.start(round);
      const faults = plan.map((f) => sleep(f.at).then(() => execute(f)).catch((e: unknown) => log(`  fault ${describe(f)} failed: ${(e as Error).message}`)));
      await sleep(o.loadMs);
      const loadEnd = Date.now();
      // Unanswered submissions keep retrying while things come back (a producer's retry budget).
      workload.stopNew(90_000);
      await Promise.all(faults);
      // Heal: everything the faults took down comes back now.
      for (const [i, t] of reviveTimers) { clearTimeout(t); reviveTimers.delete(i); }
      if (!broker.up) await broker.start();
      for (const a of agents) a.start();
      for (const d of dispatchers) d.start();
      await workload.drained();
      const healthy = await waitHealthy(RECOVER_MS);
      // From the end of the load phase: includes finishing the faults (a broker start) and the takeover.
      const healthyMs = Date.now() - loadEnd;
      if (!healthy.ok) violate('not-recovered', `not healthy ${RECOVER_MS / 1000} s after the faults were healed: ${healthy.detail}`);
      const settleAt = Date.now();
      const settled = await settle(SETTLE_MS);
      const settleMs = Date.now() - settleAt;
      if (!settled.ok) {
        for (const id of settled.pending) stuck.add(id);
        violate('stuck', `${settled.pending.length} accepted tasks not terminal ${SETTLE_MS / 1000} s after the fleet was healthy`,
          await Promise.all(some(settled.pending).map(describeTask)));
      }
      const d = checkReceipts();
      roundsRun++;
      log(`round ${String(round).padStart(3)}/${o.total} ${mode.padEnd(6)} ${plan.map(describe).join('; ')} | accepted ${workload.accepted.size - acceptedBefore}`
        + ` | healthy +${(healthyMs / 1000).toFixed(1)}s, settled +${(settleMs / 1000).toFixed(1)}s | round ${((Date.now() - roundStart) / 1000).toFixed(0)}s`
        + ` | deliveries ${d.deliveries} | violations ${violations.length - violationsBefore}`);
      if (!o.keepGoing && violations.slice(violationsBefore).some((v) => v.kind === 'not-recovered' || v.kind === 'stuck')) {
        log(`  [${mode}] ending this part early: the deployment did not recover (--keep-going runs on)`);
        break;
      }
    }
  } finally {
    await workload.close();
    for (const a of agents) a.killAndHold();
    // The standby first: stopping the writer first would hand it the log.
    const leader = await leaderIndex();
    for (const d of dispatchers.filter((_, i) => i !== leader)) await d.stop('SIGTERM');
    for (const d of dispatchers) await d.stop('SIGTERM');
    await proxy.stop();
  }

  round = Math.min(round, o.to);
  // --- the log itself -----------------------------------------------------------------------
  if (!broker.up) await broker.start();
  const target = mode === 'kafka' ? parseLogTarget(`kafka:${brokers}`, o.dir) : parseLogTarget(undefined, sqliteData);
  const logReader = await openLog(target, { readonly: true, prefix });
  try {
    fold = await foldLog(logReader, 'dispatcher-main');
  } finally {
    await logReader.close();
  }
  const lost = [...workload.accepted.keys()].filter((id) => !fold!.terminal.has(id));
  if (lost.length > 0) {
    const never = lost.filter((id) => !fold!.submitted.has(id));
    const alsoStuck = lost.filter((id) => stuck.has(id)).length;
    // An HTTP 202 is sent after the commit, so an HTTP task missing from the log is lost for good;
    // a Kafka record not yet consumed is still on the tasks topic (its dispatcher never read it).
    const neverVia = (via: string): number => never.filter((id) => workload.accepted.get(id)!.via === via).length;
    violate('lost', `${lost.length} accepted tasks not terminal in the log (${never.length} never recorded as submitted: ${neverVia('http')} over HTTP, ${neverVia('kafka')} over Kafka; ${alsoStuck} reported stuck before)`, some(lost.map((id) => `${id}${fold!.submitted.has(id) ? '' : ' (not in the log)'} via ${workload.accepted.get(id)!.via} in round ${workload.accepted.get(id)!.round}`)));
  }
  const doubleAssigned = [...fold.assigned].filter(([, agentsOf]) => new Set(agentsOf).size > 1);
  if (doubleAssigned.length > 0) violate('double-assignment', `${doubleAssigned.length} (taskId, attempt) assigned to two agents in the log`, some(doubleAssigned.map(([k, a]) => `${k} → ${a.join(', ')}`)));
  const receipts = checkReceipts();
  const phantom: string[] = [];
  for (const [agentId, keys] of receipts.byAgent) {
    for (const k of keys) if (!(fold.assigned.get(k) ?? []).includes(agentId)) phantom.push(`${k} → ${agentId}`);
  }
  if (phantom.length > 0) violate('phantom-delivery', `${phantom.length} deliveries with no matching assignment in the log`, some(phantom));

  const verifyArgs = mode === 'kafka' ? ['--log', `kafka:${brokers}`, '--topic-prefix', prefix] : ['--data', sqliteData];
  const v = await runCli(['verify', ...verifyArgs]);
  verify = v.code === 0 && /identical/.test(v.output) ? `identical (${fold.events} events)` : `FAILED (exit ${v.code})`;
  if (!verify.startsWith('identical')) violate('verify', `switchyard verify exited ${v.code}`, [v.output.trim().split('\n').slice(-6).join(' / ')]);
  log(`  [${mode}] log: ${fold.events} events, ${fold.submitted.size} tasks submitted; verify ${verify}`);

  const terminal: Record<string, number> = {};
  for (const id of workload.accepted.keys()) {
    const s = fold.terminal.get(id);
    if (s) terminal[s] = (terminal[s] ?? 0) + 1;
  }
  return {
    mode, roundsRun, kills,
    dispatcherRestarts: dispatchers.reduce((s, d) => s + d.starts, 0) - dispatchers.length,
    submittedHttp: workload.submittedBy.http, submittedKafka: workload.submittedBy.kafka,
    accepted: workload.accepted.size, unacknowledged: workload.unacked.size, refused: workload.refused.size,
    terminal, acceptedNotTerminal: lost.length,
    deliveries: receipts.deliveries, redeliveries: receipts.redeliveries, reattempts: receipts.reattempts,
    verify, violations,
  };
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await cond()) return true;
    await sleep(200);
  }
  return false;
}

function runCli(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--max-old-space-size=2048', CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d: Buffer) => { output += d.toString(); });
    p.stderr.on('data', (d: Buffer) => { output += d.toString(); });
    p.once('exit', (code) => resolve({ code, output }));
  });
}
