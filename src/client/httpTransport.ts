import type { Delivery } from '../runtime/delivery.js';
import type { AgentTransport } from './agentCore.js';

async function call(base: string, path: string, body: unknown): Promise<unknown> {
  // A bounded wait: a request no one answers (a connection closed in a way fetch misses) must not
  // hang the agent's start, heartbeats or completions forever; a timed-out call is an error and retried.
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}), signal: AbortSignal.timeout(30_000) });
  const text = await r.text();
  if (!r.ok) throw Object.assign(new Error(`${path}: ${r.status} ${text}`), { status: r.status, retryable: r.status >= 500 || r.status === 429 });
  return text ? JSON.parse(text) : undefined;
}

/** The HTTP transport: ready/heartbeat/complete as POSTs, assignments by long-poll. */
export function httpTransport(baseUrl: string, agentId: string, pollWaitMs = 25_000): AgentTransport {
  const base = baseUrl.replace(/\/$/, '');
  const a = `/v1/agents/${encodeURIComponent(agentId)}`;
  let registration: { capabilities: string[]; capacity: number } | undefined;
  return {
    async ready(capabilities, capacity) {
      registration = { capabilities, capacity };
      await call(base, `${a}/ready`, registration);
    },
    async heartbeat() {
      try {
        await call(base, `${a}/heartbeat`, {});
      } catch (e) {
        // 409: the dispatcher timed this agent out (it could not hear it: a partition, or the
        // dispatcher itself was down longer than agentTimeoutMs); 404: it does not know it (a new
        // log). Either way no work comes until the agent registers again.
        const status = (e as { status?: number }).status;
        if (!registration || (status !== 409 && status !== 404)) throw e;
        await call(base, `${a}/ready`, registration);
      }
    },
    async complete(taskId, body) { await call(base, `/v1/tasks/${encodeURIComponent(taskId)}/complete`, { agentId, ...body }); },
    async leave() { await call(base, `${a}/leave`, {}); },
    async receive(onDelivery, signal) {
      while (!signal.aborted) {
        try {
          const r = await fetch(`${base}${a}/assignments?waitMs=${pollWaitMs}`, { signal });
          if (r.status === 200) for (const d of await r.json() as Delivery[]) onDelivery(d);
          else if (r.status !== 204) await new Promise((res) => setTimeout(res, 500));
        } catch (e) {
          if (signal.aborted) return;
          await new Promise((res) => setTimeout(res, 500));
          void e;
        }
      }
    },
    async close() { /* nothing held */ },
  };
}
