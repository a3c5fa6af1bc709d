import { hostname } from 'node:os';
import kafkajs, {
  type Admin,
  type Consumer,
  type Kafka,
  type Message,
  type PartitionAssigner,
  type Producer,
  type RecordMetadata,
} from 'kafkajs';
import { agentIdOf, taskIdOf, type DispatchEvent } from '../../domain/events.js';
import {
  ConcurrencyError,
  WriterBusyError,
  checkAppendArgs,
  checkSnapshotVersion,
  checkStream,
  type AppendExtras,
  type EventLog,
  type InputOffset,
  type OutboxMessage,
  type Snapshot,
  type StoredEvent,
  type Subscription,
  type WriterLease,
} from '../../runtime/eventLog.js';
import { createKafka, DEFAULT_PREFIX, topicNames } from './topics.js';
import { ASSIGNMENT_MAX_MESSAGE_BYTES, chunkTopicMessages, ensureTopicsWith, type TopicLogger } from './ensureTopics.js';
import { trackJoins } from './consumerJoins.js';

// kafkajs is CommonJS: Node's ESM loader finds only some of its exports by name.
const { AssignerProtocol, CompressionTypes, ConfigResourceTypes, Partitioners } = kafkajs;

/** Options of {@link getKafkaEventLog}. */
export interface KafkaEventLogOptions {
  /** Bootstrap brokers, `host:port`. */
  brokers: string[];
  /** Prefix of every topic, group and transactional.id (see topics.ts). Default `switchyard`. */
  prefix?: string;
  /** kafkajs client id. Default `switchyard-<host>-<pid>`. */
  clientId?: string;
  /**
   * Read and follow only, beside a running writer (`replay`, `verify`): `append`, `saveSnapshot`
   * and `acquireWriter` throw. Reads never fence the writer; a first append would. Default `false`.
   */
  readonly?: boolean;
  /** How long a subscription's fetch waits at the end of the log for new events, in ms. Default `300`. */
  pollWaitMs?: number;
  /** How often a subscription to a stream that has no topic yet looks for it, in ms. Default `200`. */
  topicPollMs?: number;
  /** Most events per `onEvents` call. Default `5000`. */
  readPageSize?: number;
  /** Bytes asked for per fetch by `read` and `subscribe`. Default 8 MiB. */
  fetchMaxBytes?: number;
  /** Broker-side limit of one open append transaction, in ms. Default `30000`. */
  transactionTimeoutMs?: number;
  /** Writer election: consumer group session timeout, in ms. Default `6000` (the broker's minimum). */
  sessionTimeoutMs?: number;
  /** Writer election: heartbeat interval, in ms. Default `1000`. */
  heartbeatIntervalMs?: number;
  /** Writer election: how long a rebalance waits for members to rejoin, in ms. Default `6000`. */
  rebalanceTimeoutMs?: number;
  /**
   * `acquireWriter({ wait: false })`: give up with WriterBusyError after this long without an
   * answer from the group, in ms. Default: the session timeout plus the rebalance timeout plus
   * 3 s, so that right after a holder died (its session not yet expired, the join waiting for it
   * to rejoin) a restarted instance still gets the stream rather than standing by and joining again.
   */
  busyTimeoutMs?: number;
  /**
   * Called when a subscription stops because its `onEvents` threw or the log could not be read
   * (a non-retriable error). Default: rethrow outside any promise, so the failure is never silent.
   */
  onSubscriptionError?: (error: unknown, stream: string) => void;
  /** For tests: called inside each append's transaction, after its sends, before the commit. */
  beforeCommit?: (stream: string) => Promise<void> | void;
}

/** A broker or client failure other than a lost race; `retriable` says whether trying again may help. */
export class KafkaLogError extends Error {
  override readonly name = 'KafkaLogError';
  constructor(message: string, readonly retriable: boolean, options?: { cause?: unknown }) {
    super(message, options);
  }
}

const MiB = 1024 * 1024;
/** The stream topics' max.message.bytes: the largest single event (appends are sent in smaller chunks). */
const STREAM_MAX_MESSAGE_BYTES = 8 * MiB;
/** Events per produce request are cut at about this many bytes. */
const APPEND_CHUNK_BYTES = 1 * MiB;
/** The snapshot topic's max.message.bytes (of the gzipped batch), and its segment size (must hold one). */
const SNAPSHOT_MAX_MESSAGE_BYTES = 64 * MiB;
const SNAPSHOT_SEGMENT_BYTES = 128 * MiB;
const READ_COMMITTED = 1;
/** Anchors (version → offset) remembered per stream, to start reads near where they are asked to. */
const MAX_ANCHORS = 32;

/**
 * The event log on Kafka. Each stream is a one-partition topic with infinite retention; each
 * event is one message (value: the event JSON; key: its task or agent id; headers `version`, the
 * 1-based stream version, and `type`).
 *
 * Writes: one Kafka transaction per append, through a transactional producer whose
 * transactional.id is fixed per stream, so the newest writer's initTransactions fences every
 * older one (and completes their open transaction). The events, the outbox messages and the input
 * offsets of an append commit together or not at all. The version check needs no read: once this
 * object's producer is initialised and has read the tail, no one else can commit without fencing
 * it. A fenced writer stays fenced (its appends throw {@link ConcurrencyError}, even at the right
 * version, so that it cannot fence the new writer back) until `acquireWriter` makes it the writer
 * again; so does one whose lease was lost. An append resolves once its commit markers are written,
 * so every read_committed reader (another process too) sees what it wrote.
 *
 * Reads: read_committed fetches straight from the partition leader (no consumer group), up to the
 * last stable offset as of the start of the read; aborted transactions and transaction markers
 * are skipped. A read starts at the offset of a known version when it can (from this object's
 * appends and reads, or from the offset a snapshot records), so a restart reads the events after
 * the snapshot, not the whole history.
 *
 * Snapshots: the compacted topic `<prefix>.snapshots`, keyed by stream; value: the snapshot data
 * (gzipped); headers `version`, and `offset` + `offsetVersion` (where the log can be read from to
 * replay after it).
 *
 * Writer election: a consumer group per stream over a one-partition topic; the member holding the
 * partition is the writer (see {@link KafkaEventLogOptions.sessionTimeoutMs}).
 */
