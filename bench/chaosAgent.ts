import { openSync, writeSync } from 'node:fs';
import { createAgent } from '../src/client/index.js';
import { Rng } from './chaosRandom.js';

/**
 * One agent of the chaos campaign, as its own process (so it can be SIGKILLed): the client
 * library's createAgent over Kafka or HTTP, completing each task after a short random "work".
 *
 * Every assignment the handler gets is written to the agent's receipts file before any work, in
 * one write(2) on an O_APPEND descriptor: the line is in the kernel the moment the handler runs,
 * so it survives a SIGKILL of this process. The campaign reads these files to check that no
 * (taskId, attempt) went to two agents.
 */
export interface ChaosAgentConfig {
  agentId: string;
  transport: 'kafka' | 'http';
  /** Kafka brokers (transport kafka). */
  brokers: string[];
  prefix: string;
  /** Dispatcher URL (transport http): the campaign's proxy in front of the dispatchers. */
  url: string;
  capabilities: string[];
  capacity: number;
  receipts: string;
  /** Work time range, ms. */
  workMs: [number, number];
  /** Probability that an attempt fails (retryably). */
  failRate: number;
  heartbeatMs: number;
  seed: number;
}

/** One line of a receipts file. */
export interface Receipt {
  /** task id */
  t: string;
  /** attempt */
  a: number;
  /** pid of the agent process that got it (one per incarnation) */
  p: number;
  /** wall-clock ms */
  w: number;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '') as ChaosAgentConfig;
  // A campaign that goes away takes its agents with it (the IPC channel closes).
  process.on('disconnect', () => process.exit(0));
  const fd = openSync(cfg.receipts, 'a');
  // Work times need no reproducibility across incarnations; the pid keeps incarnations apart.
  const rng = new Rng(cfg.seed ^ process.pid);
  let errors = 0;
  const transport = cfg.transport === 'kafka'
    ? { transport: 'kafka' as const, brokers: cfg.brokers, prefix: cfg.prefix }
    : { transport: 'http' as const, url: cfg.url, pollWaitMs: 2000 };
  const agent = createAgent({
    ...transport,
    agentId: cfg.agentId,
    capabilities: cfg.capabilities,
    capacity: cfg.capacity,
    heartbeatMs: cfg.heartbeatMs,
    onError: (err) => {
      // Refused completions and failed heartbeats are expected while things are being killed;
      // the first few of each incarnation are kept for diagnosis.
      if (++errors <= 20) process.stderr.write(`${new Date().toISOString()} ${cfg.agentId}: ${err.message}\n`);
    },
    handler: async (task, { signal }) => {
      const line: Receipt = { t: task.taskId, a: task.attempt, p: process.pid, w: Date.now() };
      writeSync(fd, `${JSON.stringify(line)}\n`);
      const ms = rng.int(cfg.workMs[0], cfg.workMs[1]);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, ms);
        signal.addEventListener('abort', () => { clearTimeout(timer); reject(new Error('aborted')); }, { once: true });
      });
      if (rng.chance(cfg.failRate)) throw new Error('chaos: a retryable failure');
      return { by: cfg.agentId };
    },
  });
  process.stderr.write(`${new Date().toISOString()} ${cfg.agentId}: starting (pid ${process.pid})\n`);
  // A start that hangs (a request nobody answers) would leave the agent up but never registered:
  // exit instead, and let the supervisor start it again. Logged, because it is a finding in itself.
  const watchdog = setTimeout(() => {
    process.stderr.write(`${new Date().toISOString()} ${cfg.agentId}: start did not finish within 60 s; exiting\n`);
    process.exit(3);
  }, 60_000);
  await agent.start();
  clearTimeout(watchdog);
  process.stderr.write(`${new Date().toISOString()} ${cfg.agentId}: started\n`);
  process.send?.({ kind: 'started' });
}

main().catch((err: unknown) => {
  process.stderr.write(`agent failed to start: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
