import { createHash } from 'node:crypto';
import kafkajs, { type Kafka, type LogEntry, type logCreator } from 'kafkajs';

// kafkajs is CommonJS: Node's ESM loader finds only some of its exports by name.
const { Kafka: KafkaClient, logLevel } = kafkajs;

/**
 * Every Kafka name Switchyard uses, in one place. All names start with a prefix (default
 * `switchyard`), so several deployments (or test runs) can share a cluster.
 *
 *   stream `dispatcher-<shard>`  → `<prefix>.log.<shard>`      (the event log of one shard)
 *   any other stream `<s>`       → `<prefix>.log.<s>`
 *   snapshots                    → `<prefix>.snapshots`         (compacted, keyed by stream)
 *   assignments for an agent     → `<prefix>.assignments.<agentId>`
 *   task submissions             → `<prefix>.tasks`
 *   agent reports                → `<prefix>.agents`
 *   dead letters                 → `<prefix>.dead-letter`
 *   writer election of a stream  → `<prefix>.leader.<shard>`   (topic and consumer group)
 *   writer transactional.id      → `<prefix>.writer.<shard>`
 *
 * Names from outside (shards, streams, agent ids) are encoded into Kafka's legal characters
 * ([A-Za-z0-9._-], at most 249 in all) by {@link topicPart}.
 */
export interface TopicNames {
  readonly prefix: string;
  /** The one-partition topic holding the events of `stream`. */
  log(stream: string): string;
  snapshots: string;
  assignments(agentId: string): string;
  tasks: string;
  agents: string;
  deadLetter: string;
  /** Topic and consumer group whose one partition makes its holder the writer of `stream`. */
  leader(stream: string): string;
  /** The transactional.id of the writer of `stream`: one per stream, so a new writer fences the old. */
  writerTransactionalId(stream: string): string;
}

export const DEFAULT_PREFIX = 'switchyard';

const DISPATCHER_STREAM = /^dispatcher-(.+)$/;
/** Kafka's limit on topic name length. */
const MAX_TOPIC_LENGTH = 249;

export function topicNames(prefix: string = DEFAULT_PREFIX): TopicNames {
  if (!/^[A-Za-z0-9._-]+$/.test(prefix) || prefix === '.' || prefix === '..') {
    throw new Error(`Kafka topic prefix must be made of [A-Za-z0-9._-], got "${prefix}"`);
  }
  const named = (kind: string, name: string): string => fit(`${prefix}.${kind}.`, topicPart(name));
  const streamPart = (stream: string): string => {
    if (typeof stream !== 'string' || stream.length === 0) throw new TypeError('stream must be a non-empty string');
    return DISPATCHER_STREAM.exec(stream)?.[1] ?? stream;
  };
  return {
    prefix,
    log: (stream) => named('log', streamPart(stream)),
    snapshots: `${prefix}.snapshots`,
    assignments: (agentId) => named('assignments', agentId),
    tasks: `${prefix}.tasks`,
    agents: `${prefix}.agents`,
    deadLetter: `${prefix}.dead-letter`,
    leader: (stream) => named('leader', streamPart(stream)),
    writerTransactionalId: (stream) => named('writer', streamPart(stream)),
  };
}

/**
 * Encodes a name into Kafka's topic characters, one to one: letters, digits and `-` stay, any
 * other character (`.` and `_` included) becomes `_<hex code point>_`. Keeping `.` and `_` out of
 * the encoded part also keeps clear of Kafka's rule that topics differing only by `.` versus `_`
 * collide. `main` → `main`, `eu.west` → `eu_2e_west`, `a b` → `a_20_b`.
 */
export function topicPart(name: string): string {
  let out = '';
  for (const ch of name) {
    out += /^[A-Za-z0-9-]$/.test(ch) ? ch : `_${ch.codePointAt(0)!.toString(16)}_`;
  }
  return out;
}

/** Shortens an over-long name, keeping it unique with a hash of the full part. */
function fit(head: string, part: string): string {
  if (head.length + part.length <= MAX_TOPIC_LENGTH) return head + part;
  const hash = createHash('sha256').update(part).digest('hex').slice(0, 16);
  return `${head}${part.slice(0, MAX_TOPIC_LENGTH - head.length - hash.length - 1)}-${hash}`;
}

/**
 * A kafkajs client whose own log is quiet. kafkajs logs the errors it retries (a coordinator
 * still loading, CONCURRENT_TRANSACTIONS right after an abort, a rebalance, a broker restart) at
 * ERROR; the adapters report every failure that matters through their own API (a thrown error, a
 * lost lease, a stopped subscription), so by default only the errors kafkajs does not retry and
 * does not also throw (a consumer crash, a throwing listener) are written, to stderr, as one JSON
 * line each. `LOG_LEVEL=debug` forwards kafkajs's INFO and above, `LOG_LEVEL=trace` everything.
 */
export function createKafka(brokers: string[], clientId: string): Kafka {
  if (!Array.isArray(brokers) || brokers.length === 0 || brokers.some((b) => typeof b !== 'string' || b.trim() === '')) {
    throw new Error(`Kafka needs at least one broker address (host:port), got ${JSON.stringify(brokers)}`);
  }
  const level = (process.env.LOG_LEVEL ?? '').toLowerCase();
  const verbose = level === 'debug' || level === 'trace';
  return new KafkaClient({
    clientId,
    brokers: brokers.map((b) => b.trim()),
    logLevel: level === 'trace' ? logLevel.DEBUG : verbose ? logLevel.INFO : logLevel.ERROR,
    logCreator: verbose ? forwardAll : forwardRealErrors,
    // Transaction coordinator hand-overs (CONCURRENT_TRANSACTIONS) clear in tens of ms: retry soon.
    retry: { initialRetryTime: 100, retries: 8 },
    // A loaded machine (or broker) answers a connect slower than kafkajs's 1 s default.
    connectionTimeout: 5000,
  });
}

const LEVEL_NAMES: Record<number, string> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

function write(entry: LogEntry): void {
  const { message, timestamp: _timestamp, logger: _logger, ...fields } = entry.log;
  process.stderr.write(`${JSON.stringify({
    level: LEVEL_NAMES[entry.level] ?? String(entry.level),
    time: Date.now(),
    component: 'kafkajs',
    namespace: entry.namespace,
    msg: message,
    ...fields,
  })}\n`);
}

const forwardAll: logCreator = () => write;

/** kafkajs ERROR lines about conditions it retries or that it also throws to the caller. */
const NOISE = [
  /^Response /, // a protocol error on one request; retried, or thrown to the caller
  /^The coordinator is not aware of this member/, // rejoins the group
  /^Restarting the consumer/,
  /^Crash: KafkaJSConnectionClosedError/, // a consumer disconnected mid-request; its owner is told (lease lost, or a restart)
  /^Caught error when (disconnecting|stopping)/,
  /^Offset out of range/,
  /^Failed to (send messages|connect to broker)/,
  /coordinator (is )?(loading|not available)|not the (correct )?coordinator|CONCURRENT_TRANSACTIONS|rebalanc|leader(ship)? (is )?not available|not (the )?leader/i,
  /Connection (closed|error|timeout)|ECONNREFUSED|ECONNRESET|timed out/i,
];

const forwardRealErrors: logCreator = () => (entry) => {
  if (entry.level !== logLevel.ERROR) return;
  const log = entry.log as LogEntry['log'] & { retryCount?: unknown; retriable?: unknown };
  if (log.retryCount !== undefined || log.retriable === true) return;
  if (NOISE.some((re) => re.test(log.message))) return;
  write(entry);
};