export function getKafkaEventLog(options: KafkaEventLogOptions): EventLog {
  const names = topicNames(options.prefix ?? DEFAULT_PREFIX);
  const clientId = options.clientId ?? `switchyard-${hostname()}-${process.pid}`;
  const kafka = createKafka(options.brokers, clientId);
  const pollWaitMs = options.pollWaitMs ?? 300;
  const topicPollMs = options.topicPollMs ?? 200;
  const pageSize = options.readPageSize ?? 5000;
  const fetchMaxBytes = options.fetchMaxBytes ?? 8 * MiB;
  const transactionTimeout = options.transactionTimeoutMs ?? 30_000;
  const sessionTimeout = options.sessionTimeoutMs ?? 6000;
  const heartbeatInterval = options.heartbeatIntervalMs ?? 1000;
  const rebalanceTimeout = options.rebalanceTimeoutMs ?? 6000;
  const busyTimeoutMs = options.busyTimeoutMs ?? sessionTimeout + rebalanceTimeout + 3000;
  const onSubscriptionError = options.onSubscriptionError ?? ((error: unknown) => {
    setImmediate(() => { throw error; });
  });
  const where = `kafka event log ${names.prefix}@${options.brokers.join(',')}`;

  let closed = false;
  const closing = new AbortController();
  const writers = new Map<string, StreamWriter>();
  const anchors = new Map<string, Anchor[]>();
  const wakers = new Map<string, Set<() => void>>();
  const subscriptions = new Set<Subscription>();
  const leases = new Set<HeldLease>();
  const knownTopics = new Set<string>();
  /** Clients being disconnected (election consumers given up or released, subscriptions closed): close() waits for them. */
  const disconnecting = new Set<Promise<void>>();
  /** Per stream, the offset just past the last event this object committed: its reads must get there. */
  const ownEnd = new Map<string, number>();

  const assertOpen = (): void => {
    if (closed) throw new Error(`${where} is closed`);
  };
  const assertWritable = (what: string): void => {
    if (options.readonly) throw new Error(`${where} is open read-only: cannot ${what}`);
  };

  // --- clients, made on first use ------------------------------------------------------------

  let adminPromise: Promise<Admin> | undefined;
  const admin = (): Promise<Admin> => {
    adminPromise ??= (async () => {
      const a = kafka.admin();
      await a.connect();
      return a;
    })();
    adminPromise.catch(() => { adminPromise = undefined; });
    return adminPromise;
  };
  let reader: Promise<PartitionReader> | undefined;
  const sharedReader = (): Promise<PartitionReader> => {
    reader ??= (async () => {
      const r = new PartitionReader(kafka, fetchMaxBytes);
      await r.connect();
      return r;
    })();
    reader.catch(() => { reader = undefined; });
    return reader;
  };
  let snapshotProducerPromise: Promise<Producer> | undefined;
  const snapshotProducer = (): Promise<Producer> => {
    snapshotProducerPromise ??= (async () => {
      // Not idempotent: the compacted topic then keeps no empty batches for producer state, and a
      // retried duplicate of a snapshot is harmless.
      const p = kafka.producer({ idempotent: false, allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner });
      await p.connect();
      return p;
    })();
    snapshotProducerPromise.catch(() => { snapshotProducerPromise = undefined; });
    return snapshotProducerPromise;
  };

  // --- topics -----------------------------------------------------------------------------------

  let replicationFactor: number | undefined;
  const ensureTopic = async (
    topic: string,
    configs: Record<string, string>,
    expect: { onePartition: boolean; check?: (existing: Record<string, string>) => string | undefined },
  ): Promise<void> => {
    if (knownTopics.has(topic)) return;
    const a = await admin();
    if (replicationFactor === undefined) {
      const cluster = await a.describeCluster();
      replicationFactor = Math.min(3, cluster.brokers.length);
    }
    const created = await a.createTopics({
      waitForLeaders: true,
      topics: [{
        topic,
        numPartitions: 1,
        replicationFactor,
        configEntries: Object.entries(configs).map(([name, value]) => ({ name, value })),
      }],
    });
    if (!created) {
      if (expect.onePartition) {
        const metadata = await a.fetchTopicMetadata({ topics: [topic] });
        const partitions = metadata.topics[0]?.partitions.length ?? 0;
        if (partitions !== 1) throw new KafkaLogError(`topic ${topic} exists with ${partitions} partitions; ${where} needs exactly 1`, false);
      }
      if (expect.check) {
        const described = await a.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: Object.keys(configs) }] });
        const existing = Object.fromEntries((described.resources[0]?.configEntries ?? []).map((e) => [e.configName, e.configValue]));
        const problem = expect.check(existing);
        if (problem) throw new KafkaLogError(`topic ${topic} exists but ${problem}`, false);
      }
    }
    knownTopics.add(topic);
  };
  const ensureStreamTopic = (topic: string): Promise<void> => ensureTopic(topic, {
    'retention.ms': '-1',
    'retention.bytes': '-1',
    'cleanup.policy': 'delete',
    'max.message.bytes': String(STREAM_MAX_MESSAGE_BYTES),
  }, {
    onePartition: true,
    check: (existing) => {
      if (existing['retention.ms'] !== '-1' || existing['retention.bytes'] !== '-1') {
        return `has retention.ms=${existing['retention.ms']} retention.bytes=${existing['retention.bytes']}: an event log must keep everything (-1, -1)`;
      }
      if (existing['cleanup.policy'] !== 'delete') return `has cleanup.policy=${existing['cleanup.policy']}: an event log must not be compacted`;
      return undefined;
    },
  });
  const ensureSnapshotTopic = (): Promise<void> => ensureTopic(names.snapshots, {
    'cleanup.policy': 'compact',
    'max.message.bytes': String(SNAPSHOT_MAX_MESSAGE_BYTES),
    'segment.bytes': String(SNAPSHOT_SEGMENT_BYTES),
    // Roll the active segment hourly, so older snapshots become compactable.
    'segment.ms': '3600000',
    'min.cleanable.dirty.ratio': '0.1',
  }, { onePartition: false });
  /** Assignment topics, with room for large assignments (see ASSIGNMENT_MAX_MESSAGE_BYTES): a refused one would fail every append. */
  /**
   * Assignment topics, with room for large assignments (see ASSIGNMENT_MAX_MESSAGE_BYTES): a
   * refused one would fail every append. All of a batch's new topics at once (200 new agents
   * are one create, one describe and one alter, not 600 round trips inside the writer's commit).
   */
  const ensureOutboxTopics = async (topics: Iterable<string>): Promise<void> => {
    const fresh = [...new Set(topics)].filter((t) => !knownTopics.has(t));
    if (fresh.length === 0) return;
    await ensureTopicsWith(await admin(), fresh, { maxMessageBytes: ASSIGNMENT_MAX_MESSAGE_BYTES, logger: warnings });
    for (const t of fresh) knownTopics.add(t);
  };

  // --- anchors: where in a topic a version is -----------------------------------------------

  const remember = (stream: string, version: number, offset: number): void => {
    if (version <= 0) return;
    let list = anchors.get(stream);
    if (!list) anchors.set(stream, (list = []));
    const i = list.findIndex((a) => a.version >= version);
    if (i >= 0 && list[i].version === version) {
      list[i].offset = offset;
      return;
    }
    list.splice(i < 0 ? list.length : i, 0, { version, offset });
    // Keep the newest anchors (reads mostly start near the end: after a snapshot, at the tail).
    if (list.length > MAX_ANCHORS) list.shift();
  };
  /** The anchor to start reading from to get the events after `afterVersion`, if any. */
  const anchorFor = (stream: string, afterVersion: number): Anchor | undefined => {
    const list = anchors.get(stream);
    if (!list) return undefined;
    let best: Anchor | undefined;
    for (const a of list) if (a.version <= afterVersion + 1) best = a;
    return best;
  };
  const forgetAnchors = (stream: string): void => { anchors.delete(stream); };

  // --- reading ----------------------------------------------------------------------------------

  /**
   * The last stable offset of a stream's topic, once it covers what this object committed. An
   * append resolves when its commit is decided; the coordinator writes the commit markers (which
   * make the events visible to read_committed readers) just after, so a read right behind an
   * append waits the few milliseconds that takes.
   */
  const stableEnd = async (r: PartitionReader, stream: string, topic: string, waitMs = transactionTimeout): Promise<number> => {
    const need = ownEnd.get(stream) ?? 0;
    const deadline = Date.now() + waitMs;
    for (let pause = 1; ; pause = Math.min(100, pause * 2)) {
      const end = await r.lastStableOffset(topic);
      if (end >= need) return end;
      if (Date.now() > deadline) {
        throw new KafkaLogError(`${topic}: this log committed up to offset ${need - 1}, but the last stable offset is still ${end}`, true);
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  };

  /**
   * Committed events of `stream` with version > `afterVersion`, page by page, until the end of
   * the log as it was when the first fetch answered (or forever, with `follow`).
   */
  async function* pages(
    r: PartitionReader,
    stream: string,
    afterVersion: number,
    follow?: { waitMs: number; stopped: () => boolean; sleep: (ms: number) => Promise<void> },
  ): AsyncGenerator<StoredEvent[]> {
    const topic = names.log(stream);
    let leader = await r.leader(topic);
    while (!leader) {
      if (!follow) return;
      if (follow.stopped()) return;
      await follow.sleep(topicPollMs);
      if (follow.stopped()) return;
      leader = await r.leader(topic);
    }
    let anchor = anchorFor(stream, afterVersion);
    let offset = anchor?.offset ?? 0;
    let expect = anchor?.version;
    let last = afterVersion;
    const end = follow ? Number.MAX_SAFE_INTEGER : await stableEnd(r, stream, topic);
    if (offset >= end && !follow) return;
    let idle = 0;
    /** The next fetch, sent before the current page is handed out (reads, not subscriptions). */
    let prefetched: Promise<FetchResult> | undefined;
    for (;;) {
      if (follow?.stopped()) return;
      let fetched: FetchResult;
      try {
        fetched = await (prefetched ?? r.fetch(topic, offset, follow ? follow.waitMs : 0));
      } catch (error) {
        prefetched = undefined;
        if (error instanceof OffsetOutOfRange && anchor) {
          // A stale anchor (the topic was recreated): read from the start.
          forgetAnchors(stream);
          anchor = undefined;
          offset = 0;
          expect = undefined;
          continue;
        }
        throw error;
      }
      const page: StoredEvent[] = [];
      let restart = false;
      let seen: Anchor | undefined;
      for (const record of fetched.records) {
        const offsetOf = Number(record.offset);
        if (offsetOf >= end) break;
        const version = versionOf(record, topic);
        seen = { version, offset: offsetOf };
        if (expect !== undefined) {
          if (version !== expect) {
            restart = true;
            break;
          }
          expect = undefined;
        }
        if (version <= last) continue;
        if (version !== last + 1) {
          throw new KafkaLogError(`${topic}: expected version ${last + 1} at offset ${offsetOf}, found ${version}: the topic is not a well-formed event log`, false);
        }
        page.push({ version, position: offsetOf, event: parseValue(record, topic, version) });
        last = version;
      }
      prefetched = undefined;
      if (restart) {
        forgetAnchors(stream);
        anchor = undefined;
        offset = 0;
        expect = undefined;
        last = afterVersion;
        continue;
      }
      if (fetched.nextOffset > offset) {
        offset = fetched.nextOffset;
        idle = 0;
      } else if (!follow && ++idle > 20) {
        throw new KafkaLogError(`${topic}: no progress reading at offset ${offset} (last stable offset ${end})`, true);
      }
      if (!follow && offset < end) {
        // The broker reads and sends the next batch while the caller works through this one.
        prefetched = r.fetch(topic, offset, 0);
        prefetched.catch(() => undefined);
      }
      // Remembered even when skipped: a snapshot saved at a version read past can point here.
      if (seen) remember(stream, seen.version, seen.offset);
      for (let i = 0; i < page.length; i += pageSize) yield page.slice(i, i + pageSize);
      if (!follow && offset >= end) return;
    }
  }

  /** The version and offset of the last committed event of `topic` (0 when there is none). */
  const readTail = async (r: PartitionReader, stream: string): Promise<number> => {
    const topic = names.log(stream);
    if (!(await r.leader(topic))) return 0;
    const end = await stableEnd(r, stream, topic);
    // Transaction markers (one per append) and aborted records sit between events: look back a
    // few offsets first, then further.
    let hi = end;
    let window = 16;
    while (hi > 0) {
      const lo = Math.max(0, hi - window);
      let offset = lo;
      let found: RawRecord | undefined;
      while (offset < hi) {
        const fetched = await r.fetch(topic, offset, 0);
        for (const record of fetched.records) if (Number(record.offset) < hi) found = record;
        if (fetched.nextOffset <= offset) break;
        offset = fetched.nextOffset;
      }
      if (found) {
        const version = versionOf(found, topic);
        remember(stream, version, Number(found.offset));
        return version;
      }
      hi = lo;
      window *= 8;
    }
    return 0;
  };

  // --- writing ----------------------------------------------------------------------------------

  const writerOf = (stream: string): StreamWriter => {
    let w = writers.get(stream);
    if (!w) writers.set(stream, (w = { stream, topic: names.log(stream), mutex: new Mutex() }));
    return w;
  };

  const dropProducer = async (w: StreamWriter): Promise<void> => {
    const producer = w.producer;
    w.producer = undefined;
    w.version = undefined;
    if (producer) await producer.disconnect().catch(() => undefined);
  };

  /** Become the stream's producer: fences older ones, then reads the tail, which is now stable. */
  /**
   * Wait until no transaction on the stream's topic is undecided (the last stable offset has
   * reached the end of the log). Fencing the older writer does not wait for that: after a broker
   * restart in the middle of its commit, the older writer's last append was committed after the
   * new writer had read the tail, and both wrote the same version (found by the chaos campaign).
   * Only this writer may write now, so the wait ends once the older writer's commit or abort
   * markers are in.
   */
  const settled = async (r: PartitionReader, topic: string): Promise<void> => {
    if (!(await r.leader(topic))) return;
    const waitMs = transactionTimeout + 10_000;
    const deadline = Date.now() + waitMs;
    for (let pause = 5; ; pause = Math.min(200, pause * 2)) {
      const [stable, high] = await Promise.all([r.lastStableOffset(topic), r.highWatermark(topic)]);
      if (stable >= high) return;
      if (Date.now() > deadline) {
        // Past the transaction timeout, the coordinator would have aborted a transaction it knows
        // of: this one has lost its commit or abort marker (a hanging transaction; seen after a
        // single broker was SIGKILLed mid-commit and came back through an unclean election).
        // Reading on past it could re-decide what its events decided, so only an operator can
        // end it. README, Operations: "A hanging transaction on the Kafka log".
        throw new KafkaLogError(`${topic}: a transaction of an older writer is still undecided (last stable offset ${stable}, end ${high}) `
          + `${Math.round(waitMs / 1000)} s after it was fenced: it has probably lost its marker (a hanging transaction; `
          + `see kafka-transactions.sh find-hanging and the README's Operations section)`, true);
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  };

  const initWriter = async (w: StreamWriter): Promise<void> => {
    await ensureStreamTopic(w.topic);
    const producer = kafka.producer({
      transactionalId: names.writerTransactionalId(w.stream),
      idempotent: true,
      maxInFlightRequests: 1,
      transactionTimeout,
      allowAutoTopicCreation: false,
      createPartitioner: Partitioners.DefaultPartitioner,
      // A transaction begun right after a commit meets CONCURRENT_TRANSACTIONS until the
      // coordinator has written the markers (a few ms): retry soon, not after kafkajs's 300 ms.
      retry: { initialRetryTime: 10, maxRetryTime: 5000, retries: 12 },
    });
    try {
      await producer.connect();
      // initTransactions happens on the first transaction; an empty one sends nothing else.
      const tx = await producer.transaction();
      await tx.abort();
      const reader = await sharedReader();
      await settled(reader, w.topic);
      const version = await readTail(reader, w.stream);
      w.producer = producer;
      w.version = version;
    } catch (error) {
      await producer.disconnect().catch(() => undefined);
      throw translate(error, `cannot become the writer of ${w.stream}`);
    }
  };

  const fenced = async (w: StreamWriter, expected: number, reason: Error): Promise<ConcurrencyError> => {
    let actual = expected;
    try {
      actual = await readTail(await sharedReader(), w.stream);
    } catch {
      // The broker may be what failed; the caller learns of the lost race either way.
    }
    const error = new ConcurrencyError(w.stream, expected, actual);
    error.message += ` (this log object's writer was fenced: ${reason.message}; acquireWriter makes it the writer again)`;
    return error;
  };

  const wake = (stream: string): void => {
    for (const w of wakers.get(stream) ?? []) w();
  };

  const append = async (stream: string, events: readonly DispatchEvent[], expectedVersion: number, extras: AppendExtras | undefined): Promise<number> => {
    const w = writerOf(stream);
    return w.mutex.run(async () => {
      assertOpen();
      if (w.fenced) throw await fenced(w, expectedVersion, w.fenced);
      if (!w.producer) await initWriter(w);
      const producer = w.producer!;
      const known = w.version!;
      if (expectedVersion !== known) throw new ConcurrencyError(stream, expectedVersion, known);
      const outbox = extras?.outbox ?? [];
      const inputs = extras?.inputs ?? [];
      if (events.length === 0 && outbox.length === 0 && inputs.length === 0) return known;

      const chunks = toMessages(stream, events, expectedVersion);
      if (outbox.length > 0) await ensureOutboxTopics(outbox.map((m) => m.topic));
      let lastOffset: number | undefined;
      let committing = false;
      const tx = await producer.transaction();
      try {
        for (const chunk of chunks) {
          const sent = await tx.send({ topic: w.topic, acks: -1, messages: chunk });
          lastOffset = baseOffsetOf(sent, w.topic) + chunk.length - 1;
        }
        // In requests small enough that no record batch outgrows its topic's max.message.bytes.
        for (const topicMessages of outboxRequests(outbox)) await tx.sendBatch({ acks: -1, topicMessages });
        for (const [groupId, topics] of offsetsByGroup(inputs)) {
          await retryConcurrentTransactions(() => tx.sendOffsets({ consumerGroupId: groupId, topics }));
        }
        await options.beforeCommit?.(stream);
        committing = true;
        await tx.commit();
      } catch (error) {
        await tx.abort().catch(() => undefined);
        await dropProducer(w);
        if (isFencing(error)) {
          w.fenced = error as Error;
          throw await fenced(w, expectedVersion, error as Error);
        }
        throw translate(error, committing
          ? `the commit of an append to ${stream} failed; whether it took effect is unknown until the stream's version is read`
          : `append to ${stream} failed; nothing of it is visible`);
      }
      const version = expectedVersion + events.length;
      w.version = version;
      if (lastOffset !== undefined && !Number.isNaN(lastOffset)) {
        remember(stream, version, lastOffset);
        ownEnd.set(stream, lastOffset + 1);
        // The commit is decided and durable; the coordinator writes the markers that make it
        // visible to read_committed readers right after. Resolve once they are there, so that
        // any reader (another process too) sees what an append that resolved wrote.
        await stableEnd(await sharedReader(), stream, w.topic, 5000).catch(() => undefined);
      }
      if (events.length > 0) wake(stream);
      return version;
    });
  };

  // --- writer election --------------------------------------------------------------------------

  const acquireWriter = async (stream: string, wait: boolean, signal: AbortSignal | undefined): Promise<WriterLease> => {
    const stop = signal ? AbortSignal.any([signal, closing.signal]) : closing.signal;
    stop.throwIfAborted();
    const topic = names.leader(stream);
    await ensureTopic(topic, {}, { onePartition: true });
    stop.throwIfAborted();

    const me = { heldAs: undefined as string | undefined, since: Date.now(), gaveUp: false };
    const assigner: PartitionAssigner = () => ({
      name: 'switchyard-writer',
      version: 1,
      protocol: ({ topics }) => ({
        name: 'switchyard-writer',
        metadata: AssignerProtocol.MemberMetadata.encode({
          version: 1,
          topics,
          userData: Buffer.from(JSON.stringify({
            heldAs: me.heldAs ?? null, since: me.since, host: hostname(), pid: process.pid, ...(me.gaveUp ? { gaveUp: true } : {}),
          } satisfies Claim)),
        }),
      }),
      // Run by the group leader. Sticky: the member that holds the partition under its current
      // member id keeps it (a member that was expelled comes back with a new id, so its old claim
      // no longer counts); otherwise the longest-waiting member gets it. A member whose instance
      // gave up waiting (see `disconnect`) never gets it.
      assign: async ({ members, topics }) => {
        const claims = members.map((m) => ({ memberId: m.memberId, ...decodeClaim(m.memberMetadata) })).filter((c) => !c.gaveUp);
        const holding = claims.filter((c) => c.heldAs === c.memberId);
        const pool = holding.length > 0 ? holding : claims;
        pool.sort((a, b) => a.since - b.since || (a.memberId < b.memberId ? -1 : 1));
        const holder = pool[0]?.memberId;
        return members.map((m) => ({
          memberId: m.memberId,
          memberAssignment: AssignerProtocol.MemberAssignment.encode({
            version: 1,
            assignment: m.memberId === holder ? Object.fromEntries(topics.map((t) => [t, [0]])) : {},
            userData: Buffer.alloc(0),
          }),
        }));
      },
    });

    // joining: waiting for an assignment; fencing: assigned, making this the stream's producer;
    // held: the lease is handed out; done: released, lost or given up.
    let phase: 'joining' | 'fencing' | 'held' | 'done' = 'joining';
    const consumer: Consumer = kafka.consumer({
      groupId: topic,
      partitionAssigners: [assigner],
      sessionTimeout,
      heartbeatInterval,
      rebalanceTimeout,
      // The consumer heartbeats between fetches: short fetches keep heartbeats on time.
      maxWaitTimeInMs: Math.min(500, heartbeatInterval),
      allowAutoTopicCreation: false,
      retry: { restartOnFailure: async () => phase === 'joining' },
    });

    // Connected at once (below, after the listeners are on). A disconnect waits for the connection,
    // and for a join under way (see trackJoins): a member disconnected mid-join lives on unseen, and
    // the sticky assignment above would go on giving it the writer partition, so that no instance
    // became the writer (seen: minutes, after the writer and the standby were SIGKILLed together
    // and both restarts gave up waiting).
    let connecting: Promise<void> = Promise.resolve();
    const joins = trackJoins(consumer);
    const disconnect = (): Promise<void> => {
      const done = connecting.catch(() => undefined)
        .then(() => joins.idle(sessionTimeout + rebalanceTimeout + 60_000))
        .then(() => consumer.disconnect()).catch(() => undefined);
      disconnecting.add(done);
      return done.finally(() => disconnecting.delete(done));
    };

    return new Promise<WriterLease>((resolve, reject) => {
      let lease: HeldLease | undefined;
      let busyTimer: NodeJS.Timeout | undefined;
      let watchdog: NodeJS.Timeout | undefined;
      let lastContact = Date.now();
      const removers: (() => void)[] = [];

      const cleanup = (): void => {
        phase = 'done';
        me.gaveUp = true;
        if (busyTimer) clearTimeout(busyTimer);
        if (watchdog) clearInterval(watchdog);
        stop.removeEventListener('abort', onAbort);
        for (const remove of removers) remove();
      };
      /** Gives up before the lease is handed out. */
      const abandon = (error: unknown): void => {
        if (phase !== 'joining' && phase !== 'fencing') return;
        cleanup();
        void disconnect();
        reject(error);
      };
      const onAbort = (): void => {
        abandon(closing.signal.aborted
          ? new Error(`${where} was closed while waiting to become the writer of ${stream}`)
          : stop.reason);
      };
      stop.addEventListener('abort', onAbort, { once: true });

      const lost = (reason: Error): void => {
        if (phase === 'held') void lease?.lose(reason);
        else if (phase === 'fencing') abandon(new WriterBusyError(stream, `the writer partition moved on while this instance was fencing older writers: ${reason.message}`));
      };

      const won = async (memberId: string): Promise<void> => {
        me.heldAs = memberId;
        phase = 'fencing';
        if (busyTimer) clearTimeout(busyTimer);
        const w = writerOf(stream);
        try {
          // Fence every older writer now, before the caller reads the log: after this, the tail
          // is stable and no zombie commit can land behind the new writer's back.
          await w.mutex.run(async () => {
            await dropProducer(w);
            w.fenced = undefined;
            await initWriter(w);
          });
        } catch (error) {
          abandon(error);
          return;
        }
        if (phase !== 'fencing') {
          // Given up meanwhile (aborted, closed, or the partition moved on): not the writer.
          w.fenced ??= new Error(`gave up becoming the writer of ${stream}`);
          return;
        }
        phase = 'held';
        stop.removeEventListener('abort', onAbort);
        lease = new HeldLease(async () => {
          cleanup();
          leases.delete(lease!);
          await disconnect();
        }, (reason) => {
          // The holder must stop writing: enforce it for appends through this log object.
          writerOf(stream).fenced ??= reason;
        });
        leases.add(lease);
        // Without a heartbeat or a join for longer than a session plus a rebalance (a join may
        // wait that long for slow members), the coordinator has expired this member: the stream
        // is, or is about to be, another instance's. kafkajs itself may take far longer to give up.
        watchdog = setInterval(() => {
          const silent = Date.now() - lastContact;
          if (silent > sessionTimeout + rebalanceTimeout) {
            lost(new Error(`no heartbeat from the ${topic} group coordinator for ${silent} ms: the session has expired and another instance may be the writer`));
          }
        }, Math.max(250, Math.min(1000, heartbeatInterval)));
        watchdog.unref();
        resolve(lease);
      };

      removers.push(consumer.on(consumer.events.HEARTBEAT, () => { lastContact = Date.now(); }));
      // Another member joined or left: this one is about to rejoin, which may take a while.
      removers.push(consumer.on(consumer.events.REBALANCING, () => { lastContact = Date.now(); }));
      removers.push(consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
        lastContact = Date.now();
        const assigned = holdsPartition(payload.memberAssignment);
        if (phase === 'joining') {
          if (assigned) void won(payload.memberId);
          else if (!wait) void describeHolder(topic).then((detail) => abandon(new WriterBusyError(stream, detail)));
        } else if (!assigned || payload.memberId !== me.heldAs) {
          lost(new Error(assigned
            ? `this instance was expelled from consumer group ${topic} (its session expired) and rejoined: another instance may have written meanwhile`
            : `consumer group ${topic} gave the writer partition to another instance`));
        }
      }));
      removers.push(consumer.on(consumer.events.CRASH, ({ payload }) => {
        if (phase === 'joining' && !payload.restart) abandon(translate(payload.error, `cannot join consumer group ${topic}`));
        else if (phase !== 'joining') lost(new Error(`the member of consumer group ${topic} crashed: ${payload.error.message}`));
      }));

      if (!wait) {
        busyTimer = setTimeout(() => {
          abandon(new WriterBusyError(stream, `no assignment from consumer group ${topic} within ${busyTimeoutMs} ms`));
        }, busyTimeoutMs);
      }

      const holdsPartition = (assignment: Record<string, number[]>): boolean => (assignment[topic] ?? []).includes(0);

      connecting = (async () => {
        await consumer.connect();
        if (phase !== 'done') await consumer.subscribe({ topics: [topic] });
      })();
      connecting
        .then(async () => {
          if (phase === 'done') return;
          joins.start();
          await consumer.run({ eachMessage: async () => undefined });
        })
        .catch((error: unknown) => {
          // No join under way any more (kafkajs gave up on it without a CRASH event).
          joins.end();
          abandon(translate(error, `cannot join consumer group ${topic}`));
        });

    });
  };

  /** Who holds the writer partition of a leader group, for WriterBusyError. */
  const describeHolder = async (groupId: string): Promise<string> => {
    const fallback = `a member of consumer group ${groupId} holds its partition`;
    try {
      const { groups } = await (await admin()).describeGroups([groupId]);
      for (const member of groups[0]?.members ?? []) {
        const assignment = member.memberAssignment.length > 0 ? AssignerProtocol.MemberAssignment.decode(member.memberAssignment) : null;
        if (!(assignment?.assignment[groupId] ?? []).includes(0)) continue;
        const claim = decodeClaim(member.memberMetadata);
        return `held by pid ${claim.pid ?? '?'} on ${claim.host ?? member.clientHost} (client ${member.clientId}, member ${member.memberId} of consumer group ${groupId})`;
      }
    } catch {
      // The description is a courtesy.
    }
    return fallback;
  };

  // --- the port -----------------------------------------------------------------------------------

  const log: EventLog = {
    kind: 'kafka',
    transactionalOutbox: true,

    async append(stream, events, expectedVersion, extras) {
      assertOpen();
      assertWritable('append');
      checkAppendArgs(stream, expectedVersion);
      return append(stream, events, expectedVersion, extras);
    },

    read(stream, afterVersion = 0) {
      return {
        async *[Symbol.asyncIterator]() {
          assertOpen();
          checkStream(stream);
          const r = await sharedReader();
          for await (const page of pages(r, stream, afterVersion)) {
            for (const stored of page) yield stored;
            assertOpen();
          }
        },
      };
    },

    async version(stream) {
      assertOpen();
      checkStream(stream);
      return readTail(await sharedReader(), stream);
    },

    subscribe(stream, afterVersion, onEvents) {
      assertOpen();
      checkStream(stream);
      let stopped = false;
      let wakeUp: (() => void) | undefined;
      const waker = (): void => wakeUp?.();
      let set = wakers.get(stream);
      if (!set) wakers.set(stream, (set = new Set()));
      set.add(waker);
      // Its own connection: a fetch waiting at the end of the log holds the connection it is on.
      const r = new PartitionReader(kafka, fetchMaxBytes);
      const sleep = (ms: number): Promise<void> => new Promise((resolve) => {
        const timer = setTimeout(done, ms);
        function done(): void {
          clearTimeout(timer);
          wakeUp = undefined;
          resolve();
        }
        wakeUp = done;
      });
      const unregister = (): void => {
        stopped = true;
        wakeUp?.();
        const s = wakers.get(stream);
        s?.delete(waker);
        if (s?.size === 0) wakers.delete(stream);
        subscriptions.delete(subscription);
      };

      const run = async (): Promise<void> => {
        let delivered = afterVersion;
        let failures = 0;
        while (!stopped) {
          try {
            await r.connect();
            for await (const page of pages(r, stream, delivered, { waitMs: pollWaitMs, stopped: () => stopped, sleep })) {
              if (stopped) return;
              try {
                await onEvents(page);
              } catch (error) {
                throw new HandlerError(error);
              }
              delivered = page[page.length - 1].version;
              failures = 0;
            }
          } catch (error) {
            if (stopped) return;
            if (error instanceof HandlerError) throw error.error;
            if (!isRetriable(error)) throw error;
            // A broker restart, a leader change: try again, from the last delivered version.
            failures++;
            await sleep(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
          }
        }
      };

      const subscription: Subscription = {
        // Does not wait for an onEvents call in progress, so a handler may close its own
        // subscription; no call starts after this. Nor for the fetch waiting at the end of the
        // log (up to pollWaitMs) to let its connection go: close() of the log waits for that.
        async close() {
          unregister();
          const done = r.disconnect();
          disconnecting.add(done);
          void done.finally(() => disconnecting.delete(done));
        },
      };
      subscriptions.add(subscription);
      void run().then(
        () => r.disconnect(),
        (error: unknown) => {
          const wasStopped = stopped;
          unregister();
          void r.disconnect();
          if (!wasStopped) onSubscriptionError(error, stream);
        },
      );
      return subscription;
    },

    async saveSnapshot(stream, snapshot) {
      assertOpen();
      assertWritable('save a snapshot');
      checkStream(stream);
      checkSnapshotVersion(snapshot);
      if (typeof snapshot.data !== 'string') throw new TypeError('snapshot data must be a string');
      await ensureSnapshotTopic();
      // Where the log can be read from to replay after the snapshot: the offset of the event at
      // the snapshot's version if this object knows it (a writer knows its last append's), else
      // of the nearest event before it that it knows.
      const anchor = anchorFor(stream, snapshot.version - 1);
      const headers: Record<string, string> = { version: String(snapshot.version) };
      if (anchor) {
        headers.offset = String(anchor.offset);
        headers.offsetVersion = String(anchor.version);
      }
      try {
        await (await snapshotProducer()).send({
          topic: names.snapshots,
          acks: -1,
          compression: CompressionTypes.GZIP,
          messages: [{ key: stream, value: snapshot.data, headers }],
        });
      } catch (error) {
        throw translate(error, `cannot save the snapshot of ${stream}`);
      }
    },

    async loadSnapshot(stream): Promise<Snapshot | undefined> {
      assertOpen();
      checkStream(stream);
      const r = await sharedReader();
      const topic = names.snapshots;
      if (!(await r.leader(topic))) return undefined;
      const end = await r.lastStableOffset(topic);
      const start = await r.logStartOffset(topic);
      // The latest snapshot of a stream is usually among the last few messages: look back from
      // the end in widening windows (compaction keeps the topic to about one message per stream).
      let hi = end;
      let window = 8;
      while (hi > start) {
        const lo = Math.max(start, hi - window);
        let found: RawRecord | undefined;
        let offset = lo;
        while (offset < hi) {
          const fetched = await r.fetch(topic, offset, 0, SNAPSHOT_MAX_MESSAGE_BYTES);
          for (const record of fetched.records) {
            if (Number(record.offset) < hi && record.key?.toString('utf8') === stream) found = record;
          }
          if (fetched.nextOffset <= offset) break;
          offset = fetched.nextOffset;
        }
        if (found) {
          const version = Number(header(found, 'version'));
          if (!Number.isSafeInteger(version)) throw new KafkaLogError(`${topic} offset ${found.offset}: snapshot of ${stream} has no valid version header`, false);
          const offset = Number(header(found, 'offset') ?? NaN);
          const offsetVersion = Number(header(found, 'offsetVersion') ?? version);
          if (Number.isSafeInteger(offset) && Number.isSafeInteger(offsetVersion)) remember(stream, offsetVersion, offset);
          return { version, data: found.value?.toString('utf8') ?? '' };
        }
        hi = lo;
        window *= 8;
      }
      return undefined;
    },

    async acquireWriter(stream, { wait, signal }) {
      assertOpen();
      assertWritable('become the writer');
      checkStream(stream);
      return acquireWriter(stream, wait, signal);
    },

    async close() {
      if (closed) return;
      closed = true;
      closing.abort(new Error(`${where} was closed while waiting to become the writer`));
      const reason = new Error(`${where} was closed`);
      await Promise.all([...leases].map(async (lease) => {
        await lease.lose(reason);
        await lease.release();
      }));
      await Promise.all([...subscriptions].map((s) => s.close()));
      await Promise.all([...disconnecting]);
      await Promise.all([...writers.values()].map((w) => w.mutex.run(() => dropProducer(w)).catch(() => undefined)));
      const disconnects: Promise<unknown>[] = [];
      if (snapshotProducerPromise) disconnects.push(snapshotProducerPromise.then((p) => p.disconnect()));
      if (reader) disconnects.push(reader.then((r) => r.disconnect()));
      if (adminPromise) disconnects.push(adminPromise.then((a) => a.disconnect()));
      await Promise.allSettled(disconnects);
    },
  };
  return log;
}

// --- the writer lease -----------------------------------------------------------------------------

class HeldLease implements WriterLease {
  private released = false;
  private lost: Error | undefined;
  private readonly listeners = new Set<(reason: Error) => void>();

  constructor(
    private readonly leave: () => Promise<void>,
    private readonly onLostInternal: (reason: Error) => void,
  ) {}

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.leave();
  }

  onLost(listener: (reason: Error) => void): void {
    if (this.lost) {
      const reason = this.lost;
      queueMicrotask(() => listener(reason));
    } else {
      this.listeners.add(listener);
    }
  }

  /** The lease is gone: tell the listeners once, stop writing, and leave the group. */
  async lose(reason: Error): Promise<void> {
    if (this.lost || this.released) return;
    this.lost = reason;
    this.onLostInternal(reason);
    for (const listener of this.listeners) {
      try {
        listener(reason);
      } catch (error) {
        setImmediate(() => { throw error; });
      }
    }
    this.listeners.clear();
    await this.release();
  }
}

/** What a member of a writer election group says of itself (its member metadata's user data). */
export interface Claim {
  heldAs: string | null;
  since: number;
  host?: string;
  pid?: number;
  /** Its instance no longer waits for the partition: a member about to leave. */
  gaveUp?: boolean;
}

export function decodeClaim(metadata: Buffer): Claim {
  try {
    const { userData } = AssignerProtocol.MemberMetadata.decode(metadata) ?? {};
    const claim = JSON.parse(userData?.toString('utf8') || '{}') as Partial<Claim>;
    return { heldAs: claim.heldAs ?? null, since: Number(claim.since) || Number.MAX_SAFE_INTEGER, host: claim.host, pid: claim.pid, gaveUp: claim.gaveUp === true };
  } catch {
    return { heldAs: null, since: Number.MAX_SAFE_INTEGER };
  }
}

// --- writing helpers ----------------------------------------------------------------------------

interface StreamWriter {
  readonly stream: string;
  readonly topic: string;
  readonly mutex: Mutex;
  /** Initialised transactional producer (its initTransactions done), while this object is the writer. */
  producer?: Producer;
  /** The stream's committed version, valid while `producer` is set (no one else can commit then). */
  version?: number;
  /** Set when fenced by another writer or when the lease was lost; cleared by acquireWriter. */
  fenced?: Error;
}

interface Anchor {
  version: number;
  offset: number;
}

class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

function toMessages(stream: string, events: readonly DispatchEvent[], expectedVersion: number): Message[][] {
  const chunks: Message[][] = [];
  let chunk: Message[] = [];
  let bytes = 0;
  let version = expectedVersion;
  for (const event of events) {
    version += 1;
    if (typeof event?.type !== 'string' || typeof event.at !== 'number') {
      throw new TypeError(`event ${version - expectedVersion} of the batch for ${stream} has no string type or numeric at`);
    }
    const value = JSON.stringify(event);
    const key = taskIdOf(event) ?? agentIdOf(event) ?? null;
    const size = Buffer.byteLength(value) + (key?.length ?? 0) + 64;
    if (size > STREAM_MAX_MESSAGE_BYTES) {
      throw new KafkaLogError(`event ${version - expectedVersion} of the batch for ${stream} is ${size} bytes; the log takes at most ${STREAM_MAX_MESSAGE_BYTES}`, false);
    }
    if (chunk.length > 0 && bytes + size > APPEND_CHUNK_BYTES) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push({ partition: 0, key, value, headers: { version: String(version), type: event.type } });
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

function baseOffsetOf(sent: RecordMetadata[], topic: string): number {
  const meta = sent.find((m) => m.topicName === topic && m.partition === 0);
  return Number(meta?.baseOffset ?? NaN);
}

/** This adapter has no logger: what topic set-up reports goes to process warnings. */
const warnings: TopicLogger = {
  info: () => undefined,
  warn: (detail, message) => { process.emitWarning(`${message} ${JSON.stringify(detail, (k, v: unknown) => (v instanceof Error ? v.message : v))}`); },
};

function outboxRequests(outbox: readonly OutboxMessage[]): { topic: string; messages: Message[] }[][] {
  return chunkTopicMessages(outbox.map((m) => ({ topic: m.topic, message: { key: m.key, value: m.value, ...(m.headers ? { headers: { ...m.headers } } : {}) } })));
}

function offsetsByGroup(inputs: readonly InputOffset[]): Map<string, { topic: string; partitions: { partition: number; offset: string }[] }[]> {
  const groups = new Map<string, Map<string, { partition: number; offset: string }[]>>();
  for (const input of inputs) {
    let topics = groups.get(input.groupId);
    if (!topics) groups.set(input.groupId, (topics = new Map()));
    let partitions = topics.get(input.topic);
    if (!partitions) topics.set(input.topic, (partitions = []));
    const existing = partitions.find((p) => p.partition === input.partition);
    if (existing) existing.offset = input.offset;
    else partitions.push({ partition: input.partition, offset: input.offset });
  }
  return new Map([...groups].map(([groupId, topics]) => [groupId, [...topics].map(([topic, partitions]) => ({ topic, partitions }))]));
}

// --- errors ---------------------------------------------------------------------------------------

interface KafkaishError {
  name?: string;
  type?: string;
  code?: number;
  message?: string;
  retriable?: boolean;
  originalError?: unknown;
  cause?: unknown;
}

/** The error and the errors it wraps (kafkajs wraps in originalError and cause). */
function chain(error: unknown): KafkaishError[] {
  const out: KafkaishError[] = [];
  let e: unknown = error;
  while (e && typeof e === 'object' && out.length < 10) {
    const k = e as KafkaishError;
    out.push(k);
    e = k.originalError ?? k.cause;
  }
  return out;
}

/** Fencing error types and codes: INVALID_PRODUCER_EPOCH 47, INVALID_TXN_STATE 48, INVALID_PRODUCER_ID_MAPPING 49, PRODUCER_FENCED 90. */
const FENCING_TYPES = new Set(['INVALID_PRODUCER_EPOCH', 'INVALID_TXN_STATE', 'INVALID_PRODUCER_ID_MAPPING', 'PRODUCER_FENCED']);
const FENCING_CODES = new Set([47, 48, 49, 90]);

/**
 * Run a transaction step again while the coordinator answers CONCURRENT_TRANSACTIONS (51): the
 * previous transaction's commit is decided, but its markers are still being written. kafkajs
 * retries that answer for the AddPartitionsToTxn of a send, but not for the AddOffsetsToTxn of
 * sendOffsets; an append that carries only input offsets (agent heartbeats that decide nothing)
 * begins with it, so right after a commit it failed, and the dispatcher stopped. AddOffsetsToTxn
 * is idempotent, and a failed one leaves the transaction as it was.
 */
export async function retryConcurrentTransactions<T>(step: () => Promise<T>, attempts = 30): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      const concurrent = chain(error).some((e) => e.type === 'CONCURRENT_TRANSACTIONS' || e.code === 51);
      if (!concurrent || attempt >= attempts) throw error;
      // 10 ms, doubling to at most 500 ms: about 10 s in all, the markers take milliseconds.
      await new Promise((resolve) => setTimeout(resolve, Math.min(500, 10 * 2 ** (attempt - 1))));
    }
  }
}

