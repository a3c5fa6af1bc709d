/*
 * The event log on EventStoreDB. This file is the only one that uses @eventstore/db-client, so
 * that moving to @kurrent/kurrentdb-client is a change to this file alone.
 *
 * Streams. A log stream `s` is the ESDB stream `s`, one ESDB event per DispatchEvent (type: the
 * event's type; data: the event JSON; metadata: `{ version }`, plus the batch's outbox on the
 * batch's last event, see below). Our version n is ESDB revision n-1; an append at
 * expectedVersion 0 expects NO_STREAM, at k > 0 expects revision k-1; ESDB checks it and writes
 * the batch atomically or not at all (WrongExpectedVersion → ConcurrencyError). Beside it, in
 * side streams this file owns:
 *   `s-snapshots`       snapshots (gzipped, in chunks, see saveSnapshot),
 *   `s-writer`          the writer lease (claims, heartbeats, releases),
 *   `s-outbox`          outbox messages of appends without events,
 *   `s-outbox-relayed`  how far the outbox has been relayed.
 * A log stream's name may therefore not end with one of those suffixes, nor start with `$`.
 *
 * Event ids are UUIDs derived (v5-style, SHA-1) from the stream, the version AND the event's
 * JSON. A retried append (same events, same expectedVersion) therefore has the same ids, and ESDB
 * answers it as an idempotent success instead of writing it twice. The content is in the hash on
 * purpose: ESDB's idempotency check compares ids only, so ids made from stream and version alone
 * would make a competing writer's *different* batch at the same version look like an idempotent
 * success of ours, and two writers would both "win".
 *
 * Size. ESDB refuses an append larger than its MaxAppendSize (1 MiB by default, 16 MiB at most;
 * `EVENTSTORE_MAX_APPEND_SIZE`). An append is one atomic write, so it is never split: a batch
 * larger than the server takes fails with a clear, non-retriable error and nothing is written.
 * Run the server with a larger MaxAppendSize for large batches (the dispatcher decides up to 2000
 * commands into one append). Snapshots are split into chunks, so they fit any server.
 *
 * Outbox (for Kafka egress beside ESDB). `transactionalOutbox` is false: messages are stored with
 * the append and relayed after, at least once. ESDB (before KurrentDB's multi-stream appends) has
 * no transaction across streams, and extra outbox events in the log stream would break the
 * version ↔ revision mapping. So the messages of a batch ride in the metadata of the batch's last
 * event: they are committed in the same atomic append as the events, or not at all. An append
 * without events but with messages (dead letters of refused or invalid inputs) has no event to
 * carry them: it checks the version and then appends them to `s-outbox`. That pair is not atomic;
 * in the worst case a writer that has just lost the stream adds one dead letter (at-least-once
 * already allows a duplicate). `readOutbox` reads the log stream (metadata) and `s-outbox` from a
 * cursor persisted in `s-outbox-relayed`, merged in commit order; `markRelayed` moves the cursor.
 * The outboxes read are those of the streams this log object is (or was) the writer of, or
 * appended messages to: the relay runs beside the writer.
 *
 * Writer lease. ESDB has no locks; what fences writers is expectedRevision on the log stream:
 * a writer with a stale version cannot append, lease or no lease. The lease only elects one
 * writer so that the others stand by: the holder appends a claim, then a heartbeat every
 * `heartbeatMs`, to `s-writer`, each with the expected revision of its previous one. Another
 * process sees a claim younger than the lease timeout (by the server's event time, and by how
 * long it has itself seen no new event) as held; `wait: false` → WriterBusyError naming the
 * holder, `wait: true` → it polls until the claim is stale or released, then claims with the
 * expected revision it read (of two racing claimers, the loser gets WrongExpectedVersion and
 * keeps waiting). A holder whose heartbeat meets WrongExpectedVersion was taken over: onLost.
 * Clock skew between a client and the server beyond the lease timeout can make a live claim look
 * stale; the takeover is then early, not unsafe (the old holder's appends are refused, and its
 * next heartbeat reports the loss).
 */
import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  ANY,
  BACKWARDS,
  END,
  ErrorType,
  EventStoreDBClient,
  FORWARDS,
  NO_STREAM,
  START,
  StreamNotFoundError,
  WrongExpectedVersionError,
  binaryEvent,
  jsonEvent,
  type AppendExpectedRevision,
  type EventData,
  type JSONType,
  type ReadRevision,
  type ResolvedEvent,
  type StreamSubscription,
} from '@eventstore/db-client';
import type { DispatchEvent } from '../../domain/events.js';
import {
  ConcurrencyError,
  WriterBusyError,
  checkAppendArgs,
  checkSnapshotVersion,
  checkStream,
  type EventLog,
  type OutboxMessage,
  type PendingOutbox,
  type Snapshot,
  type StoredEvent,
  type Subscription,
  type WriterLease,
} from '../../runtime/eventLog.js';

/** Options of {@link getEsdbEventLog}. */
export interface EsdbEventLogOptions {
  /**
   * `esdb://host:2113?tls=false` (or `esdb+discover://…`, see the client's connection strings).
   * `//host:2113?…` is taken as `esdb://host:2113?…`, so `--log esdb://host:2113` works too.
   */
  connectionString: string;
  /**
   * Read and follow only (`replay`, `verify` beside a running server): `append`, `saveSnapshot`,
   * `acquireWriter` and `markRelayed` throw. Default `false`.
   */
  readonly?: boolean;
  /** The writer lease is stale this long after its holder's last heartbeat, in ms. Default `10000`. */
  leaseTimeoutMs?: number;
  /** How often the holder renews the lease, in ms; at most a third of the lease timeout. Default `2000` (or a third of the lease timeout, if less). */
  heartbeatMs?: number;
  /** How often a standby (`acquireWriter({ wait: true })`) looks at the lease, in ms. Default `500`. */
  lockPollMs?: number;
  /** Most events per `onEvents` call of a subscription. Default `5000`. */
  readPageSize?: number;
  /** Bytes of gzipped snapshot per ESDB event (below the server's MaxAppendSize). Default 768 KiB. */
  snapshotChunkBytes?: number;
  /** Times an append is tried again after a transient failure (same ids: idempotent). Default `2`. */
  appendRetries?: number;
  /**
   * Called when a subscription stops because its `onEvents` threw or the stream could not be read
   * (after retrying transient failures). Default: rethrow outside any promise, never silent.
   */
  onSubscriptionError?: (error: unknown, stream: string) => void;
}

