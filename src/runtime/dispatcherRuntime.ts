import type { Logger } from 'pino';
import type { Command } from '../domain/commands.js';
import { DomainError } from '../domain/errors.js';
import type { DispatchEvent } from '../domain/events.js';
import { evolve } from '../domain/evolve.js';
import { handle } from '../domain/dispatcher.js';
import type { Policy } from '../domain/policy.js';
import { NORMAL, priorityAt } from '../domain/priority.js';
import { fromSnapshot, toSnapshot, type StateSnapshot } from '../domain/snapshot.js';
import { initialState, type DispatcherState } from '../domain/state.js';
import { createMailboxes, type Assignment, type Delivery } from './delivery.js';
import { DispatchError } from './errors.js';
import type { EventLog, InputOffset, OutboxMessage, Subscription, WriterLease } from './eventLog.js';
import type { Projection } from './projection.js';

/** Options of {@link createDispatcherRuntime}. */
export interface RuntimeOptions {
  log: EventLog;
  /** Shard name; the stream is `dispatcher-<shard>`. Default `main`. */
  shard?: string;
  /** Policy to run with; recorded as PolicyChanged when it differs from the log's. */
  policy: Policy;
  logger: Logger;
  /** Projections kept up to date after each commit (the dashboard, …). */
  projections?: Projection<unknown>[];
  /** Save a snapshot after this many events since the last one. Default 50000. */
  snapshotEvery?: number;
  /** Most commands decided into one append (one durable commit). Default 2000. */
  maxBatch?: number;
  /** Clock, for tests. Default Date.now. */
  now?: () => number;
  /** Wait for the writer lease (standby) instead of failing when another dispatcher holds it. Default false. */
  standby?: boolean;
  /** Called when the runtime has to stop (it lost the log to another writer, or the log failed). */
  onFatal?: (err: Error) => void;
  /**
   * Turn committed decisions into messages for agents' topics (Kafka egress). They are written
   * with the batch's events: in the same transaction on a Kafka log, else through the log's outbox.
   */
  egress?: (e: DispatchEvent, s: DispatcherState) => OutboxMessage | undefined;
  /** Called after each commit that stored outbox messages (wakes the outbox relay). */
  onOutbox?: () => void;
}

/** Where a command came from and what else its commit carries. */
export interface CommandSource {
  /** The input topic position this command consumed (committed with its facts on a Kafka log). */
  input?: InputOffset;
  /** Messages to publish if the command is refused (a dead-letter record with the reason). */
  onRefused?: (err: Error) => OutboxMessage[];
}

interface Pending {
  /** Absent for a pass-through: an input consumed without a command (a dead-lettered record). */
  cmd?: Command;
  source?: CommandSource;
  outbox?: OutboxMessage[];
  /** Computed right after the command is decided, resolved only after the commit. */
  result?: unknown;
  error?: Error;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  after: (s: DispatcherState, events: DispatchEvent[]) => unknown;
}

/**
 * The single writer: takes a batch of commands, decides each (domain `handle`), appends all
 * their events in one durable commit fenced by the expected version, then answers the callers
 * and delivers the assignments. A caller is answered only once its facts are durable.
 */