function isFencing(error: unknown): boolean {
  return chain(error).some((e) => (e.type !== undefined && FENCING_TYPES.has(e.type)) || (e.code !== undefined && FENCING_CODES.has(e.code)));
}

function isRetriable(error: unknown): boolean {
  if (error instanceof KafkaLogError) return error.retriable;
  const links = chain(error);
  if (links.some((e) => e.retriable === false && e.name !== 'KafkaJSNumberOfRetriesExceeded')) return false;
  return links.some((e) => e.retriable === true || e.name === 'KafkaJSNumberOfRetriesExceeded' || e.name === 'KafkaJSConnectionError'
    || e.name === 'KafkaJSRequestTimeoutError' || e.name === 'KafkaJSConnectionClosedError' || e.name === 'KafkaJSBrokerNotFound');
}

function translate(error: unknown, what: string): Error {
  if (error instanceof ConcurrencyError || error instanceof KafkaLogError || error instanceof WriterBusyError) return error;
  if (error instanceof TypeError || error instanceof RangeError) return error;
  const retriable = isRetriable(error);
  const message = (error as Error)?.message ?? String(error);
  return new KafkaLogError(`${what}: ${message} (${retriable ? 'retriable: the broker may recover' : 'not retriable'})`, retriable, { cause: error });
}

