// Switchyard's public API: the client library for agents and producers, and the pieces to embed
// the dispatcher.
export { createAgent, submitTask, SubmissionError, PermanentTaskError } from './client/index.js';
export type { AgentOptions, TaskHandler, HandlerContext, Assignment, Cancellation, Transport } from './client/index.js';
export { startServer, type ServerOptions, type RunningServer } from './adapters/cli/startServer.js';
export { getSqliteEventLog } from './adapters/log/sqliteEventLog.js';
export { getKafkaEventLog } from './adapters/kafka/kafkaEventLog.js';
export { parsePolicy, type Policy, type PolicyInput } from './domain/policy.js';
export { TaskSubmissionSchema, AgentReadySchema, CompletionSchema, type TaskSubmission } from './domain/inputs.js';
export type { DispatchEvent } from './domain/events.js';
export type { EventLog } from './runtime/eventLog.js';
