import type { Delivery } from '../runtime/delivery.js';
import type { AgentOptions } from './types.js';

/** How an agent talks to the dispatcher; the HTTP and Kafka transports implement it. */
export interface AgentTransport {
  ready(capabilities: string[], capacity: number): Promise<void>;
  heartbeat(): Promise<void>;
  complete(taskId: string, body: { attempt: number; outcome: 'succeeded' | 'failed'; result?: unknown; error?: string; retryable?: boolean }): Promise<void>;
  leave(): Promise<void>;
  /** Start receiving deliveries; `onDelivery` is called once per delivery, in order. */
  receive(onDelivery: (d: Delivery) => void, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** The agent loop shared by every transport: dedupe, one handler call per assignment, completion, cancellation, graceful stop. */
export function runAgent(o: AgentOptions, transport: AgentTransport) {
  const capacity = o.capacity ?? 1;
  const seen = new Set<string>();
  const running = new Map<string, { attempt: number; ac: AbortController; done: Promise<void> }>();
  const stopper = new AbortController();
  let heartbeat: NodeJS.Timeout | undefined;
  let receiving: Promise<void> | undefined;
  /** Set once stop() has given up waiting: completions still being retried stop then. */
  let closed = false;
  const report = (e: unknown) => o.onError?.(e instanceof Error ? e : new Error(String(e)));

  function onDelivery(d: Delivery): void {
    if (d.kind === 'cancellation') {
      const r = running.get(d.taskId);
      if (r && r.attempt === d.attempt) r.ac.abort(new Error(`cancelled: ${d.reason}`));
      return;
    }
    const key = `${d.taskId}#${d.attempt}`;
    if (seen.has(key)) return; // deliveries are at least once
    seen.add(key);
    const ac = new AbortController();
    const done = (async () => {
      let body: Parameters<AgentTransport['complete']>[1];
      try {
        const result = await o.handler(d, { signal: AbortSignal.any([ac.signal, stopper.signal]) });
        body = { attempt: d.attempt, outcome: 'succeeded', result };
      } catch (e) {
        const err = e as { message?: string; retryable?: boolean };
        body = { attempt: d.attempt, outcome: 'failed', error: String(err?.message ?? e), retryable: err?.retryable !== false };
      }
      // A cancelled task is not completed: the dispatcher already closed it.
      if (!ac.signal.aborted) await deliverCompletion(d.taskId, body);
    })().finally(() => running.delete(d.taskId));
    running.set(d.taskId, { attempt: d.attempt, ac, done });
  }

  /**
   * Report an outcome until the dispatcher has it or refuses it. One that never arrives (the
   * dispatcher is restarting, the broker is down) would leave the task assigned to this agent for
   * as long as the agent lives: the dispatcher redelivers the assignment after a restart, but the
   * agent drops a (taskId, attempt) it already has. Completions are idempotent, so a retry of
   * one that did arrive changes nothing; a refusal (stale attempt, unknown task: 4xx) is final.
   */
  async function deliverCompletion(taskId: string, body: Parameters<AgentTransport['complete']>[1]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await transport.complete(taskId, body);
        return;
      } catch (e) {
        report(e);
        const status = (e as { status?: number }).status;
        if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) return;
        if (closed) return;
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
      }
    }
  }

  /**
   * Receive until stopped. A receive that fails (a topic whose leader is not known yet, a broker
   * restarting, a dropped connection) is started again: an agent that heartbeats but no longer
   * receives would hold the dispatcher's work for good.
   */
  async function receiveUntilStopped(): Promise<void> {
    for (let attempt = 0; !stopper.signal.aborted; attempt++) {
      try {
        await transport.receive(onDelivery, stopper.signal);
        return;
      } catch (e) {
        report(e);
        if (stopper.signal.aborted) return;
        await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** Math.min(attempt, 5))));
      }
    }
  }

  return {
    get running(): number { return running.size; },
    async start(): Promise<void> {
      // A new process holds none of the work an earlier process of this agent id was given. If
      // that one died and this one starts before the dispatcher timed it out, the dispatcher still
      // counts those tasks as running here, and nothing would ever finish them (the assignments
      // were already taken off the mailbox or the topic). Leaving first requeues them at once; an
      // agent the dispatcher does not know is refused (404 over HTTP, a dead letter over Kafka).
      try {
        await transport.leave();
      } catch (e) {
        if ((e as { status?: number }).status !== 404) throw e;
      }
      await transport.ready(o.capabilities, capacity);
      heartbeat = setInterval(() => { transport.heartbeat().catch(report); }, o.heartbeatMs ?? 5000);
      receiving = receiveUntilStopped();
    },
    /** Stop taking work, let running handlers finish (up to `graceMs`), then leave. */
    async stop(graceMs = 10_000): Promise<void> {
      stopper.abort();
      await receiving;
      const all = Promise.allSettled([...running.values()].map((r) => r.done));
      await Promise.race([all, new Promise((r) => setTimeout(r, graceMs))]);
      closed = true;
      if (heartbeat) clearInterval(heartbeat);
      await transport.leave().catch(report);
      await transport.close();
    },
  };
}