/** A failure of EventStoreDB or of its data, other than a lost race; `retriable` says whether trying again may help. */
export class EsdbLogError extends Error {
  override readonly name = 'EsdbLogError';
  constructor(message: string, readonly retriable: boolean, options?: { cause?: unknown }) {
    super(message, options);
  }
}

const SIDE_SUFFIXES = ['-snapshots', '-writer', '-outbox', '-outbox-relayed'] as const;
const snapshotsOf = (stream: string): string => `${stream}-snapshots`;
const writerOf = (stream: string): string => `${stream}-writer`;
const outboxOf = (stream: string): string => `${stream}-outbox`;
const relayedOf = (stream: string): string => `${stream}-outbox-relayed`;

const T = {
  snapshot: 'switchyard-snapshot',
  snapshotChunk: 'switchyard-snapshot-chunk',
  claim: 'switchyard-writer-claim',
  heartbeat: 'switchyard-writer-heartbeat',
  release: 'switchyard-writer-release',
  outbox: 'switchyard-outbox',
  relayed: 'switchyard-outbox-relayed',
} as const;

/** Namespace of the event ids (a fixed random UUID). */
const ID_NAMESPACE = Buffer.from('5b0e7c1a9d2f4e8b8a61c3f0d47e2b95', 'hex');
const KiB = 1024;
/** Outbox cursors persisted after the scan moved this many events past the persisted one. */
const CURSOR_PERSIST_EVERY = 1000;

type Recorded = NonNullable<ResolvedEvent['event']>;

interface EventMeta {
  version: number;
  outbox?: StoredMessage[];
}

/** An outbox message as stored in ESDB (JSON): a Buffer value is kept as base64. */
interface StoredMessage {
  topic: string;
  key: string;
  value?: string;
  value64?: string;
  headers?: Record<string, string>;
}

interface Holder { id: string; pid: number; host: string }
interface LockData { holder: Holder; since: number; leaseTimeoutMs: number }
interface LockState { revision: bigint | undefined; type?: string; data?: LockData; created?: number }

/** Where the relay is: the next message is message `index` of event `version` of the log stream, and `sideIndex` of `s-outbox` revision `sideRevision`. */
interface OutboxCursor { version: number; index: number; sideRevision: number; sideIndex: number }

interface OutboxState {
  stream: string;
  loading?: Promise<void>;
  cursor: OutboxCursor;
  persisted: OutboxCursor;
  /** Positions (`m:v:i`, `s:r:i`) relayed but not yet passed by the cursor. */
  relayed: Set<string>;
  /** Per position handed out: where the cursor goes once it is relayed. */
  next: Map<string, { version: number; index: number } | { sideRevision: number; sideIndex: number }>;
}

interface Candidate { order: number; pos: number; index: number; key: string; message: StoredMessage }

/**
 * The EventStoreDB event log (see the comment at the top of this file for the design).
 * `kind: 'esdb'`, `transactionalOutbox: false`; no `readTask` (ESDB has no index by task: the
 * runtime keeps recent histories itself).
 */
