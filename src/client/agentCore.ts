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
      if (!ac.signal.aborted) await transport.complete(d.taskId, body).catch(report);
    })().finally(() => running.delete(d.taskId));
    running.set(d.taskId, { attempt: d.attempt, ac, done });
  }

  return {
    get running(): number { return running.size; },
    async start(): Promise<void> {
      await transport.ready(o.capabilities, capacity);
      heartbeat = setInterval(() => { transport.heartbeat().catch(report); }, o.heartbeatMs ?? 5000);
      receiving = transport.receive(onDelivery, stopper.signal).catch(report);
    },
    /** Stop taking work, let running handlers finish (up to `graceMs`), then leave. */
    async stop(graceMs = 10_000): Promise<void> {
      stopper.abort();
      await receiving;
      const all = Promise.allSettled([...running.values()].map((r) => r.done));
      await Promise.race([all, new Promise((r) => setTimeout(r, graceMs))]);
      if (heartbeat) clearInterval(heartbeat);
      await transport.leave().catch(report);
      await transport.close();
    },
  };
}
