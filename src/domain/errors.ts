/**
 * Stable error codes of the domain. Adapters map them to transport statuses
 * (HTTP: not-found → 404, stale-attempt → 409, …) and never parse messages.
 */
export type DomainErrorCode =
  | 'validation'
  | 'not-found'
  | 'stale-attempt'
  | 'agent-not-alive'
  | 'conflict';

/** A command the dispatcher refuses. Nothing is written to the log for it. */
export class DomainError extends Error {
  override readonly name = 'DomainError';
  constructor(
    readonly code: DomainErrorCode,
    message: string,
    /** Field path the error is about, when there is one. */
    readonly path?: (string | number)[],
  ) {
    super(message);
  }
}
