import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parsePolicy, type PolicyInput } from '../../domain/policy.js';
import type { DispatchEvent } from '../../domain/events.js';
import { loadPolicyFile } from '../../runtime/config.js';
import type { Delivery } from '../../runtime/delivery.js';
import { openLog, parseLogTarget } from '../log/openLog.js';
import { startServer } from './startServer.js';

export interface DemoOptions {
  seconds: number;
  /** Data dir; a new temporary one when absent. */
  data?: string;
  config?: string;
  log?: string;
  host: string;
  port: number;
  /** Where the running commentary goes. Default stdout. */
  out?: (line: string) => void;
}

/** The demo's policy: the same rules, on a timescale a 20-second run can show. */
function demoPolicy(seconds: number): PolicyInput {
  return {
    tickMs: 100,
    health: { agentTimeoutMs: Math.max(1500, seconds * 100) },
    retry: { maxAttempts: 3, backoffMs: 200 },
    affinity: { maxWaitMs: Math.max(150, seconds * 10) },
    aging: { stepMs: Math.max(1000, seconds * 150) },
    fairness: { windowMs: 60_000, deferFactor: 1.5, minSamples: 10, weights: { 'acme': 2 } },
    quotas: { 'bulk-co': { maxQueued: 400 }, 'globex': { maxConcurrent: 2 } },
    shedding: { highWatermark: 500, hardCap: 500 },
    priorityRules: [{ match: { source: 'cron' }, priority: 'low' }],
  };
}

interface SimAgent {
  id: string;
  capabilities: string[];
  /** Multiplier on every task's duration: < 1 is fast. */
  slowness: number;
  capacity: number;
  /** Stop answering (die) at this fraction of the run. */
  diesAt?: number;
}

const FLEET: SimAgent[] = [
  { id: 'agent-01', capabilities: ['support-tools', 'slack-mcp'], slowness: 1, capacity: 2 },
  { id: 'agent-02', capabilities: ['k8s-mcp', 'deploy-token', 'aws-mcp'], slowness: 0.5, capacity: 1 },
  { id: 'agent-03', capabilities: ['github-mcp', 'code-review-tools'], slowness: 1.2, capacity: 1 },
  { id: 'agent-04', capabilities: ['support-tools', 'slack-mcp', 'github-mcp'], slowness: 0.8, capacity: 2 },
  { id: 'agent-05', capabilities: ['report-tools'], slowness: 2.5, capacity: 1 },
  { id: 'agent-06', capabilities: ['report-tools'], slowness: 0.4, capacity: 1 },
  { id: 'agent-07', capabilities: ['support-tools', 'slack-mcp'], slowness: 1, capacity: 1, diesAt: 0.35 },
  { id: 'agent-08', capabilities: ['k8s-mcp', 'deploy-token'], slowness: 1.5, capacity: 1 },
  { id: 'agent-09', capabilities: ['support-tools'], slowness: 1, capacity: 3 },
  { id: 'agent-10', capabilities: ['github-mcp', 'code-review-tools', 'support-tools'], slowness: 0.9, capacity: 2 },
];

/** Seeded PRNG, so two demo runs make the same work. */
function rng(seed: number) {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 2 ** 32;
  };
}

