/** What an agent receives: a new assignment, or word that a task it runs was cancelled. */
export interface Assignment {
  kind: 'assignment';
  taskId: string;
  attempt: number;
  tenant: string;
  type: string;
  priority: string;
  payload: unknown;
  sessionRef: string | null;
  deadline: string | null;
  assignedAt: string;
}

export interface Cancellation {
  kind: 'cancellation';
  taskId: string;
  attempt: number;
  reason: string;
  cancelledAt: string;
}

export type Delivery = Assignment | Cancellation;

interface Waiter {
  resolve: (d: Delivery[]) => void;
  timer: NodeJS.Timeout;
}

/**
 * Per-agent mailboxes for long-polling agents. A poll answers the moment something is delivered
 * (no sleep loop) or with [] after `waitMs`. Deliveries are at least once: after a restart every
 * running assignment is delivered again, and agents drop a (taskId, attempt) they already have.
 */
export function createMailboxes() {
  const boxes = new Map<string, Delivery[]>();
  const waiters = new Map<string, Waiter[]>();

  function deliver(agentId: string, d: Delivery): void {
    const ws = waiters.get(agentId);
    if (ws && ws.length > 0) {
      const w = ws.shift() as Waiter;
      if (ws.length === 0) waiters.delete(agentId);
      clearTimeout(w.timer);
      const box = boxes.get(agentId) ?? [];
      boxes.delete(agentId);
      w.resolve([...box, d]);
      return;
    }
    let box = boxes.get(agentId);
    if (!box) boxes.set(agentId, (box = []));
    box.push(d);
  }

  /** Put back deliveries a poll took but could not hand over (its client left), ahead of newer ones. */
  function giveBack(agentId: string, ds: Delivery[]): void {
    if (ds.length === 0) return;
    const all = [...ds, ...(boxes.get(agentId) ?? [])];
    boxes.delete(agentId);
    const ws = waiters.get(agentId);
    const w = ws?.shift();
    if (!w) { boxes.set(agentId, all); return; }
    if (ws?.length === 0) waiters.delete(agentId);
    clearTimeout(w.timer);
    w.resolve(all);
  }

  function poll(agentId: string, waitMs: number, signal?: AbortSignal): Promise<Delivery[]> {
    const box = boxes.get(agentId);
    if (box && box.length > 0) {
      boxes.delete(agentId);
      return Promise.resolve(box);
    }
    if (waitMs <= 0) return Promise.resolve([]);
    return new Promise((resolve) => {
      const w: Waiter = {
        resolve,
        timer: setTimeout(() => { drop(); resolve([]); }, waitMs),
      };
      const drop = () => {
        const ws = waiters.get(agentId);
        const i = ws ? ws.indexOf(w) : -1;
        if (ws && i >= 0) { ws.splice(i, 1); if (ws.length === 0) waiters.delete(agentId); }
      };
      signal?.addEventListener('abort', () => { clearTimeout(w.timer); drop(); resolve([]); }, { once: true });
      let ws = waiters.get(agentId);
      if (!ws) waiters.set(agentId, (ws = []));
      ws.push(w);
    });
  }

  /** Answer every waiting poll with nothing (shutdown). */
  function closeAll(): void {
    for (const ws of waiters.values()) for (const w of ws) { clearTimeout(w.timer); w.resolve([]); }
    waiters.clear();
  }

  return { deliver, giveBack, poll, closeAll };
}
