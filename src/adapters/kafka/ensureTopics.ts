import kafkajs, { type Admin, type Kafka, type Message } from 'kafkajs';
import type { Logger } from 'pino';

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
  logger?: Logger;
}

/**
 * Create topics that do not exist yet and wait for their leaders. Relying on the broker's
 * auto-creation races the first metadata request ("does not host this topic-partition").
 */
export async function ensureTopics(kafka: Kafka, topics: readonly string[], options: EnsureTopicsOptions = {}): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const wanted = [...new Set(topics)];
    const existing = new Set(await admin.listTopics());
    const missing = wanted.filter((t) => !existing.has(t));
    if (missing.length > 0) {
      const configEntries = options.maxMessageBytes ? [{ name: 'max.message.bytes', value: String(options.maxMessageBytes) }] : undefined;
      try {
        await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: options.numPartitions ?? 1, configEntries })), waitForLeaders: true });
      } catch (e) {
        // Another client created one first: fine, as long as they all exist now.
        const now = new Set(await admin.listTopics());
        if (missing.some((t) => !now.has(t))) throw e;
        for (const t of missing) existing.add(t);
      }
    }
    if (options.maxMessageBytes && options.raiseExisting !== false) {
      // Topics made by someone else (an agent, an operator, auto-creation) may have less room.
      for (const topic of wanted.filter((t) => existing.has(t))) {
        try {
          const had = await raiseMaxMessageBytes(admin, topic, options.maxMessageBytes);
          if (had !== undefined) options.logger?.info({ topic, from: had, to: options.maxMessageBytes }, 'raised the topic\'s max.message.bytes');
        } catch (err) {
          if (!options.logger) throw err;
          options.logger.warn({ err, topic, want: options.maxMessageBytes },
            'could not raise the topic\'s max.message.bytes: messages larger than its limit will be refused');
        }
      }
    }
  } finally {
    await admin.disconnect();
  }
}

/**
 * Raise a topic's max.message.bytes to at least `want`. AlterConfigs replaces all of a topic's
 * own settings, so the ones it has (retention, compaction, …) are sent back with the new value.
 * Returns the value it had when it was raised, undefined when it already had enough.
 */
export async function raiseMaxMessageBytes(admin: Admin, topic: string, want: number): Promise<number | undefined> {
  const described = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }] });
  const entries = described.resources[0]?.configEntries ?? [];
  const has = Number(entries.find((c) => c.configName === 'max.message.bytes')?.configValue);
  if (!Number.isFinite(has) || has >= want) return undefined;
  const own = entries
    .filter((c) => c.configSource === ConfigSource.TOPIC_CONFIG && c.configName !== 'max.message.bytes' && c.configValue !== null)
    .map((c) => ({ name: c.configName, value: c.configValue }));
  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [...own, { name: 'max.message.bytes', value: String(want) }] }],
  });
  return has;
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
