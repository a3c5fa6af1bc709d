import { pino, type Logger } from 'pino';
import type { Policy } from '../../domain/policy.js';
import { createDispatcherRuntime, type DispatcherRuntime } from '../../runtime/dispatcherRuntime.js';
import type { EventLog } from '../../runtime/eventLog.js';
import { createDispatchService, type DispatchService } from '../../runtime/service.js';
import { buildApp } from '../http/app.js';
import { renderMetrics } from '../http/metrics.js';
import { dashboardOf, readModels, taskDetails } from '../../runtime/readModels.js';
import { assignmentMessages, createOutboxRelay } from '../kafka/kafkaAssignments.js';
import { createKafkaIngress } from '../kafka/kafkaIngress.js';
import { topicNames } from '../kafka/topics.js';

/** Options of {@link startServer}. */
export interface ServerOptions {
  log: EventLog;
  policy: Policy;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  shard?: string;
  logger?: Logger;
  /** Wait as a standby while another dispatcher is the writer. Default false. */
  standby?: boolean;
  snapshotEvery?: number;
  /** Called when the dispatcher must stop (it lost the log). Default: log and exit(1). */
  onFatal?: (err: Error) => void;
  /**
   * Kafka ingress (`<prefix>.tasks`, `<prefix>.agents`) and egress (`<prefix>.assignments.<agentId>`).
   * On a Kafka log they share its transactions (exactly once); beside another log, assignments
   * leave through the log's outbox (at least once).
   */
  kafka?: { brokers: string[]; prefix?: string };
}

export interface RunningServer {
  runtime: DispatcherRuntime;
  service: DispatchService;
  url: string;
  close(): Promise<void>;
}

/** Start the single writer on `log` and the HTTP API in front of it. */
export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const logger = o.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' });
  const topics = o.kafka ? topicNames(o.kafka.prefix) : undefined;
  const relay = o.kafka && !o.log.transactionalOutbox ? createOutboxRelay({ log: o.log, brokers: o.kafka.brokers, logger }) : undefined;
  const runtime = await createDispatcherRuntime({
    log: o.log,
    shard: o.shard,
    policy: o.policy,
    logger,
    standby: o.standby,
    snapshotEvery: o.snapshotEvery,
    projections: readModels(o.log),
    egress: topics ? assignmentMessages(topics) : undefined,
    onOutbox: relay ? () => relay.wake() : undefined,
    onFatal: o.onFatal ?? ((err) => { logger.fatal({ err }, 'dispatcher stopped'); process.exit(1); }),
  });
  const service = createDispatchService(runtime);
  const ingress = o.kafka && topics ? createKafkaIngress({ brokers: o.kafka.brokers, topics, service, log: o.log, logger, shard: o.shard }) : undefined;
  try {
    await relay?.start();
    await ingress?.start();
  } catch (err) {
    await runtime.stop();
    throw err;
  }
  const app = buildApp({
    service,
    // Per-request lines are at info; a line per request would cost more than the request.
    loggerInstance: logger.child({ component: 'http' }, { level: process.env.HTTP_LOG_LEVEL ?? 'warn' }),
    task: (id) => taskDetails(runtime, o.log, id),
    dashboard: () => dashboardOf(runtime),
    metrics: () => renderMetrics(runtime),
    health: () => ({ ok: runtime.healthy, log: o.log.kind, stream: runtime.stream, version: runtime.version }),
  });
  let address: string;
  try {
    address = await app.listen({ host: o.host ?? '127.0.0.1', port: o.port ?? 8080 });
  } catch (err) {
    // A server that never answered must not keep the writer lease (nor tick on) after the error.
    await runtime.stop();
    throw err;
  }
  logger.info({ address, log: o.log.kind }, 'switchyard listening');
  let closed = false;
  return {
    runtime,
    service,
    url: address,
    async close() {
      if (closed) return;
      closed = true;
      await ingress?.stop();
      await runtime.stop();
      await relay?.stop();
      // Every long-poll is answered by now. A connection on which no request was ever sent (a
      // client's spare socket, as fetch opens after an aborted request) is neither idle nor busy
      // to node's server.close(), which would wait for it until headersTimeout: cut it after a grace.
      const cut = setTimeout(() => app.server.closeAllConnections(), 1000);
      try { await app.close(); } finally { clearTimeout(cut); }
      await o.log.close();
    },
  };
}