export function getEsdbEventLog(options: EsdbEventLogOptions): EventLog {
  const connectionString = options.connectionString.startsWith('//') ? `esdb:${options.connectionString}` : options.connectionString;
  const where = `esdb event log ${connectionString.replace(/\/\/[^@/]*@/, '//***@')}`;
  const readonly = options.readonly ?? false;
  const leaseTimeoutMs = options.leaseTimeoutMs ?? 10_000;
  const heartbeatMs = options.heartbeatMs ?? Math.min(2000, Math.floor(leaseTimeoutMs / 3));
  const lockPollMs = options.lockPollMs ?? 500;
  const pageSize = options.readPageSize ?? 5000;
  const chunkBytes = options.snapshotChunkBytes ?? 768 * KiB;
  const appendRetries = options.appendRetries ?? 2;
  const onSubscriptionError = options.onSubscriptionError ?? ((error: unknown) => {
    setImmediate(() => { throw error; });
  });
  if (!(heartbeatMs > 0 && heartbeatMs * 3 <= leaseTimeoutMs)) {
    throw new RangeError(`heartbeatMs (${heartbeatMs}) must be positive and at most a third of leaseTimeoutMs (${leaseTimeoutMs})`);
  }
  if (!(chunkBytes >= KiB)) throw new RangeError(`snapshotChunkBytes must be at least 1024, got ${chunkBytes}`);

  const client = EventStoreDBClient.connectionString(connectionString);

  let closed = false;
  let closingDone: Promise<void> | undefined;
  const closing = new AbortController();
  const subscriptions = new Set<Subscription>();
  const leases = new Set<{ closeHeld: () => Promise<void> }>();
  const outboxes = new Map<string, OutboxState>();
  const outboxIds = new Map<string, number>();
  const outboxRefs = new Map<number, { stream: string; key: string }>();
  let nextOutboxId = 1;
  const cappedStreams = new Set<string>();

  const assertOpen = (): void => {
    if (closed) throw new Error(`${where} is closed`);
  };
  const assertWritable = (what: string): void => {
    if (readonly) throw new Error(`${where} is open read-only: cannot ${what}`);
  };
  const fail = (error: unknown, what: string): Error => {
    if (error instanceof ConcurrencyError || error instanceof WriterBusyError || error instanceof EsdbLogError) return error;
    if (error instanceof TypeError || error instanceof RangeError) return error;
    const transient = isTransient(error);
    return new EsdbLogError(`${where}: ${what}: ${messageOf(error)} (${transient ? 'retriable: the server may recover' : 'not retriable'})`, transient, { cause: error });
  };

  // --- reading ----------------------------------------------------------------------------------

  /** Events of an ESDB stream; an absent stream has none. Cancels the server read if the consumer stops early. */
  async function* recorded(name: string, from: ReadRevision, direction: typeof FORWARDS | typeof BACKWARDS, maxCount?: number): AsyncGenerator<Recorded> {
    assertOpen();
    const reading = client.readStream(name, { fromRevision: from, direction, ...(maxCount === undefined ? {} : { maxCount }) });
    let done = false;
    try {
      for await (const resolved of reading as AsyncIterable<ResolvedEvent>) {
        if (!resolved.event) throw new EsdbLogError(`${where}: reading ${name} returned an event without a record (an unresolved link?)`, false);
        yield resolved.event;
      }
      done = true;
    } catch (error) {
      done = true;
      if (isStreamNotFound(error)) return;
      throw fail(error, `read ${name}`);
    } finally {
      // Only when the consumer left early: the server would otherwise go on sending.
      if (!done) await reading.cancel().catch(() => undefined);
    }
  }

  const lastRecorded = async (name: string): Promise<Recorded | undefined> => {
    let last: Recorded | undefined;
    for await (const e of recorded(name, END, BACKWARDS, 1)) last = e;
    return last;
  };

  const toStored = (stream: string, e: Recorded): StoredEvent => {
    const version = Number(e.revision) + 1;
    const meta = e.metadata as Partial<EventMeta> | undefined;
    const data = e.data as unknown;
    if (!e.isJson || typeof data !== 'object' || data === null || (data as { type?: unknown }).type !== e.type || meta?.version !== version) {
      throw new EsdbLogError(
        `${where}: ${stream} revision ${e.revision} (event ${e.id}, type ${e.type}) is not a switchyard event at version ${version}; was this stream written by something else?`,
        false,
      );
    }
    // The prepare position is the event's own place in the ESDB log: unique, and increasing along
    // a stream. (The commit position may be shared by the events of one append.)
    const position = e.position ? Number(e.position.prepare) : version;
    return { version, position, event: data as DispatchEvent };
  };

  const versionOf = async (stream: string): Promise<number> => {
    const last = await lastRecorded(stream);
    return last ? Number(last.revision) + 1 : 0;
  };

  // --- appending ----------------------------------------------------------------------------------

  /** appendToStream, tried again (with the same events, hence idempotently) after transient failures. */
  const appendWithRetries = async (name: string, events: EventData[], expectedRevision: AppendExpectedRevision): Promise<bigint> => {
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await client.appendToStream(name, events, { expectedRevision });
        return result.nextExpectedRevision;
      } catch (error) {
        if (attempt >= appendRetries || !isTransient(error) || closed) throw error;
        await sleep(200 * 2 ** attempt);
      }
    }
  };

  const appendOutboxOnly = async (stream: string, expectedVersion: number, outbox: readonly OutboxMessage[]): Promise<void> => {
    const actual = await versionOf(stream);
    if (actual !== expectedVersion) throw new ConcurrencyError(stream, expectedVersion, actual);
    const event = jsonEvent({ id: randomUUID(), type: T.outbox, data: { afterVersion: expectedVersion, messages: outbox.map(storeMessage) } as JSONType });
    try {
      await appendWithRetries(outboxOf(stream), [event], ANY);
    } catch (error) {
      throw fail(error, `store ${outbox.length} outbox messages in ${outboxOf(stream)}`);
    }
    outboxState(stream);
  };

  // --- snapshots ----------------------------------------------------------------------------------

  const loadSnapshotOnce = async (stream: string): Promise<Snapshot | undefined | 'retry'> => {
    const name = snapshotsOf(stream);
    let manifest: { version: number; snapshot: string; chunks: number; sha256: string } | undefined;
    const chunks = new Map<number, Buffer>();
    // Newest first: the latest manifest, then its chunks, which precede it.
    for await (const e of recorded(name, END, BACKWARDS)) {
      if (!manifest) {
        if (e.type !== T.snapshot) continue; // a chunk of a save that did not finish
        manifest = parseManifest(e.data, name);
        continue;
      }
      if (e.type !== T.snapshotChunk) continue;
      const meta = e.metadata as { snapshot?: unknown; index?: unknown } | undefined;
      if (meta?.snapshot !== manifest.snapshot || typeof meta.index !== 'number') continue;
      chunks.set(meta.index, Buffer.from(e.data as Uint8Array));
      if (chunks.size === manifest.chunks) break;
    }
    if (!manifest) return undefined;
    // A newer save truncated the stream between our reads: read again.
    if (chunks.size !== manifest.chunks) return 'retry';
    const packed = Buffer.concat(Array.from({ length: manifest.chunks }, (_, i) => chunks.get(i) ?? Buffer.alloc(0)));
    const raw = gunzipSync(packed);
    if (createHash('sha256').update(raw).digest('hex') !== manifest.sha256) {
      throw new EsdbLogError(`${where}: the snapshot ${manifest.snapshot} of ${stream} (version ${manifest.version}) does not match its checksum`, false);
    }
    return { version: manifest.version, data: raw.toString('utf8') };
  };

  // --- outbox ---------------------------------------------------------------------------------------

  const outboxState = (stream: string): OutboxState => {
    let state = outboxes.get(stream);
    if (!state) {
      const start: OutboxCursor = { version: 1, index: 0, sideRevision: 0, sideIndex: 0 };
      outboxes.set(stream, (state = { stream, cursor: { ...start }, persisted: { ...start }, relayed: new Set(), next: new Map() }));
    }
    return state;
  };

  const loadCursor = async (state: OutboxState): Promise<void> => {
    state.loading ??= (async () => {
      const last = await lastRecorded(relayedOf(state.stream));
      if (!last) return;
      const c = last.data as Partial<OutboxCursor>;
      if (![c.version, c.index, c.sideRevision, c.sideIndex].every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) {
        throw new EsdbLogError(`${where}: ${relayedOf(state.stream)} holds no valid outbox cursor`, false);
      }
      state.cursor = { version: Math.max(1, c.version!), index: c.index!, sideRevision: c.sideRevision!, sideIndex: c.sideIndex! };
      state.persisted = { ...state.cursor };
    })();
    state.loading.catch(() => { state.loading = undefined; });
    await state.loading;
  };

  const persistCursor = async (state: OutboxState): Promise<void> => {
    const c = state.cursor;
    const p = state.persisted;
    if (c.version === p.version && c.index === p.index && c.sideRevision === p.sideRevision && c.sideIndex === p.sideIndex) return;
    const name = relayedOf(state.stream);
    const cursor = { ...c };
    await client.appendToStream(name, jsonEvent({ id: randomUUID(), type: T.relayed, data: cursor as unknown as JSONType }), { expectedRevision: ANY });
    state.persisted = cursor;
    if (!cappedStreams.has(name)) {
      // Only the newest cursor matters: let the server drop the older ones.
      await client.setStreamMetadata(name, { maxCount: 16 }).then(() => cappedStreams.add(name), () => undefined);
    }
  };

  /** Pending messages in the log stream's metadata from the cursor on, at most `limit`; moves the cursor over events with nothing pending. */
  const scanMain = async (state: OutboxState, limit: number): Promise<Candidate[]> => {
    const found: Candidate[] = [];
    const from = BigInt(state.cursor.version - 1);
    for await (const e of recorded(state.stream, from, FORWARDS)) {
      const version = Number(e.revision) + 1;
      const messages = (e.metadata as Partial<EventMeta> | undefined)?.outbox ?? [];
      const first = version === state.cursor.version ? state.cursor.index : 0;
      for (let i = first; i < messages.length; i++) {
        const key = `m:${version}:${i}`;
        state.next.set(key, i + 1 < messages.length ? { version, index: i + 1 } : { version: version + 1, index: 0 });
        if (!state.relayed.has(key)) found.push({ order: version * 2, pos: version, index: i, key, message: messages[i] });
      }
      if (found.length === 0) {
        // Everything up to here is relayed (or was never there): the cursor may pass it.
        for (let i = 0; i < messages.length; i++) passed(state, `m:${version}:${i}`);
        state.cursor.version = version + 1;
        state.cursor.index = 0;
      }
      if (found.length >= limit) break;
    }
    return found;
  };

  const scanSide = async (state: OutboxState, limit: number): Promise<Candidate[]> => {
    const found: Candidate[] = [];
    for await (const e of recorded(outboxOf(state.stream), BigInt(state.cursor.sideRevision), FORWARDS)) {
      const revision = Number(e.revision);
      const data = e.data as { afterVersion?: unknown; messages?: unknown };
      if (e.type !== T.outbox || typeof data.afterVersion !== 'number' || !Array.isArray(data.messages)) {
        throw new EsdbLogError(`${where}: ${outboxOf(state.stream)} revision ${revision} is not a switchyard outbox entry`, false);
      }
      const messages = data.messages as StoredMessage[];
      const first = revision === state.cursor.sideRevision ? state.cursor.sideIndex : 0;
      for (let i = first; i < messages.length; i++) {
        const key = `s:${revision}:${i}`;
        state.next.set(key, i + 1 < messages.length ? { sideRevision: revision, sideIndex: i + 1 } : { sideRevision: revision + 1, sideIndex: 0 });
        // Stored when the log stream was at afterVersion: after that event's messages, before the next one's.
        if (!state.relayed.has(key)) found.push({ order: data.afterVersion * 2 + 1, pos: revision, index: i, key, message: messages[i] });
      }
      if (found.length === 0) {
        for (let i = 0; i < messages.length; i++) passed(state, `s:${revision}:${i}`);
        state.cursor.sideRevision = revision + 1;
        state.cursor.sideIndex = 0;
      }
      if (found.length >= limit) break;
    }
    return found;
  };

  /** The cursor has passed a position: forget what was kept about it. */
  const passed = (state: OutboxState, key: string): void => {
    state.relayed.delete(key);
    state.next.delete(key);
    forgetId(state.stream, key);
  };

  /** Moves the cursor over the relayed messages at its head. */
  const advance = (state: OutboxState): void => {
    for (;;) {
      const key = `m:${state.cursor.version}:${state.cursor.index}`;
      const next = state.next.get(key);
      if (!state.relayed.has(key) || !next || !('version' in next)) break;
      passed(state, key);
      state.cursor.version = next.version;
      state.cursor.index = next.index;
    }
    for (;;) {
      const key = `s:${state.cursor.sideRevision}:${state.cursor.sideIndex}`;
      const next = state.next.get(key);
      if (!state.relayed.has(key) || !next || !('sideRevision' in next)) break;
      passed(state, key);
      state.cursor.sideRevision = next.sideRevision;
      state.cursor.sideIndex = next.sideIndex;
    }
  };

  const idOf = (stream: string, key: string): number => {
    const ref = `${stream}\u0000${key}`;
    let id = outboxIds.get(ref);
    if (id === undefined) {
      id = nextOutboxId++;
      outboxIds.set(ref, id);
      outboxRefs.set(id, { stream, key });
    }
    return id;
  };
  const forgetId = (stream: string, key: string): void => {
    const ref = `${stream}\u0000${key}`;
    const id = outboxIds.get(ref);
    if (id === undefined) return;
    outboxIds.delete(ref);
    outboxRefs.delete(id);
  };

  // --- the writer lease ---------------------------------------------------------------------------

  const readLock = async (name: string): Promise<LockState> => {
    const last = await lastRecorded(name);
    if (!last) return { revision: undefined };
    return { revision: last.revision, type: last.type, data: parseLockData(last.data), created: last.created.getTime() };
  };

  const describeHolder = (name: string, lock: LockState): string => {
    if (!lock.data) return `its lease ${name} is held`;
    const { holder, since } = lock.data;
    const age = lock.created === undefined ? '' : `, last heartbeat ${((Date.now() - lock.created) / 1000).toFixed(1)} s ago`;
    return `its lease ${name} is held by pid ${holder.pid} on ${holder.host} since ${new Date(since).toISOString()}${age}; it expires ${timeoutOf(lock) / 1000} s after the last heartbeat`;
  };
  const timeoutOf = (lock: LockState): number => lock.data?.leaseTimeoutMs ?? leaseTimeoutMs;

  const makeLease = (stream: string, name: string, me: Holder, since: number, claimed: bigint): WriterLease => {
    let revision = claimed;
    let state: 'held' | 'lost' | 'released' = 'held';
    let lostReason: Error | undefined;
    const listeners: ((reason: Error) => void)[] = [];
    let inFlight: Promise<void> | undefined;
    /** The heartbeat being written; kept until it succeeds, so that a retry of one that landed is idempotent. */
    let pending: EventData | undefined;

    const lose = (reason: Error): void => {
      if (state !== 'held') return;
      state = 'lost';
      lostReason = reason;
      clearInterval(timer);
      leases.delete(handle);
      for (const listener of listeners) listener(reason);
    };

    const beat = async (): Promise<void> => {
      if (state !== 'held') return;
      pending ??= jsonEvent({ id: randomUUID(), type: T.heartbeat, data: { holder: me, since, leaseTimeoutMs } as unknown as JSONType });
      try {
        const result = await client.appendToStream(name, pending, { expectedRevision: revision });
        revision = result.nextExpectedRevision;
        pending = undefined;
      } catch (error) {
        if (isWrongExpectedVersion(error)) {
          const now = await readLock(name).catch(() => undefined);
          lose(new Error(`another process took the writer lease of ${stream}${now ? ` (${describeHolder(name, now)})` : ''}`));
        }
        // Otherwise (the server unreachable, …) try again at the next tick, with the same event.
      }
    };
    const timer = setInterval(() => {
      inFlight ??= beat().finally(() => { inFlight = undefined; });
    }, heartbeatMs);
    timer.unref();

    const writeRelease = async (): Promise<void> => {
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          await client.appendToStream(name, jsonEvent({ id: randomUUID(), type: T.release, data: { holder: me } as unknown as JSONType }), { expectedRevision: revision });
          return;
        } catch (error) {
          if (!isWrongExpectedVersion(error)) return; // unreachable server: the claim goes stale after the lease timeout
          // A heartbeat that failed on the way back may have landed: release from there if the lease is still ours.
          const now = await readLock(name).catch(() => undefined);
          if (!now || now.revision === undefined || now.data?.holder.id !== me.id || now.type === T.release) return;
          revision = now.revision;
        }
      }
    };

    const end = async (): Promise<void> => {
      clearInterval(timer);
      leases.delete(handle);
      await inFlight;
      await writeRelease();
    };
    const handle = {
      // The log is closing under a held lease: its holder can write no more.
      closeHeld: async (): Promise<void> => {
        lose(new Error(`${where} was closed while holding the writer lease of ${stream}`));
        await end();
      },
    };
    leases.add(handle);

    return {
      async release() {
        if (state !== 'held') return;
        state = 'released';
        await end();
      },
      onLost(listener) {
        if (lostReason) {
          const reason = lostReason;
          queueMicrotask(() => listener(reason));
        } else {
          listeners.push(listener);
        }
      },
    };
  };

  // --- the port -------------------------------------------------------------------------------------

  const log: EventLog = {
    kind: 'esdb',
    transactionalOutbox: false,

    async append(stream, events, expectedVersion, extras) {
      assertOpen();
      assertWritable('append');
      checkAppendArgs(stream, expectedVersion);
      checkEsdbStream(stream);
      const outbox = extras?.outbox ?? [];
      if (events.length === 0) {
        // Nothing to write to the log stream: check the version (an append of nothing writes nothing).
        if (outbox.length > 0) {
          await appendOutboxOnly(stream, expectedVersion, outbox);
          return expectedVersion;
        }
        const actual = await versionOf(stream);
        if (actual !== expectedVersion) throw new ConcurrencyError(stream, expectedVersion, actual);
        return actual;
      }
      const data = events.map((event, i) => {
        const version = expectedVersion + i + 1;
        if (typeof event?.type !== 'string' || typeof event.at !== 'number') {
          throw new TypeError(`event ${i + 1} of the batch for ${stream} has no string type or numeric at`);
        }
        const json = JSON.stringify(event);
        const metadata: EventMeta = { version };
        if (i === events.length - 1 && outbox.length > 0) metadata.outbox = outbox.map(storeMessage);
        return jsonEvent({ id: eventId(stream, version, json), type: event.type, data: event as unknown as JSONType, metadata });
      });
      const expectedRevision: AppendExpectedRevision = expectedVersion === 0 ? NO_STREAM : BigInt(expectedVersion - 1);
      const version = expectedVersion + events.length;
      let next: bigint;
      try {
        next = await appendWithRetries(stream, data, expectedRevision);
      } catch (error) {
        if (isWrongExpectedVersion(error)) {
          const actual = actualVersionOf(error) ?? await versionOf(stream).catch(() => -1);
          throw new ConcurrencyError(stream, expectedVersion, actual);
        }
        if ((error as { type?: unknown }).type === ErrorType.MAXIMUM_APPEND_SIZE_EXCEEDED) {
          const max = (error as { maxAppendSize?: number }).maxAppendSize;
          const bytes = data.reduce((n, e) => n + JSON.stringify(e.data).length + JSON.stringify(e.metadata).length, 0);
          throw new EsdbLogError(
            `${where}: the append of ${events.length} events (about ${bytes} bytes) to ${stream} is larger than the server's MaxAppendSize`
            + ` (${max ?? 'unknown'} bytes); nothing was written. Raise it on the server (EVENTSTORE_MAX_APPEND_SIZE, at most 16 MiB)`
            + ' or make the batches smaller (the dispatcher\'s maxBatch).',
            false, { cause: error },
          );
        }
        throw fail(error, `append ${events.length} events to ${stream} at version ${expectedVersion}`);
      }
      if (next !== BigInt(version - 1)) {
        throw new EsdbLogError(`${where}: after appending versions ${expectedVersion + 1}..${version} of ${stream} the server reports revision ${next}, not ${version - 1}`, false);
      }
      if (outbox.length > 0) outboxState(stream);
      return version;
    },

    read(stream, afterVersion = 0) {
      return {
        async *[Symbol.asyncIterator]() {
          assertOpen();
          checkEsdbStream(stream);
          if (!Number.isSafeInteger(afterVersion) || afterVersion < 0) throw new RangeError(`afterVersion must be a non-negative integer, got ${afterVersion}`);
          let expected = afterVersion + 1;
          for await (const e of recorded(stream, BigInt(afterVersion), FORWARDS)) {
            const stored = toStored(stream, e);
            if (stored.version !== expected) throw new EsdbLogError(`${where}: reading ${stream} after version ${afterVersion} gave version ${stored.version} where ${expected} was due`, false);
            expected++;
            yield stored;
          }
        },
      };
    },

    async version(stream) {
      assertOpen();
      checkEsdbStream(stream);
      return versionOf(stream);
    },

    subscribe(stream, afterVersion, onEvents) {
      assertOpen();
      checkEsdbStream(stream);
      if (!Number.isSafeInteger(afterVersion) || afterVersion < 0) throw new RangeError(`afterVersion must be a non-negative integer, got ${afterVersion}`);
      /** The last version received from the server (queued or delivered). */
      let received = afterVersion;
      const queue: StoredEvent[] = [];
      let stopped = false;
      let delivering = false;
      let current: StreamSubscription | undefined;
      let retryTimer: NodeJS.Timeout | undefined;
      let failures = 0;

      const stop = async (): Promise<void> => {
        stopped = true;
        if (retryTimer) clearTimeout(retryTimer);
        subscriptions.delete(subscription);
        const s = current;
        current = undefined;
        if (s) await s.unsubscribe().catch(() => undefined);
      };
      const failWith = (error: unknown): void => {
        if (stopped) return;
        void stop();
        onSubscriptionError(error, stream);
      };

      // One delivery loop at a time; events received while onEvents runs wait in the queue (the
      // server subscription is paused while a full page waits).
      const pump = (): void => {
        if (delivering || stopped || queue.length === 0) return;
        delivering = true;
        void (async () => {
          try {
            while (!stopped && queue.length > 0) {
              const batch = queue.splice(0, pageSize);
              if (queue.length < pageSize && current?.isPaused()) current.resume();
              await onEvents(batch);
            }
          } catch (error) {
            failWith(error);
          } finally {
            delivering = false;
          }
        })();
      };

      const retry = (error: unknown): void => {
        // A stream that does not exist yet is waited for (servers deliver it once written; this
        // covers one that reports it instead). Other failures are retried a few times.
        if (isStreamNotFound(error)) {
          retryTimer = setTimeout(connect, 1000);
          retryTimer.unref();
          return;
        }
        if (++failures > 10) {
          failWith(fail(error, `follow ${stream} (gave up after ${failures - 1} attempts)`));
          return;
        }
        retryTimer = setTimeout(connect, Math.min(5000, 100 * 2 ** failures));
        retryTimer.unref();
      };

      const connect = (): void => {
        if (stopped || closed) return;
        // fromRevision is exclusive for subscriptions: START, or the revision of the last version
        // received. Versions already received are dropped below all the same, so an inclusive start
        // would cost one duplicate read, never a duplicate delivery.
        const sub = client.subscribeToStream(stream, { fromRevision: received === 0 ? START : BigInt(received - 1) });
        current = sub;
        sub.on('data', (resolved: ResolvedEvent) => {
          if (stopped || current !== sub) return;
          let stored: StoredEvent;
          try {
            if (!resolved.event) throw new EsdbLogError(`${where}: the subscription to ${stream} delivered an event without a record`, false);
            stored = toStored(stream, resolved.event);
          } catch (error) {
            failWith(error);
            return;
          }
          if (stored.version <= received) return;
          if (stored.version !== received + 1) {
            failWith(new EsdbLogError(`${where}: the subscription to ${stream} delivered version ${stored.version} after ${received}`, false));
            return;
          }
          received = stored.version;
          failures = 0;
          queue.push(stored);
          if (queue.length >= pageSize) sub.pause();
          pump();
        });
        sub.on('error', (error: unknown) => {
          if (stopped || current !== sub) return;
          current = undefined;
          if (isTransient(error) || isStreamNotFound(error)) retry(error);
          else failWith(fail(error, `follow ${stream}`));
        });
        sub.on('end', () => {
          if (stopped || current !== sub) return;
          current = undefined;
          retry(new Error('the server ended the subscription'));
        });
      };

      const subscription: Subscription = {
        // Does not wait for an onEvents call in progress (a handler may close its own
        // subscription); no call starts after this.
        close: stop,
      };
      subscriptions.add(subscription);
      connect();
      return subscription;
    },

    async saveSnapshot(stream, snapshot) {
      assertOpen();
      assertWritable('save a snapshot');
      checkEsdbStream(stream);
      checkSnapshotVersion(snapshot);
      const name = snapshotsOf(stream);
      const raw = Buffer.from(snapshot.data, 'utf8');
      const packed = gzipSync(raw);
      const id = randomUUID();
      const parts: Buffer[] = [];
      for (let offset = 0; offset < packed.length; offset += chunkBytes) parts.push(packed.subarray(offset, offset + chunkBytes));
      const manifest = { version: snapshot.version, snapshot: id, chunks: parts.length, sha256: createHash('sha256').update(raw).digest('hex'), bytes: raw.length };
      let firstRevision: bigint | undefined;
      try {
        // One chunk per append (each below MaxAppendSize); the manifest goes with the last one,
        // so a snapshot exists once its manifest does, and a save cut short leaves only chunks.
        for (let i = 0; i < parts.length; i++) {
          const batch: EventData[] = [binaryEvent({ id: randomUUID(), type: T.snapshotChunk, data: parts[i], metadata: { snapshot: id, index: i } })];
          if (i === parts.length - 1) batch.push(jsonEvent({ id: randomUUID(), type: T.snapshot, data: manifest }));
          const next = await appendWithRetries(name, batch, ANY);
          firstRevision ??= next - BigInt(batch.length - 1);
        }
      } catch (error) {
        throw fail(error, `save a snapshot of ${stream} at version ${snapshot.version}`);
      }
      // Older snapshots are of no more use: let the server drop them. Housekeeping only.
      await client.setStreamMetadata(name, { truncateBefore: Number(firstRevision) }).catch(() => undefined);
    },

    async loadSnapshot(stream) {
      assertOpen();
      checkEsdbStream(stream);
      for (let attempt = 0; attempt < 5; attempt++) {
        const loaded = await loadSnapshotOnce(stream);
        if (loaded !== 'retry') return loaded;
      }
      throw new EsdbLogError(`${where}: the latest snapshot of ${stream} kept losing its chunks while being read (is another process saving snapshots in a loop?)`, true);
    },

    async readOutbox(limit) {
      assertOpen();
      if (!Number.isSafeInteger(limit) || limit <= 0) throw new RangeError(`limit must be a positive integer, got ${limit}`);
      const pending: PendingOutbox[] = [];
      for (const state of outboxes.values()) {
        if (pending.length >= limit) break;
        await loadCursor(state);
        const persistedVersion = state.persisted.version;
        const want = limit - pending.length;
        const candidates = [...await scanMain(state, want), ...await scanSide(state, want)]
          .sort((a, b) => a.order - b.order || a.pos - b.pos || a.index - b.index)
          .slice(0, want);
        for (const c of candidates) pending.push({ id: idOf(state.stream, c.key), ...loadMessage(c.message) });
        // Keep restarts from scanning long stretches without messages again.
        if (!readonly && state.cursor.version - persistedVersion >= CURSOR_PERSIST_EVERY) await persistCursor(state).catch(() => undefined);
      }
      return pending;
    },

    async markRelayed(ids) {
      assertOpen();
      assertWritable('mark outbox messages relayed');
      const touched = new Set<OutboxState>();
      for (const id of ids) {
        const ref = outboxRefs.get(id);
        const state = ref && outboxes.get(ref.stream);
        if (!ref || !state) continue; // not handed out by this log object (or already passed): nothing to do
        state.relayed.add(ref.key);
        touched.add(state);
      }
      for (const state of touched) {
        advance(state);
        try {
          await persistCursor(state);
        } catch (error) {
          throw fail(error, `record the outbox cursor of ${state.stream}`);
        }
      }
    },

    async acquireWriter(stream, { wait, signal }) {
      assertOpen();
      assertWritable('become the writer');
      checkEsdbStream(stream);
      const name = writerOf(stream);
      const stop = signal ? AbortSignal.any([signal, closing.signal]) : closing.signal;
      const me: Holder = { id: randomUUID(), pid: process.pid, host: hostname() };
      /** The last lock revision seen, and when (this process's clock): no heartbeat for the lease timeout → stale. */
      let seen: { revision: bigint | undefined; at: number } | undefined;
      for (;;) {
        stop.throwIfAborted();
        let lock: LockState;
        try {
          lock = await readLock(name);
        } catch (error) {
          if (!wait || !isTransient(error)) throw fail(error, `read the writer lease ${name}`);
          await sleep(lockPollMs, stop);
          continue;
        }
        stop.throwIfAborted();
        const now = Date.now();
        if (!seen || seen.revision !== lock.revision) seen = { revision: lock.revision, at: now };
        // Ours already: a claim of ours that failed on the way back landed after all.
        if (lock.revision !== undefined && lock.data?.holder.id === me.id && lock.type !== T.release) {
          const lease = makeLease(stream, name, me, lock.data.since, lock.revision);
          outboxState(stream);
          return lease;
        }
        const free = lock.revision === undefined || lock.type === T.release || !lock.data
          || now - (lock.created ?? 0) >= timeoutOf(lock) || now - seen.at >= timeoutOf(lock);
        if (free) {
          const since = Date.now();
          const claim = jsonEvent({ id: randomUUID(), type: T.claim, data: { holder: me, since, leaseTimeoutMs } as unknown as JSONType });
          let claimed: bigint | undefined;
          try {
            claimed = await appendWithRetries(name, [claim], lock.revision === undefined ? NO_STREAM : lock.revision);
          } catch (error) {
            // Another process claimed first (or ours landed and its answer was lost: seen as ours above).
            if (!isWrongExpectedVersion(error) && !(wait && isTransient(error))) throw fail(error, `claim the writer lease ${name}`);
            if (!wait) throw new WriterBusyError(stream, describeHolder(name, await readLock(name).catch(() => lock)));
          }
          if (claimed !== undefined) {
            if (stop.aborted) {
              // Aborted (or the log closed) while claiming: give the lease back at once.
              await client.appendToStream(name, jsonEvent({ id: randomUUID(), type: T.release, data: { holder: me } as unknown as JSONType }), { expectedRevision: claimed })
                .catch(() => undefined);
              stop.throwIfAborted();
            }
            const lease = makeLease(stream, name, me, since, claimed);
            outboxState(stream);
            return lease;
          }
        } else if (!wait) {
          throw new WriterBusyError(stream, describeHolder(name, lock));
        }
        await sleep(lockPollMs, stop);
      }
    },

    close() {
      closingDone ??= (async () => {
        closing.abort(new Error(`${where} was closed while waiting to become the writer`));
        await Promise.all([...subscriptions].map((s) => s.close()));
        // Held leases are given back (a standby takes over at once) and their holders told.
        await Promise.all([...leases].map((l) => l.closeHeld()));
        closed = true;
        await client.dispose();
      })();
      return closingDone;
    },
  };
  return log;

  /** The port's stream check, plus the names this log keeps: system streams and its side streams. */
  function checkEsdbStream(stream: string): void {
    checkStream(stream);
    if (stream.startsWith('$')) throw new TypeError(`stream ${stream}: names starting with $ are EventStoreDB system streams`);
    const suffix = SIDE_SUFFIXES.find((s) => stream.endsWith(s));
    if (suffix) throw new TypeError(`stream ${stream}: names ending with ${suffix} are kept for the side streams of ${where}`);
  }
}