export async function createDispatcherRuntime(o: RuntimeOptions) {
  const shard = o.shard ?? 'main';
  const stream = `dispatcher-${shard}`;
  const now = o.now ?? Date.now;
  const log = o.log;
  const logger = o.logger;
  const projections = o.projections ?? [];
  const snapshotEvery = o.snapshotEvery ?? 50_000;
  const maxBatch = o.maxBatch ?? 2000;
  /** A silence of the dispatcher itself longer than this is its outage, not its agents'. */
  const resumeAfterMs = Math.min(3000, o.policy.health.agentTimeoutMs / 3);

  const t0 = now();
  // Always from the default policy: a different one is a recorded PolicyChanged, so replay sees it too.
  let state: DispatcherState = initialState();
  let views: unknown[] = projections.map((p) => p.initial());
  let version = 0;
  const snap = await log.loadSnapshot(stream);
  if (snap) {
    const data = JSON.parse(snap.data) as { state: StateSnapshot; views: Record<string, unknown> };
    state = fromSnapshot(data.state);
    views = projections.map((p) => (data.views[p.name] === undefined ? p.initial() : p.load(data.views[p.name])));
    version = snap.version;
  }
  let replayed = 0;
  const apply = (event: DispatchEvent, v: number) => {
    evolve(state, event);
    for (let i = 0; i < projections.length; i++) projections[i].apply(views[i], event);
    version = v;
    replayed++;
  };
  let lease: WriterLease;
  try {
    lease = await log.acquireWriter(stream, { wait: false });
  } catch (e) {
    if (!o.standby) throw e;
    // A hot standby: follow the leader's log while waiting, so taking over needs only the tail.
    logger.warn({ stream, reason: (e as Error).message }, 'another dispatcher is the writer: standing by');
    const follow: Subscription = log.subscribe(stream, version, (batch) => { for (const se of batch) apply(se.event, se.version); });
    try {
      lease = await log.acquireWriter(stream, { wait: true });
    } finally {
      await follow.close();
    }
    logger.warn({ stream, version }, 'the writer is gone: taking over');
  }
  for await (const se of log.read(stream, version)) apply(se.event, se.version);
  let sinceSnapshot = replayed;
  logger.info({ stream, version, fromSnapshot: snap?.version ?? 0, replayed, ms: now() - t0 }, 'dispatcher state loaded');
  lease.onLost?.((err) => die(new Error(`lost the writer lease of ${stream}: ${err.message}`)));

  const mailboxes = createMailboxes();
  // After a restart, agents get their running assignments again (at least once).
  for (const t of state.tasks.values()) {
    if (t.status === 'assigned' && t.agentId) mailboxes.deliver(t.agentId, assignmentOf(state, t.id, t.assignedAt, t.attempt));
  }

  let inbox: Pending[] = [];
  let flushing = false;
  let stopped = false;
  let fatal: Error | undefined;
  let commits = 0;
  let eventsWritten = 0;

  function enqueue<T>(
    cmd: Command | undefined, after: (s: DispatcherState, events: DispatchEvent[]) => T, source?: CommandSource, outbox?: OutboxMessage[],
  ): Promise<T> {
    if (fatal) return Promise.reject(new DispatchError('unavailable', `dispatcher stopped: ${fatal.message}`));
    if (stopped) return Promise.reject(new DispatchError('unavailable', 'dispatcher is shutting down'));
    return new Promise<T>((resolve, reject) => {
      inbox.push({ cmd, source, outbox, resolve: resolve as (v: unknown) => void, reject, after });
      if (!flushing) { flushing = true; setImmediate(flush); }
    });
  }

  async function flush(): Promise<void> {
    while (inbox.length > 0 && !fatal) {
      const started = now();
      const batch = inbox.length <= maxBatch ? inbox : inbox.slice(0, maxBatch);
      inbox = inbox.length <= maxBatch ? [] : inbox.slice(maxBatch);
      const events: DispatchEvent[] = [];
      const outbox: OutboxMessage[] = [];
      const inputs = new Map<string, InputOffset>();
      for (const p of batch) {
        const input = p.source?.input;
        if (input) inputs.set(`${input.groupId}\u0000${input.topic}\u0000${input.partition}`, input);
        if (p.outbox) outbox.push(...p.outbox);
        if (!p.cmd) continue;
        try {
          const evs = handle(state, p.cmd);
          for (const e of evs) {
            events.push(e);
            const m = o.egress?.(e, state);
            if (m) outbox.push(m);
          }
          p.result = p.after(state, evs);
        } catch (e) {
          if (e instanceof DomainError || e instanceof DispatchError) {
            p.error = e;
            if (p.source?.onRefused) outbox.push(...p.source.onRefused(e));
          } else {
            // A bug, not a refusal: the state may be half-changed, so it cannot be trusted past here.
            die(e as Error);
            for (const q of batch) q.reject(new DispatchError('unavailable', 'internal error'));
            flushing = false;
            return;
          }
        }
      }
      // A Kafka log commits consumed input offsets in the append's transaction, so it appends even
      // a batch without events; other logs have their ingress commit offsets after the answer.
      if (events.length > 0 || outbox.length > 0 || (log.transactionalOutbox && inputs.size > 0)) {
        try {
          version = await log.append(stream, events, version, { outbox, inputs: [...inputs.values()] });
        } catch (e) {
          die(e as Error);
          for (const q of batch) q.reject(new DispatchError('unavailable', `log append failed: ${(e as Error).message}`));
          flushing = false;
          return;
        }
        commits++;
        eventsWritten += events.length;
        sinceSnapshot += events.length;
        for (const e of events) {
          for (let i = 0; i < projections.length; i++) projections[i].apply(views[i], e);
          route(e);
        }
        if (outbox.length > 0 && !log.transactionalOutbox) o.onOutbox?.();
      }
      for (const p of batch) {
        if (p.error) p.reject(p.error);
        else p.resolve(p.result);
      }
      if (sinceSnapshot >= snapshotEvery) {
        // The answers above go out first: serializing a snapshot holds the thread for a while
        // (hundreds of ms for a large state), and they are already durable.
        await new Promise<void>((resolve) => setImmediate(resolve));
        // A failed snapshot costs restart time, not data: the log has everything. Try again later.
        try { await snapshot(); } catch (err) { logger.warn({ err }, 'snapshot failed'); sinceSnapshot = 0; }
      }
      // A commit or snapshot this slow (a broker stall, a huge state) kept the dispatcher from
      // hearing its agents: heartbeats it has not read yet are no reason to time them out.
      const ended = now();
      if (ended - started > resumeAfterMs && !fatal) {
        logger.warn({ ms: ended - started }, 'a commit kept the dispatcher from hearing its agents: crediting them');
        inbox.unshift({ cmd: { type: 'Resume', at: ended, since: started }, resolve: () => undefined, reject: () => undefined, after: () => undefined });
      }
    }
    flushing = false;
  }

  function die(err: Error): void {
    if (fatal) return;
    fatal = err;
    logger.error({ err }, 'dispatcher stopped: its in-memory state is ahead of the log');
    stopTimers();
    mailboxes.closeAll();
    for (const q of inbox) q.reject(new DispatchError('unavailable', `dispatcher stopped: ${err.message}`));
    inbox = [];
    o.onFatal?.(err);
  }

  function route(e: DispatchEvent): void {
    if (e.type === 'TaskAssigned') {
      mailboxes.deliver(e.agentId, assignmentOf(state, e.taskId, e.at, e.attempt));
    } else if (e.type === 'TaskCancelled' && e.agentId) {
      const t = state.tasks.get(e.taskId);
      mailboxes.deliver(e.agentId, { kind: 'cancellation', taskId: e.taskId, attempt: t?.attempt ?? 0, reason: e.reason, cancelledAt: new Date(e.at).toISOString() });
    }
  }

  async function snapshot(): Promise<void> {
    const t = now();
    const data = JSON.stringify({ state: toSnapshot(state), views: Object.fromEntries(projections.map((p, i) => [p.name, p.save(views[i])])) });
    await log.saveSnapshot(stream, { version, data });
    sinceSnapshot = 0;
    logger.info({ version, bytes: data.length, ms: now() - t }, 'snapshot saved');
  }

  // o.policy, not state.policy: on a fresh log (or a changed policy) the state holds the old policy
  // until the ChangePolicy below is decided, and the interval is set once.
  const tick = setInterval(() => {
    if (!inbox.some((p) => p.cmd?.type === 'Tick')) enqueue({ type: 'Tick', at: now() }, () => undefined).catch(() => undefined);
  }, o.policy.tickMs);
  tick.unref();
  function stopTimers(): void { clearInterval(tick); }

  // Down, restarting or taking over, the dispatcher heard no one since its last event: agents
  // get a fresh timeout period to be heard, instead of being timed out for its own outage. First,
  // before any command whose time could time them out.
  const resumedAt = now();
  const resumed = state.lastAt > 0 && resumedAt - state.lastAt > resumeAfterMs
    ? enqueue({ type: 'Resume', at: resumedAt, since: state.lastAt }, () => undefined) : undefined;
  if (JSON.stringify(state.policy) !== JSON.stringify(o.policy)) {
    await enqueue({ type: 'ChangePolicy', at: now(), policy: o.policy }, () => undefined);
  }
  await resumed;

  return {
    stream,
    get state(): DispatcherState { return state; },
    get version(): number { return version; },
    view<V>(name: string): V {
      const i = projections.findIndex((p) => p.name === name);
      if (i < 0) throw new Error(`no projection ${name}`);
      return views[i] as V;
    },
    stats: () => ({ commits, eventsWritten, version, inbox: inbox.length, fatal: fatal?.message }),
    /** Stamp a command with the time now and run it through the single writer. */
    execute<T>(cmd: DistributiveOmit<Command, 'at'>, after: (s: DispatcherState, events: DispatchEvent[]) => T, source?: CommandSource): Promise<T> {
      return enqueue({ ...cmd, at: now() } as Command, after, source);
    },
    /**
     * Consume an input without a command (a record that failed validation): its offset and its
     * messages (the dead-letter record) are committed with the next batch.
     */
    passThrough(input: InputOffset | undefined, outbox: OutboxMessage[]): Promise<void> {
      return enqueue(undefined, () => undefined, input ? { input } : undefined, outbox);
    },
    poll(agentId: string, waitMs: number, signal?: AbortSignal): Promise<Delivery[]> {
      // After stop() answered every waiting poll, a new one would wait its whole waitMs for nothing.
      if (stopped || fatal) return Promise.reject(new DispatchError('unavailable', 'dispatcher is not running'));
      return mailboxes.poll(agentId, waitMs, signal);
    },
    /** Return deliveries a poll could not hand over, for the agent's next poll. */
    giveBack: (agentId: string, deliveries: Delivery[]): void => mailboxes.giveBack(agentId, deliveries),
    now,
    snapshot,
    get healthy(): boolean { return !fatal && !stopped; },
    /** Stop taking commands, finish the batch in flight, snapshot, and release the writer lease. */
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      stopTimers();
      while (flushing) await new Promise((r) => setTimeout(r, 5));
      mailboxes.closeAll();
      if (!fatal && sinceSnapshot > 0) {
        try { await snapshot(); } catch (e) { logger.warn({ err: e }, 'final snapshot failed'); }
      }
      await lease.release();
    },
  };
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export type DispatcherRuntime = Awaited<ReturnType<typeof createDispatcherRuntime>>;

export function assignmentOf(s: DispatcherState, taskId: string, at: number, attempt: number): Assignment {
  const t = s.tasks.get(taskId);
  const spec = t?.spec;
  return {
    kind: 'assignment',
    taskId,
    attempt,
    tenant: spec?.tenant ?? '',
    type: spec?.type ?? '',
    priority: priorityAt(t?.level ?? NORMAL),
    payload: spec?.payload ?? null,
    sessionRef: spec?.sessionRef ?? null,
    deadline: spec?.deadline === undefined ? null : new Date(spec.deadline).toISOString(),
    assignedAt: new Date(at).toISOString(),
  };
}
