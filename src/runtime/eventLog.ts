import type { DispatchEvent } from '../domain/events.js';

/** An event as read back from a log: its stream version (1-based) and global position. */
export interface StoredEvent {
  /** 1-based index of the event in its stream. */
  version: number;
  /** Position in the whole log (monotonic, adapter-defined, unique). */
  position: number;
  event: DispatchEvent;
}

/** A saved dispatcher state, valid at stream version `version`. `data` is opaque to the log. */
export interface Snapshot {
  version: number;
  data: string;
}

/** Held by the one writer of a stream; while held, no other process can become the writer. */
export interface WriterLease {
  release(): Promise<void>;
  /**
   * Called if the lease is lost while held (e.g. a Kafka rebalance gave the shard to another
   * instance): the holder must stop writing. Backends whose lease cannot be lost never call it.
   */
  onLost?(listener: (reason: Error) => void): void;
}

/** A message to publish together with a commit (an assignment to an agent's topic, …). */
export interface OutboxMessage {
  topic: string;
  key: string;
  /** Bytes are kept as they are (a dead-lettered record's original value may not be UTF-8). */
  value: string | Buffer;
  headers?: Record<string, string>;
}

/** How far an input topic has been consumed; committed with the facts that input produced. */
export interface InputOffset {
  groupId: string;
  topic: string;
  partition: number;
  /** The next offset to consume. */
  offset: string;
}

/** What else an append commits, atomically where the backend can. */
export interface AppendExtras {
  /**
   * Messages to publish once the events are durable. Kafka log: produced in the same transaction
   * (exactly once). Other logs: stored in an outbox in the same commit and relayed after (at least once).
   */
  outbox?: readonly OutboxMessage[];
  /** Kafka log: consumer offsets committed in the same transaction. Other logs ignore them. */
  inputs?: readonly InputOffset[];
}

/** A stored outbox message waiting to be relayed. */
export interface PendingOutbox extends OutboxMessage {
  id: number;
}

export interface Subscription {
  close(): Promise<void>;
}

/**
 * The durable log port. Every backend (SQLite, Kafka, EventStoreDB) implements it and passes
 * `test/contract/eventLog.contract.ts`.
 *
 * Versions: a stream's version is the number of events in it (0 when empty or absent).
 */
export interface EventLog {
  /** Backend name, for logs and `/healthz`. */
  readonly kind: string;
  /**
   * Append `events` if the stream is at `expectedVersion`, durably (the promise resolves only
   * once they survive a crash). Returns the new version.
   * @throws ConcurrencyError when the stream is at another version; nothing is written.
   */
  append(stream: string, events: readonly DispatchEvent[], expectedVersion: number, extras?: AppendExtras): Promise<number>;
  /**
   * Whether `extras.outbox` and `extras.inputs` are committed in the append's own transaction
   * (true for Kafka). When false, outbox messages are stored and relayed by {@link readOutbox}.
   */
  readonly transactionalOutbox: boolean;
  /** Outbox messages not yet relayed, oldest first (logs without a transactional outbox). */
  readOutbox?(limit: number): Promise<PendingOutbox[]>;
  /** Mark outbox messages relayed. */
  markRelayed?(ids: readonly number[]): Promise<void>;
  /** Events of `stream` with version > `afterVersion` (default 0), in order. */
  read(stream: string, afterVersion?: number): AsyncIterable<StoredEvent>;
  /** The current version of `stream`. */
  version(stream: string): Promise<number>;
  /**
   * Call `onEvents` with every event of `stream` after `afterVersion`, then with new ones as they
   * are appended (by this process or another), in order, without gaps.
   */
  subscribe(stream: string, afterVersion: number, onEvents: (events: StoredEvent[]) => void | Promise<void>): Subscription;
  /** Events about one task, in order (the adapter may index them; otherwise it scans). */
  readTask?(stream: string, taskId: string): Promise<StoredEvent[]>;
  saveSnapshot(stream: string, snapshot: Snapshot): Promise<void>;
  loadSnapshot(stream: string): Promise<Snapshot | undefined>;
  /**
   * Become the single writer of `stream`. With `wait: false` throws {@link WriterBusyError} when
   * another process holds it; with `wait: true` resolves once the holder is gone (standby).
   */
  acquireWriter(stream: string, options: { wait: boolean; signal?: AbortSignal }): Promise<WriterLease>;
  close(): Promise<void>;
}

/** The stream was not at the expected version: another writer appended. Not retriable by the loser. */
export class ConcurrencyError extends Error {
  override readonly name = 'ConcurrencyError';
  readonly retriable = false;
  constructor(readonly stream: string, readonly expected: number, readonly actual: number) {
    super(`stream ${stream} is at version ${actual}, expected ${expected}: another writer appended`);
  }
}

/** Another process is the writer of this stream. */
export class WriterBusyError extends Error {
  override readonly name = 'WriterBusyError';
  readonly retriable = true;
  constructor(readonly stream: string, detail: string) {
    super(`another dispatcher is the writer of ${stream} (${detail})`);
  }
}

/** Argument checks every adapter's `append` makes before touching its store. */
export function checkAppendArgs(stream: string, expectedVersion: number): void {
  checkStream(stream);
  if (!Number.isSafeInteger(expectedVersion) || expectedVersion < 0) {
    throw new RangeError(`expectedVersion must be a non-negative integer, got ${expectedVersion}`);
  }
}

/** Argument checks every adapter's `saveSnapshot` makes (the stream itself is checked by the adapter). */
export function checkSnapshotVersion(snapshot: Snapshot): void {
  if (!Number.isSafeInteger(snapshot.version) || snapshot.version < 0) {
    throw new RangeError(`snapshot version must be a non-negative integer, got ${snapshot.version}`);
  }
}

export function checkStream(stream: string): void {
  if (typeof stream !== 'string' || stream.length === 0) throw new TypeError('stream must be a non-empty string');
}
