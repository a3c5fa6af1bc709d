import kafkajs, { type Admin, type Kafka, type Message } from 'kafkajs';

// kafkajs is CommonJS: Node's ESM loader finds only some of its exports by name.
const { ConfigResourceTypes, ConfigSource } = kafkajs;

const MiB = 1024 * 1024;

/**
 * max.message.bytes of an agent's assignment topic. One assignment carries its task's payload,
 * which the intake bounds (1 MiB of HTTP body; the tasks topic's own limit, 1 MiB by default, over
 * Kafka), plus a few hundred bytes of metadata; the broker's default (1 MiB) would refuse the
 * largest ones, and a refused assignment would stop the dispatcher. 8 MiB leaves room for a tasks
 * topic an operator raised.
 */
export const ASSIGNMENT_MAX_MESSAGE_BYTES = 8 * MiB;

/**
 * Bytes of messages per produce request when publishing many at once. kafkajs puts every message
 * of one partition in a request into one record batch, and a batch larger than the topic's
 * max.message.bytes is refused whole; sending in chunks keeps every batch this small, unless a
 * single message is larger (then it goes alone).
 */
export const SEND_CHUNK_BYTES = 1 * MiB;

export interface EnsureTopicsOptions {
  /** Partitions of a topic this call creates. Default 1. */
  numPartitions?: number;
  /**
   * The least max.message.bytes the topics must have: new ones are created with it; an existing
   * one with less is raised to it (unless `raiseExisting` is false), keeping its other topic-level
   * settings.
   */
  maxMessageBytes?: number;
  /** Raise an existing topic's max.message.bytes. Default true; a client without the right to alter configs passes false. */
  raiseExisting?: boolean;
  /**
   * Where a refused raise (no permission to alter configs) is reported as a warning; without it
   * the refusal is thrown.
   */
  logger?: TopicLogger;
}

/** What topic set-up reports to: a pino logger, or anything with the same two methods. */
export interface TopicLogger {
  info(detail: object, message: string): void;
  warn(detail: object, message: string): void;
}

/**
 * Create topics that do not exist yet and wait for their leaders. Relying on the broker's
 * auto-creation races the first metadata request ("does not host this topic-partition").
 */
export async function ensureTopics(kafka: Kafka, topics: readonly string[], options: EnsureTopicsOptions = {}): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await ensureTopicsWith(admin, topics, options);
  } finally {
    await admin.disconnect();
  }
}

/** {@link ensureTopics} with an admin client that is already connected (and stays so). */
export async function ensureTopicsWith(admin: Admin, topics: readonly string[], options: EnsureTopicsOptions = {}): Promise<void> {
  const wanted = [...new Set(topics)];
  const existing = new Set(await admin.listTopics());
  const missing = wanted.filter((t) => !existing.has(t));
  /** Topics this call created, with the settings asked for. */
  let created = new Set<string>();
  if (missing.length > 0) {
    const configEntries = options.maxMessageBytes ? [{ name: 'max.message.bytes', value: String(options.maxMessageBytes) }] : undefined;
    try {
      // false: another client created them all first.
      if (await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: options.numPartitions ?? 1, configEntries })), waitForLeaders: true })) {
        created = new Set(missing);
      }
    } catch (e) {
      // Another client created some first: fine, as long as they all exist now.
      const now = new Set(await admin.listTopics());
      if (missing.some((t) => !now.has(t))) throw e;
    }
    // Made by another client at the same moment, they may have no leader yet ("does not host
    // this topic-partition" to the next request): wait for them as for our own.
    const pending = missing.filter((t) => !created.has(t));
    if (pending.length > 0) await waitForLeaders(admin, pending);
  }
  if (options.maxMessageBytes && options.raiseExisting !== false) {
    // Topics made by someone else (an agent, an operator, auto-creation) may have less room.
    const before = wanted.filter((t) => !created.has(t));
    try {
      const raised = await raiseMaxMessageBytes(admin, before, options.maxMessageBytes);
      for (const [topic, from] of raised) options.logger?.info({ topic, from, to: options.maxMessageBytes }, 'raised the topic\'s max.message.bytes');
    } catch (err) {
      if (!options.logger) throw err;
      options.logger.warn({ err, topics: before, want: options.maxMessageBytes },
        'could not raise max.message.bytes: messages larger than a topic\'s limit will be refused');
    }
  }
}

