import type { Producer } from 'kafkajs';
import { createKafka, topicNames } from '../src/adapters/kafka/topics.js';
import { ensureTopics } from '../src/adapters/kafka/ensureTopics.js';
import type { TaskSubmission } from '../src/domain/inputs.js';
import { Rng } from './chaosRandom.js';
import { sleep } from './chaosProcesses.js';

/**
 * Producers of the chaos campaign: a steady stream of submissions over HTTP (through the proxy)
 * and onto the Kafka tasks topic. A submission counts as accepted when HTTP answered 202 or the
 * broker acknowledged the record (acks=all): from then on it must not be lost. Every submission
 * carries its own id, so a retry after an unanswered attempt is idempotent, as a careful producer's is.
 */
export interface Submitted { id: string; via: 'http' | 'kafka'; round: number }

export interface WorkloadOptions {
  url: string;
  brokers: string[];
  prefix: string;
  /** Submissions per second over HTTP, and over Kafka. */
  httpPerSecond: number;
  kafkaPerSecond: number;
  seed: number;
}

export function createWorkload(o: WorkloadOptions) {
  const kafka = createKafka(o.brokers, 'chaos-producer');
  let producer: Producer | undefined;
  const accepted = new Map<string, Submitted>();
  /** Submitted, never acknowledged (gave up): may or may not be in the log; not checked for loss. */
  const unacked = new Set<string>();
  const refused = new Map<string, string>();
  let submitted = { http: 0, kafka: 0 };
  let seq = 0;
  let round = 0;
  let producing = false;
  /** Retries of an unanswered submission stop after this time (set when the load phase ends). */
  let retryUntil = Number.POSITIVE_INFINITY;
  const loops: Promise<void>[] = [];
  const rng = Rng.derive(o.seed, 'workload');

  const task = (id: string): TaskSubmission => ({
    id,
    tenant: rng.pick(['t1', 't2', 't3']),
    source: 'api',
    type: 'chaos',
    priority: rng.pick(['low', 'normal', 'normal', 'high'] as const),
    // A fifth of the work needs the capability only some agents have.
    requires: rng.chance(0.2) ? ['x', 'y'] : ['x'],
    payload: { round },
  });

  async function http(id: string): Promise<void> {
    submitted.http++;
    const body = JSON.stringify(task(id));
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fetch(`${o.url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(15_000) });
        const text = await r.text();
        if (r.status === 202) { accepted.set(id, { id, via: 'http', round }); unacked.delete(id); return; }
        if (r.status === 400 || r.status === 429 || r.status === 413 || r.status === 415) { refused.set(id, `${r.status} ${text.slice(0, 200)}`); unacked.delete(id); return; }
        // 503 or another 5xx: the dispatcher is stopping or not the writer; try again.
      } catch {
        // Connection refused or cut (the dispatcher died mid-request): unknown whether it was taken.
      }
      unacked.add(id);
      if (Date.now() > retryUntil) return;
      await sleep(Math.min(2000, 100 * 2 ** Math.min(attempt, 5)));
    }
  }

  async function kafkaBatch(ids: string[]): Promise<void> {
    submitted.kafka += ids.length;
    const tasks = topicNames(o.prefix).tasks;
    const messages = ids.map((id) => { const t = task(id); return { key: t.tenant, value: JSON.stringify(t) }; });
    for (let attempt = 0; ; attempt++) {
      try {
        if (!producer) {
          const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
          await p.connect();
          producer = p;
        }
        await producer.send({ topic: tasks, acks: -1, messages });
        for (const id of ids) { accepted.set(id, { id, via: 'kafka', round }); unacked.delete(id); }
        return;
      } catch {
        // Not acknowledged (the broker is down or restarting): the same records again, later.
        for (const id of ids) unacked.add(id);
        const p = producer;
        producer = undefined;
        await p?.disconnect().catch(() => undefined);
      }
      if (Date.now() > retryUntil) return;
      await sleep(Math.min(2000, 200 * 2 ** Math.min(attempt, 4)));
    }
  }

  /** Evenly paced: one submission (or batch) per interval, a new one not waiting for the last. */
  async function paced(perSecond: number, batch: number, send: (ids: string[]) => Promise<void>, tag: string): Promise<void> {
    if (perSecond <= 0) return;
    const interval = (1000 * batch) / perSecond;
    const inflight = new Set<Promise<void>>();
    let next = Date.now();
    while (producing) {
      const ids = Array.from({ length: batch }, () => `r${round}-${tag}${seq++}`);
      const p = send(ids).finally(() => inflight.delete(p));
      inflight.add(p);
      next += interval;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      else next = Date.now();
    }
    await Promise.all(inflight);
  }

  return {
    accepted,
    unacked,
    refused,
    get submitted() { return submitted.http + submitted.kafka; },
    get submittedBy() { return { ...submitted }; },
    async prepare(): Promise<void> {
      await ensureTopics(kafka, [topicNames(o.prefix).tasks]);
    },
    /** Start submitting, tagging ids with the round. */
    start(r: number): void {
      round = r;
      producing = true;
      retryUntil = Number.POSITIVE_INFINITY;
      loops.push(paced(o.httpPerSecond, 1, (ids) => http(ids[0]), 'h'));
      // Kafka: sequential sends of small batches (one in flight, as an idempotent producer has).
      loops.push((async () => {
        const interval = 250;
        const batch = Math.max(1, Math.round((o.kafkaPerSecond * interval) / 1000));
        while (producing) {
          const t0 = Date.now();
          await kafkaBatch(Array.from({ length: batch }, () => `r${round}-k${seq++}`));
          const wait = interval - (Date.now() - t0);
          if (wait > 0) await sleep(wait);
        }
      })());
    },
    /** No new submissions; unanswered ones are retried for up to `retryMs` more. */
    stopNew(retryMs: number): void {
      producing = false;
      retryUntil = Date.now() + retryMs;
    },
    /** Every submission acknowledged or given up. */
    async drained(): Promise<void> {
      await Promise.all(loops.splice(0));
    },
    async close(): Promise<void> {
      producing = false;
      retryUntil = 0;
      await Promise.all(loops.splice(0));
      await producer?.disconnect().catch(() => undefined);
    },
    reset(): void { submitted = { http: 0, kafka: 0 }; },
  };
}

export type Workload = ReturnType<typeof createWorkload>;