class HandlerError extends Error {
  constructor(readonly error: unknown) {
    super('onEvents threw');
  }
}


// --- reading straight from partitions ---------------------------------------------------------

/*
 * kafkajs reads only through consumer groups (a join per reader, seconds of rebalancing, and
 * group state left on the broker). The log reads one known partition from a known offset, so it
 * uses the kafkajs cluster underneath instead: the same connections, retries and protocol
 * decoding, without a group. These types describe the slice of that (internal, kafkajs 2.x)
 * surface used here.
 */

interface RawRecord {
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer | Buffer[] | undefined>;
  isControlRecord?: boolean;
  batchContext: { firstOffset: string; lastOffsetDelta: number; producerId: string; inTransaction: boolean; isControlBatch: boolean };
}

interface RawPartitionData {
  partition: number;
  errorCode: number;
  highWatermark: string;
  lastStableOffset: string;
  lastStartOffset: string;
  abortedTransactions?: { producerId: string; firstOffset: string }[];
  messages: RawRecord[];
}

interface RawBroker {
  fetch(request: {
    replicaId: number;
    isolationLevel: number;
    maxWaitTime: number;
    minBytes: number;
    maxBytes: number;
    topics: { topic: string; partitions: { partition: number; fetchOffset: string; maxBytes: number }[] }[];
  }): Promise<{ responses: { topicName: string; partitions: RawPartitionData[] }[] }>;
  listOffsets(request: {
    replicaId: number;
    isolationLevel: number;
    topics: { topic: string; partitions: { partition: number; timestamp: number }[] }[];
  }): Promise<{ responses: { topic: string; partitions: { partition: number; offset: string }[] }[] }>;
}

