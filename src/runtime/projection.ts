import type { DispatchEvent } from '../domain/events.js';

/** A fold over the log (a View): rebuildable from position 0, checkpointed with the snapshot. */
export interface Projection<V> {
  readonly name: string;
  initial(): V;
  /** Apply one event in place. Deterministic: time comes from `event.at`. */
  apply(view: V, event: DispatchEvent): void;
  save(view: V): unknown;
  load(data: unknown): V;
}
