import type { DomainErrorCode } from '../domain/errors.js';

/** Codes the runtime adds to the domain's: admission refusals and an unavailable writer. */
export type RuntimeErrorCode = DomainErrorCode | 'quota' | 'shed' | 'unavailable';

/** A request the dispatcher refused, with a stable code for transports to map (HTTP: see app.ts). */
export class DispatchError extends Error {
  override readonly name = 'DispatchError';
  constructor(
    readonly code: RuntimeErrorCode,
    message: string,
    readonly path?: (string | number)[],
    readonly retriable = code === 'quota' || code === 'shed' || code === 'unavailable',
  ) {
    super(message);
  }
}