interface RawMetadataBroker {
  metadata(topics: string[]): Promise<{ topicMetadata: { topic: string; partitionMetadata: { partitionId: number; leader: number }[] }[] }>;
}

interface RawCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  refreshMetadata(): Promise<void>;
  findBroker(args: { nodeId: string }): Promise<RawBroker>;
  brokerPool: { findConnectedBroker(): Promise<RawMetadataBroker> };
}

type CreateCluster = (options: { allowAutoTopicCreation: boolean; isolationLevel: number; maxInFlightRequests?: number | null; metadataMaxAge?: number }) => RawCluster;

function createCluster(kafka: Kafka): RawCluster {
  const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === 'private:Kafka:createCluster');
  const create = symbol ? (kafka as unknown as Record<symbol, unknown>)[symbol] : undefined;
  if (typeof create !== 'function') {
    throw new Error('this kafkajs version has no internal createCluster; the Kafka event log is written for kafkajs 2.x');
  }
  // Never auto-create: a read of a missing stream must not create it with the broker's (finite) retention.
  return (create as CreateCluster)({ allowAutoTopicCreation: false, isolationLevel: READ_COMMITTED, maxInFlightRequests: null });
}

class OffsetOutOfRange extends Error {}

interface FetchResult {
  /** Committed data records (no control records, none of aborted transactions), in offset order. */
  records: RawRecord[];
  /** Where the next fetch starts: past every record batch this one returned. */
  nextOffset: number;
  lastStableOffset: number;
  highWatermark: number;
  logStartOffset: number;
}