/** Wait until every partition of `topics` has a leader (at most `timeoutMs`). */
async function waitForLeaders(admin: Admin, topics: readonly string[], timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: meta } = await admin.fetchTopicMetadata({ topics: [...topics] });
      if (meta.length === topics.length && meta.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return;
    } catch (e) {
      if (Date.now() > until) throw e;
    }
    if (Date.now() > until) throw new Error(`topics ${topics.join(', ')} have no leader after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Raise the max.message.bytes of topics to at least `want`, with one describe and one alter for
 * all of them. AlterConfigs replaces all of a topic's own settings, so the ones it has (retention,
 * compaction, …) are sent back with the new value. Returns the topics it raised, with the value
 * each had.
 */
export async function raiseMaxMessageBytes(admin: Admin, topics: readonly string[], want: number): Promise<Map<string, number>> {
  const raised = new Map<string, number>();
  if (topics.length === 0) return raised;
  const described = await admin.describeConfigs({ includeSynonyms: false, resources: topics.map((name) => ({ type: ConfigResourceTypes.TOPIC, name })) });
  const resources: { type: number; name: string; configEntries: { name: string; value: string }[] }[] = [];
  for (const r of described.resources) {
    const has = Number(r.configEntries.find((c) => c.configName === 'max.message.bytes')?.configValue);
    if (!Number.isFinite(has) || has >= want) continue;
    const own = r.configEntries
      .filter((c) => c.configSource === ConfigSource.TOPIC_CONFIG && c.configName !== 'max.message.bytes' && c.configValue !== null)
      .map((c) => ({ name: c.configName, value: c.configValue }));
    resources.push({ type: ConfigResourceTypes.TOPIC, name: r.resourceName, configEntries: [...own, { name: 'max.message.bytes', value: String(want) }] });
    raised.set(r.resourceName, has);
  }
  if (resources.length > 0) await admin.alterConfigs({ validateOnly: false, resources });
  return raised;
}

/** A message's size as a produce request counts it, near enough: value, key, headers, and the record's own overhead. */
export function messageBytes(m: Message): number {
  let n = 64;
  if (m.value) n += typeof m.value === 'string' ? Buffer.byteLength(m.value) : m.value.length;
  if (m.key) n += typeof m.key === 'string' ? Buffer.byteLength(m.key) : m.key.length;
  for (const [k, v] of Object.entries(m.headers ?? {})) n += k.length + (typeof v === 'string' ? Buffer.byteLength(v) : Buffer.isBuffer(v) ? v.length : 16);
  return n;
}

/**
 * Messages for several topics as a list of `sendBatch` requests of at most {@link SEND_CHUNK_BYTES}
 * each (a larger message alone), keeping each topic's messages in their order.
 */
export function chunkTopicMessages(messages: readonly { topic: string; message: Message }[], maxBytes = SEND_CHUNK_BYTES): { topic: string; messages: Message[] }[][] {
  const requests: { topic: string; messages: Message[] }[][] = [];
  let byTopic = new Map<string, Message[]>();
  let bytes = 0;
  const flush = () => {
    if (byTopic.size > 0) requests.push([...byTopic].map(([topic, list]) => ({ topic, messages: list })));
    byTopic = new Map();
    bytes = 0;
  };
  for (const { topic, message } of messages) {
    const size = messageBytes(message);
    if (bytes > 0 && bytes + size > maxBytes) flush();
    let list = byTopic.get(topic);
    if (!list) byTopic.set(topic, (list = []));
    list.push(message);
    bytes += size;
  }
  flush();
  return requests;
}
