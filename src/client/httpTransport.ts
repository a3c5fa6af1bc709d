import type { Delivery } from '../runtime/delivery.js';
import type { AgentTransport } from './agentCore.js';

async function call(base: string, path: string, body: unknown): Promise<unknown> {
  const r = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
  const text = await r.text();
  if (!r.ok) throw Object.assign(new Error(`${path}: ${r.status} ${text}`), { status: r.status, retryable: r.status >= 500 || r.status === 429 });
  return text ? JSON.parse(text) : undefined;
}

/** The HTTP transport: ready/heartbeat/complete as POSTs, assignments by long-poll. */
export function httpTransport(baseUrl: string, agentId: string, pollWaitMs = 25_000): AgentTransport {
  const base = baseUrl.replace(/\/$/, '');
  const a = `/v1/agents/${encodeURIComponent(agentId)}`;
  return {
    async ready(capabilities, capacity) { await call(base, `${a}/ready`, { capabilities, capacity }); },
    async heartbeat() { await call(base, `${a}/heartbeat`, {}); },
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