class PartitionReader {
  private readonly cluster: RawCluster;
  /** Leader node of partition 0, per topic (kafkajs's own metadata cache is for all target topics at once). */
  private readonly leaders = new Map<string, string>();

  constructor(kafka: Kafka, private readonly maxBytes: number) {
    this.cluster = createCluster(kafka);
  }

  connect(): Promise<void> {
    return this.cluster.connect();
  }

  disconnect(): Promise<void> {
    return this.cluster.disconnect().catch(() => undefined);
  }

  /** The leader of partition 0 of `topic`, or undefined when the topic does not exist. */
  async leader(topic: string): Promise<RawBroker | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        let nodeId = this.leaders.get(topic);
        if (nodeId === undefined) {
          // Metadata of this one topic, so that "unknown topic" is about this topic only.
          const broker = await this.cluster.brokerPool.findConnectedBroker();
          const { topicMetadata } = await broker.metadata([topic]);
          const leader = topicMetadata.find((t) => t.topic === topic)?.partitionMetadata.find((p) => p.partitionId === 0)?.leader;
          if (leader === undefined || leader < 0) throw Object.assign(new Error(`no leader for ${topic}/0`), { retriable: true, type: 'LEADER_NOT_AVAILABLE' });
          nodeId = String(leader);
          this.leaders.set(topic, nodeId);
        }
        return await this.cluster.findBroker({ nodeId });
      } catch (error) {
        this.leaders.delete(topic);
        if ((error as KafkaishError).type === 'UNKNOWN_TOPIC_OR_PARTITION') return undefined;
        if (attempt >= 20 || !isRetriable(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)));
      }
    }
  }

  private async withLeader<T>(topic: string, call: (broker: RawBroker) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const broker = await this.leader(topic);
      if (!broker) throw Object.assign(new Error(`topic ${topic} does not exist`), { type: 'UNKNOWN_TOPIC_OR_PARTITION', retriable: false });
      try {
        return await call(broker);
      } catch (error) {
        const type = (error as KafkaishError).type;
        if (type === 'OFFSET_OUT_OF_RANGE' || (error as Error).name === 'KafkaJSOffsetOutOfRange') throw new OffsetOutOfRange((error as Error).message);
        if (attempt >= 10 || !isRetriable(error)) throw error;
        // Leadership moved, or the connection dropped: find the leader again.
        this.leaders.delete(topic);
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)));
        await this.cluster.refreshMetadata().catch(() => undefined);
      }
    }
  }

  async lastStableOffset(topic: string): Promise<number> {
    const { responses } = await this.withLeader(topic, (broker) => broker.listOffsets({
      replicaId: -1,
      isolationLevel: READ_COMMITTED,
      topics: [{ topic, partitions: [{ partition: 0, timestamp: -1 }] }],
    }));
    return Number(responses[0]?.partitions[0]?.offset ?? 0);
  }

  /** The end of the log, decided transactions or not (read_uncommitted's end). */
  async highWatermark(topic: string): Promise<number> {
    const { responses } = await this.withLeader(topic, (broker) => broker.listOffsets({
      replicaId: -1,
      isolationLevel: 0,
      topics: [{ topic, partitions: [{ partition: 0, timestamp: -1 }] }],
    }));
    return Number(responses[0]?.partitions[0]?.offset ?? 0);
  }

  async logStartOffset(topic: string): Promise<number> {
    const { responses } = await this.withLeader(topic, (broker) => broker.listOffsets({
      replicaId: -1,
      isolationLevel: READ_COMMITTED,
      topics: [{ topic, partitions: [{ partition: 0, timestamp: -2 }] }],
    }));
    return Number(responses[0]?.partitions[0]?.offset ?? 0);
  }

  async fetch(topic: string, offset: number, maxWaitMs: number, maxBytes = this.maxBytes): Promise<FetchResult> {
    const { responses } = await this.withLeader(topic, (broker) => broker.fetch({
      replicaId: -1,
      isolationLevel: READ_COMMITTED,
      maxWaitTime: maxWaitMs,
      minBytes: 1,
      maxBytes,
      topics: [{ topic, partitions: [{ partition: 0, fetchOffset: String(offset), maxBytes }] }],
    }));
    const data = responses.find((r) => r.topicName === topic)?.partitions.find((p) => p.partition === 0);
    if (!data) return { records: [], nextOffset: offset, lastStableOffset: offset, highWatermark: offset, logStartOffset: 0 };
    const { records, nextOffset } = committedRecords(data, offset);
    return {
      records,
      nextOffset,
      lastStableOffset: Number(data.lastStableOffset),
      highWatermark: Number(data.highWatermark),
      logStartOffset: Number(data.lastStartOffset),
    };
  }
}