// --- helpers --------------------------------------------------------------------------------------

/** A UUID (v5 layout) from SHA-1 of the stream, the version and the event JSON. */
export function eventId(stream: string, version: number, json: string): string {
  const hash = createHash('sha1').update(ID_NAMESPACE).update(stream).update('\u0000').update(String(version)).update('\u0000').update(json).digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function storeMessage(m: OutboxMessage): StoredMessage {
  return {
    topic: m.topic,
    key: m.key,
    ...(typeof m.value === 'string' ? { value: m.value } : { value64: Buffer.from(m.value).toString('base64') }),
    ...(m.headers ? { headers: { ...m.headers } } : {}),
  };
}

function loadMessage(m: StoredMessage): OutboxMessage {
  return {
    topic: m.topic,
    key: m.key,
    value: m.value64 !== undefined ? Buffer.from(m.value64, 'base64') : m.value ?? '',
    ...(m.headers ? { headers: m.headers } : {}),
  };
}

function parseManifest(data: unknown, name: string): { version: number; snapshot: string; chunks: number; sha256: string } {
  const m = data as { version?: unknown; snapshot?: unknown; chunks?: unknown; sha256?: unknown };
  if (!Number.isSafeInteger(m?.version) || typeof m.snapshot !== 'string' || !Number.isSafeInteger(m.chunks) || (m.chunks as number) < 1 || typeof m.sha256 !== 'string') {
    throw new EsdbLogError(`${name} holds a snapshot manifest this build cannot read`, false);
  }
  return { version: m.version as number, snapshot: m.snapshot, chunks: m.chunks as number, sha256: m.sha256 };
}

function parseLockData(data: unknown): LockData | undefined {
  const d = data as Partial<LockData> | undefined;
  const h = d?.holder;
  if (!h || typeof h.id !== 'string' || typeof h.pid !== 'number' || typeof h.host !== 'string') return undefined;
  return {
    holder: h,
    since: typeof d.since === 'number' ? d.since : 0,
    leaseTimeoutMs: typeof d.leaseTimeoutMs === 'number' && d.leaseTimeoutMs > 0 ? d.leaseTimeoutMs : 10_000,
  };
}

/** The stream's version a WrongExpectedVersionError reports, if it does. */
function actualVersionOf(error: unknown): number | undefined {
  const actual = (error as { actualVersion?: unknown }).actualVersion;
  if (actual === NO_STREAM) return 0;
  if (typeof actual === 'bigint') return Math.max(0, Number(actual) + 1);
  return undefined;
}

function isWrongExpectedVersion(error: unknown): boolean {
  return error instanceof WrongExpectedVersionError || (error as { type?: unknown })?.type === ErrorType.WRONG_EXPECTED_VERSION;
}

function isStreamNotFound(error: unknown): boolean {
  return error instanceof StreamNotFoundError || (error as { type?: unknown })?.type === ErrorType.STREAM_NOT_FOUND;
}

/** Failures after which the same request may succeed (gRPC UNAVAILABLE 14, DEADLINE_EXCEEDED 4). */
function isTransient(error: unknown): boolean {
  const e = error as { type?: unknown; code?: unknown } | undefined;
  return e?.type === ErrorType.UNAVAILABLE || e?.type === ErrorType.DEADLINE_EXCEEDED || e?.type === ErrorType.TIMEOUT
    || e?.type === ErrorType.NOT_LEADER || e?.code === 14 || e?.code === 4;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