export async function runDemo(o: DemoOptions): Promise<number> {
  const out = o.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const dataDir = o.data ?? mkdtempSync(join(tmpdir(), 'switchyard-demo-'));
  const policy = o.config ? loadPolicyFile(o.config) : parsePolicy(demoPolicy(o.seconds));
  const log = await openLog(parseLogTarget(o.log, dataDir));
  const server = await startServer({ log, policy, host: o.host, port: o.port, logger: pino({ level: 'warn' }), onFatal: (err) => out(`dispatcher stopped: ${err.message}`) });
  const base = server.url;
  const ms = o.seconds * 1000;
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / ms;
  const rand = rng(42);
  let stopping = false;
  const timers: NodeJS.Timeout[] = [];
  const inflight = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>) => { inflight.add(p); p.finally(() => inflight.delete(p)).catch(() => undefined); return p; };

  out(`switchyard demo: ${o.seconds}s, data in ${dataDir}, API at ${base}`);
  out(`fleet: ${FLEET.length} agents (${FLEET.find((a) => a.diesAt)?.id} will die mid-task); producers: Monday flood, critical incident, a flooding tenant, sessions, deadlines, dependencies`);

  const post = async (path: string, body: unknown): Promise<{ status: number; json: unknown }> => {
    const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : undefined };
  };
  const submit = (task: Record<string, unknown>) => track(post('/v1/tasks', task).catch(() => ({ status: 0, json: undefined })));

  // The fleet: each agent long-polls for work, "works" for the task's duration times its slowness, completes.
  const durationOf = (type: string) => ({ deploy: 900, 'security-incident': 700, review: 600, report: 1000, 'follow-up': 400, cleanup: 300 } as Record<string, number>)[type] ?? 500;
  const runAgent = async (a: SimAgent) => {
    await post(`/v1/agents/${a.id}/ready`, { capabilities: a.capabilities, capacity: a.capacity });
    const hb = setInterval(() => { if (!dead()) post(`/v1/agents/${a.id}/heartbeat`, {}).catch(() => undefined); }, 500);
    timers.push(hb);
    const dead = () => a.diesAt !== undefined && elapsed() >= a.diesAt;
    const seen = new Set<string>();
    while (!stopping && !dead()) {
      let list: Delivery[] = [];
      try {
        const r = await fetch(`${base}/v1/agents/${a.id}/assignments?waitMs=500`);
        if (r.status === 200) list = await r.json() as Delivery[];
      } catch { if (stopping) break; }
      for (const d of list) {
        if (d.kind !== 'assignment') continue;
        const key = `${d.taskId}#${d.attempt}`;
        if (seen.has(key)) continue; // at-least-once delivery: drop duplicates
        seen.add(key);
        const payload = (d.payload ?? {}) as { failOnce?: boolean; fail?: boolean };
        const work = durationOf(d.type) * a.slowness * (0.8 + 0.4 * rand()) * Math.max(0.2, o.seconds / 20);
        track(new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            if (dead() || stopping) { resolve(); return; } // died mid-task: never completes
            const outcome = payload.fail || (payload.failOnce && d.attempt === 1) ? 'failed' : 'succeeded';
            post(`/v1/tasks/${d.taskId}/complete`, {
              agentId: a.id, attempt: d.attempt, outcome,
              ...(outcome === 'failed' ? { error: payload.fail ? 'permanent failure' : 'transient upstream error', retryable: !payload.fail } : { result: { by: a.id } }),
            }).catch(() => undefined).finally(resolve);
          }, work);
          timers.push(t);
        }));
      }
    }
    clearInterval(hb);
  };
  const agentLoops = FLEET.map((a) => runAgent(a));

  // The producers, on a timeline proportional to the run.
  const at = (fraction: number, fn: () => void) => { timers.push(setTimeout(() => { if (!stopping) fn(); }, fraction * ms)); };
  const tenants = ['acme', 'globex', 'initech', 'umbrella', 'hooli'];
  const iso = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString();
  const scale = Math.max(0.2, o.seconds / 20);

  // Steady trickle of routine work, from every tenant.
  const trickle = setInterval(() => {
    if (stopping) return;
    const tenant = tenants[Math.floor(rand() * tenants.length)];
    submit({ tenant, source: 'user', type: 'support', requires: ['support-tools'], payload: { n: Math.floor(rand() * 1e6) } });
  }, 120);
  timers.push(trickle);
  // Background cron work: low priority by policy rule; ages while it waits.
  at(0.02, () => { for (let i = 0; i < 20; i++) submit({ tenant: tenants[i % 5], source: 'cron', type: 'cleanup', requires: ['support-tools'] }); });
  // Sessions: a conversation whose follow-ups should stay with the same agent.
  at(0.05, () => submit({ id: 'sess-acme-1', tenant: 'acme', source: 'user', type: 'follow-up', requires: ['support-tools'], sessionRef: 'acme-ticket-12345' }));
  for (const f of [0.15, 0.3, 0.45, 0.6, 0.75]) {
    at(f, () => submit({ tenant: 'acme', source: 'user', type: 'follow-up', requires: ['support-tools'], sessionRef: 'acme-ticket-12345' }));
  }
  at(0.2, () => submit({ tenant: 'globex', source: 'hitl', type: 'follow-up', requires: ['github-mcp'], sessionRef: 'globex-pr-77', affinity: 'hard' }));
  at(0.5, () => submit({ tenant: 'globex', source: 'hitl', type: 'follow-up', requires: ['github-mcp'], sessionRef: 'globex-pr-77', affinity: 'hard' }));
  // Monday morning: a flood of normal work, and one tenant flooding on top of it.
  at(0.1, () => {
    for (let i = 0; i < 150; i++) submit({ tenant: tenants[i % 5], source: 'webhook', type: 'support', requires: ['support-tools'] });
    for (let i = 0; i < 300; i++) submit({ tenant: 'bulk-co', source: 'api', type: 'support', requires: ['support-tools'], payload: { batch: i } });
  });
  // The flooding tenant keeps going.
  const flood = setInterval(() => { if (!stopping) for (let i = 0; i < 3; i++) submit({ tenant: 'bulk-co', source: 'api', type: 'support', requires: ['support-tools'] }); }, 250);
  timers.push(flood);
  // A critical incident in the middle of the flood, needing the same (busy) agents.
  at(0.4, () => submit({ id: 'incident-1', tenant: 'umbrella', source: 'webhook', type: 'security-incident', priority: 'critical', requires: ['support-tools', 'slack-mcp'] }));
  // Speeds are measured: reports with estimates teach the dispatcher which report agent is fast.
  at(0.05, () => { for (let i = 0; i < 6; i++) submit({ tenant: 'initech', source: 'user', type: 'report', requires: ['report-tools'], estimatedDurationMs: Math.round(1000 * scale) }); });
  // Deadlines: plenty of time, tight, and already at risk.
  at(0.3, () => {
    const est = Math.round(1000 * scale);
    submit({ id: 'report-ordinary', tenant: 'initech', source: 'cron', type: 'report', priority: 'normal', requires: ['report-tools'], deadline: iso(est * 10), estimatedDurationMs: est });
    submit({ id: 'report-tight', tenant: 'initech', source: 'user', type: 'report', priority: 'normal', requires: ['report-tools'], deadline: iso(est * 1.6), estimatedDurationMs: est });
    submit({ id: 'report-at-risk', tenant: 'hooli', source: 'user', type: 'report', priority: 'low', requires: ['report-tools'], deadline: iso(est * 0.9), estimatedDurationMs: est });
  });
  // Dependencies: build → review → deploy; and a chain whose first step fails for good.
  at(0.15, async () => {
    await submit({ id: 'build-1', tenant: 'hooli', source: 'subagent', type: 'review', requires: ['github-mcp'] });
    await submit({ id: 'review-1', tenant: 'hooli', source: 'subagent', type: 'review', requires: ['code-review-tools'], dependsOn: ['build-1'] });
    await submit({ id: 'deploy-1', tenant: 'hooli', source: 'subagent', type: 'deploy', priority: 'high', requires: ['k8s-mcp', 'deploy-token'], dependsOn: ['review-1'] });
    await submit({ id: 'migrate-1', tenant: 'globex', source: 'user', type: 'deploy', requires: ['k8s-mcp'], payload: { fail: true } });
    await submit({ id: 'verify-migration-1', tenant: 'globex', source: 'user', type: 'review', requires: ['github-mcp'], dependsOn: ['migrate-1'] });
  });
  // Transient failures that succeed on retry (globex may run only 2 at once); a capability nobody has.
  at(0.3, () => { for (let i = 0; i < 6; i++) submit({ tenant: 'globex', source: 'webhook', type: 'deploy', requires: ['aws-mcp'], payload: { failOnce: true } }); });
  at(0.12, () => submit({ id: 'quantum-1', tenant: 'umbrella', source: 'api', type: 'simulate', requires: ['quantum-mcp'] }));
  // Overload: a second wave of background work pushes the queue past the shedding watermark,
  // then pages arrive at the hard cap and push out the newest low work.
  at(0.6, () => { for (let i = 0; i < 300; i++) submit({ tenant: tenants[i % 5], source: 'cron', type: 'cleanup', requires: ['support-tools'] }); });
  at(0.65, () => { for (let i = 0; i < 3; i++) submit({ tenant: 'umbrella', source: 'webhook', type: 'page', priority: 'critical', requires: ['support-tools'] }); });

  // Commentary.
  const show = async () => {
    const d = await (await fetch(`${base}/v1/dashboard`)).json() as Record<string, Record<string, unknown>>;
    const q = d.queue_depth; const u = d.agent_utilization; const w = d.avg_wait_time_seconds;
    const fair = Object.entries(d.fairness_distribution ?? {}).slice(0, 4).map(([k, v]) => `${k} ${(Number(v) * 100).toFixed(0)}%`).join(', ');
    out(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] queue c/h/n/l ${q.critical}/${q.high}/${q.normal}/${q.low}  agents busy ${u.busy}/${u.total}  wait n ${w.normal}s l ${w.low}s  sla ${d.sla_compliance_pct}%  share: ${fair}`);
  };
  const ticker = setInterval(() => { if (!stopping) show().catch(() => undefined); }, Math.max(1000, ms / 10));
  timers.push(ticker);

  await new Promise((r) => setTimeout(r, ms));
  // The run ends here: what follows (agents stopping, their timeouts) is not part of the story.
  const endedAt = Date.now();
  await show().catch(() => undefined);
  const dash = await (await fetch(`${base}/v1/dashboard`)).json();
  stopping = true;
  for (const t of timers) { clearTimeout(t); clearInterval(t); }
  await Promise.race([Promise.allSettled([...inflight, ...agentLoops]), new Promise((r) => setTimeout(r, 2000))]);

  const events: DispatchEvent[] = [];
  for await (const se of log.read(server.runtime.stream, 0)) if (se.event.at <= endedAt) events.push(se.event);
  await server.close();
  for (const line of summarize(events, dash as Record<string, unknown>)) out(line);
  out(`\nThe log is in ${dataDir}: try 'switchyard replay --data ${dataDir}', 'switchyard explain incident-1 --data ${dataDir}', 'switchyard verify --data ${dataDir}'.`);
  return 0;
}

/** What each rule did, counted from the decisions in the log (their `why.rule`). */
export function summarize(events: DispatchEvent[], dash: Record<string, unknown>): string[] {
  const rules = new Map<string, number>();
  const types = new Map<string, number>();
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const deferredBy = new Map<string, number>();
  let incidentWait: number | undefined;
  let backlogAtIncident = 0;
  let queued = 0;
  const timedOut: string[] = [];
  const tenantOf = new Map<string, string>();
  for (const e of events) {
    bump(types, e.type);
    if (e.type === 'TaskSubmitted') tenantOf.set(e.task.id, e.task.tenant);
    if ('why' in e && e.why) bump(rules, `${e.type}:${e.why.rule}`);
    if (e.type === 'TaskSubmitted') { queued++; if (e.task.id === 'incident-1') backlogAtIncident = queued; }
    if (e.type === 'TaskAssigned') { queued--; if (e.taskId === 'incident-1') incidentWait = Number(e.why.waitedMs); }
    if (e.type === 'TaskDeferred' && e.why.rule === 'fairness') bump(deferredBy, tenantOf.get(e.taskId) ?? '?');
    if (e.type === 'AgentTimedOut') timedOut.push(`${e.agentId} (${e.tasks.length} task${e.tasks.length === 1 ? '' : 's'} requeued or dead-lettered)`);
  }
  const r = (k: string) => rules.get(k) ?? 0;
  const t = (k: string) => types.get(k) ?? 0;
  const counts = (dash.counts ?? {}) as Record<string, number>;
  return [
    '',
    'What each rule did:',
    `  priority queues     critical incident assigned after ${incidentWait ?? '?'} ms with ~${backlogAtIncident} tasks submitted before it; ${t('TaskAssigned')} assignments in all`,
    `  capability routing  every assignment's requires ⊆ the agent's capabilities; ${counts.unroutable ?? 0} task(s) unroutable (nobody has quantum-mcp)`,
    `  load balancing      ${r('TaskAssigned:load-balance')} assignments to the agent with the most free slots, then longest idle`,
    `  affinity            ${r('TaskAssigned:affinity')} to the session's agent, ${r('TaskDeferred:affinity-wait')} waited for it, ${r('TaskAssigned:affinity-fallback')} fell back`,
    `  deadlines           ${r('TaskAssigned:deadline-tight-fastest')} tight → fastest agent, ${r('TaskEscalated:deadline-at-risk')} at risk → escalated to critical (${r('TaskAssigned:deadline-at-risk-fastest')} then to the fastest agent), SLA ${String(dash.sla_compliance_pct)}%`,
    `  aging               ${r('TaskEscalated:aging')} waiting tasks raised a level`,
    `  fairness            ${r('TaskDeferred:fairness')} deferrals (${[...deferredBy].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}); shares ${JSON.stringify(dash.fairness_distribution)}`,
    `  quotas              ${r('TaskDeferred:quota')} tasks held at a tenant's maxConcurrent, ${t('TaskRejected')} rejected (maxQueued or unknown dependency)`,
    `  dependencies        ${t('TaskUnblocked')} unblocked when their dependencies succeeded, ${r('TaskCancelled:dependency-failed')} cancelled when one failed`,
    `  graceful degradation ${t('TaskShed')} shed under overload (${r('TaskShed:overload-shed')} at admission, ${r('TaskShed:make-room-for-critical')} to make room)`,
    `  health              timed out: ${timedOut.join(', ') || 'none'}; ${r('TaskRequeued:agent-timed-out')} requeued, ${t('TaskDeadLettered')} dead-lettered`,
    `  retries             ${r('TaskRequeued:retry-backoff')} retried after backoff`,
  ];
}
