import type { Consumer } from 'kafkajs';

/**
 * Whether a kafkajs consumer is joining its group, so that it is disconnected only once no join is
 * under way. kafkajs stops a consumer only once its first join (or the join of a restart after a
 * retriable crash) is over. Disconnected during one, it forgets the member, but the join goes on
 * (it retries on a new connection) and the member then heartbeats and consumes for as long as the
 * process lives, with no one to stop it. Found by the chaos campaign: such a member held the writer
 * election's partition for minutes.
 */
export interface JoinTracker {
  /** A join starts (call it right before `consumer.run`, whose first join kafkajs does not announce). */
  start(): void;
  /** A join ended without an event (`consumer.run` threw). */
  end(): void;
  /**
   * Resolves once no join is under way (or after `capMs`), in the turn after the event that ended
   * it: kafkajs marks its runner running, or schedules the restart, in that event's turn.
   */
  idle(capMs: number): Promise<void>;
  /** Stops listening to the consumer. */
  dispose(): void;
}

export function trackJoins(consumer: Consumer): JoinTracker {
  let ended: (() => void) | undefined;
  let joining: Promise<void> | undefined;
  const start = (): void => { if (!ended) joining = new Promise<void>((r) => { ended = r; }); };
  const end = (): void => { ended?.(); ended = undefined; };
  const removers = [
    consumer.on(consumer.events.GROUP_JOIN, end),
    // A retriable crash is followed by a restart, which joins again; after any other, nothing runs.
    consumer.on(consumer.events.CRASH, ({ payload }) => { if (payload.restart) start(); else end(); }),
  ];
  return {
    start,
    end,
    async idle(capMs) {
      if (joining) await Promise.race([joining, new Promise<void>((r) => setTimeout(r, capMs).unref())]);
      await new Promise<void>((r) => setImmediate(r));
    },
    dispose() { for (const remove of removers) remove(); },
  };
}