/** The abort marker's key: control record version 0, type 0 (ABORT). */
function isAbortMarker(record: RawRecord): boolean {
  const key = record.key;
  return !!key && key.length >= 4 && key.readInt16BE(2) === 0;
}

/**
 * The records of a read_committed fetch that a consumer may see: not control records, not in a
 * transaction the broker lists as aborted (from its first offset up to its abort marker, for
 * that producer). Also where the next fetch starts: past the last record batch returned, which
 * may end with a marker or records removed by compaction.
 */
export function committedRecords(data: Pick<RawPartitionData, 'abortedTransactions' | 'messages'>, fetchOffset: number): { records: RawRecord[]; nextOffset: number } {
  const aborted = [...(data.abortedTransactions ?? [])]
    .map((t) => ({ producerId: t.producerId, firstOffset: Number(t.firstOffset) }))
    .sort((a, b) => a.firstOffset - b.firstOffset);
  const open = new Set<string>();
  const records: RawRecord[] = [];
  let nextOffset = fetchOffset;
  for (const record of data.messages) {
    const offset = Number(record.offset);
    const batchEnd = Number(record.batchContext.firstOffset) + record.batchContext.lastOffsetDelta + 1;
    if (batchEnd > nextOffset) nextOffset = batchEnd;
    if (offset + 1 > nextOffset) nextOffset = offset + 1;
    while (aborted.length > 0 && aborted[0].firstOffset <= offset) open.add(aborted.shift()!.producerId);
    const { producerId, inTransaction, isControlBatch } = record.batchContext;
    if (isControlBatch || record.isControlRecord) {
      if (isAbortMarker(record)) open.delete(producerId);
      continue;
    }
    if (offset < fetchOffset) continue;
    if (inTransaction && open.has(producerId)) continue;
    records.push(record);
  }
  return { records, nextOffset };
}

function header(record: RawRecord, name: string): string | undefined {
  const value = record.headers[name];
  const buffer = Array.isArray(value) ? value[value.length - 1] : value;
  return buffer?.toString('utf8');
}

function versionOf(record: RawRecord, topic: string): number {
  const version = Number(header(record, 'version'));
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new KafkaLogError(`${topic} offset ${record.offset}: no valid version header; is this topic an event log?`, false);
  }
  return version;
}

function parseValue(record: RawRecord, topic: string, version: number): DispatchEvent {
  try {
    // Events were validated before they were appended; parsing each again would slow replay.
    return JSON.parse(record.value?.toString('utf8') ?? '') as DispatchEvent;
  } catch (error) {
    throw new KafkaLogError(`${topic} version ${version} (offset ${record.offset}) is not valid JSON (${(error as Error).message})`, false, { cause: error });
  }
}
