import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseEvent } from '../../src/domain/events.js';
import {
  ConcurrencyError,
  WriterBusyError,
  type EventLog,
  type StoredEvent,
  type Subscription,
} from '../../src/runtime/eventLog.js';
import {
  agentHeartbeat,
  agentRegistered,
  taskAssigned,
  taskCompleted,
  taskFailed,
  taskSubmitted,
  workload,
} from './sampleEvents.js';

/** What a backend's test file hands to {@link eventLogContract} for each test. */
export interface EventLogFixture {
  log: EventLog;
  /**
   * Opens another log object on the same storage, as a second process would (its own connection
   * or client). The fixture's `cleanup` closes it.
   */
  openSecond: () => Promise<EventLog>;
  /** Closes every log the fixture opened and removes its storage. */
  cleanup: () => Promise<void>;
}

/**
 * The behaviour every {@link EventLog} backend must have. Each test gets a fresh fixture and
 * fresh stream names, so backends that share a broker between tests do not see each other's data.
 */
export function eventLogContract(name: string, open: () => Promise<EventLogFixture>): void {
  describe(`EventLog contract: ${name}`, () => {
    let fixture: EventLogFixture;
    let log: EventLog;
    let stream: string;

    beforeEach(async () => {
      fixture = await open();
      log = fixture.log;
      stream = freshStream();
    });
    afterEach(async () => {
      await fixture.cleanup();
    });

    describe('append and read', () => {
      it('reports version 0 and reads nothing for a stream never written', async () => {
        expect(await log.version(stream)).toBe(0);
        expect(await readAll(log, stream)).toEqual([]);
      });

      it('returns the new version from each append: the number of events in the stream', async () => {
        expect(await log.append(stream, [agentRegistered('agent-a')], 0)).toBe(1);
        expect(await log.append(stream, [taskSubmitted('t1'), taskSubmitted('t2')], 1)).toBe(3);
        expect(await log.version(stream)).toBe(3);
      });

      it('reads back every field of every event, with versions from 1 and increasing positions', async () => {
        const events = [
          agentRegistered('agent-a'),
          taskSubmitted('t1'),
          taskAssigned('t1', 'agent-a'),
          taskFailed('t1', 'agent-a'),
          taskCompleted('t1', 'agent-a'),
        ];
        await log.append(stream, events.slice(0, 2), 0);
        await log.append(stream, events.slice(2), 2);

        const stored = await readAll(log, stream);
        expect(stored.map((s) => s.event)).toEqual(events);
        expect(stored.map((s) => parseEvent(s.event))).toEqual(events);
        expect(stored.map((s) => s.version)).toEqual([1, 2, 3, 4, 5]);
        expectIncreasingPositions(stored);
      });

      it('reads only the events after the given version', async () => {
        await log.append(stream, workload(5), 0);
        expect((await readAll(log, stream, 2)).map((s) => s.version)).toEqual([3, 4, 5]);
        expect(await readAll(log, stream, 5)).toEqual([]);
        expect(await readAll(log, stream, 99)).toEqual([]);
      });

      it('accepts an empty batch at the current version and writes nothing', async () => {
        expect(await log.append(stream, [], 0)).toBe(0);
        await log.append(stream, workload(2), 0);
        expect(await log.append(stream, [], 2)).toBe(2);
        await expect(log.append(stream, [], 1)).rejects.toBeInstanceOf(ConcurrencyError);
        expect(await log.version(stream)).toBe(2);
      });

      it('keeps streams independent: own versions, own events', async () => {
        const other = freshStream();
        await log.append(stream, [taskSubmitted('in-a')], 0);
        await log.append(other, [taskSubmitted('in-b'), agentHeartbeat('agent-b')], 0);
        await log.append(stream, [taskAssigned('in-a', 'agent-a')], 1);

        expect(await log.version(stream)).toBe(2);
        expect(await log.version(other)).toBe(2);
        expect((await readAll(log, stream)).map((s) => s.event)).toEqual([taskSubmitted('in-a'), taskAssigned('in-a', 'agent-a')]);
        expect((await readAll(log, other)).map((s) => s.version)).toEqual([1, 2]);
      });

      it('appends 10,000 events in one batch and reads them back in order', async () => {
        const events = workload(10_000);
        expect(await log.append(stream, events, 0)).toBe(10_000);

        const stored = await readAll(log, stream);
        expect(stored.map((s) => s.version)).toEqual(range(1, 10_000));
        expect(stored.map((s) => s.event)).toEqual(events);
        expectIncreasingPositions(stored);
      });
    });

    describe('optimistic concurrency', () => {
      it('refuses an append at a stale expectedVersion with ConcurrencyError and writes nothing', async () => {
        await log.append(stream, workload(3), 0);

        const error = await log.append(stream, [taskSubmitted('late')], 1).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(ConcurrencyError);
        expect(error).toMatchObject({ stream, expected: 1, actual: 3, retriable: false });
        expect(await log.version(stream)).toBe(3);
        expect((await readAll(log, stream)).map((s) => s.event)).toEqual(workload(3));
      });

      it('refuses an append ahead of the stream', async () => {
        await expect(log.append(stream, [taskSubmitted('t1')], 4)).rejects.toBeInstanceOf(ConcurrencyError);
        expect(await log.version(stream)).toBe(0);
      });

      it('lets exactly one of two concurrent appends at the same expectedVersion win', async () => {
        const results = await Promise.allSettled([
          log.append(stream, [taskSubmitted('first')], 0),
          log.append(stream, [taskSubmitted('second'), taskSubmitted('third')], 0),
        ]);
        expectOneWinner(results);
        const stored = await readAll(log, stream);
        expect(stored.length).toBe(await log.version(stream));
      });

      it('lets exactly one of two concurrent appends from two log objects win', async () => {
        const second = await fixture.openSecond();
        await log.append(stream, workload(2), 0);
        const results = await Promise.allSettled([
          log.append(stream, [taskSubmitted('from-first')], 2),
          second.append(stream, [taskSubmitted('from-second')], 2),
        ]);
        expectOneWinner(results);
        expect(await log.version(stream)).toBe(3);
        expect(await second.version(stream)).toBe(3);
      });
    });

    describe('subscribe', () => {
      it('delivers the backlog, then live appends, in order without gaps or duplicates', async () => {
        await log.append(stream, workload(3), 0);
        const seen = recorder();
        const subscription = log.subscribe(stream, 0, seen.onEvents);
        try {
          await seen.until(3);
          let version = 3;
          for (let i = 0; i < 20; i++) {
            version = await log.append(stream, workload(2, `live-${i}`), version);
            if (i % 5 === 0) await pause(1);
          }
          await seen.until(43);
          expect(seen.versions()).toEqual(range(1, 43));
          expect(seen.events.map((s) => s.event)).toEqual((await readAll(log, stream)).map((s) => s.event));
        } finally {
          await subscription.close();
        }
      });

      it('starts after the given version', async () => {
        await log.append(stream, workload(5), 0);
        const seen = recorder();
        const subscription = log.subscribe(stream, 3, seen.onEvents);
        try {
          await seen.until(2);
          await log.append(stream, workload(1, 'after'), 5);
          await seen.until(3);
          expect(seen.versions()).toEqual([4, 5, 6]);
        } finally {
          await subscription.close();
        }
      });

      it('delivers events appended through another log object on the same storage', async () => {
        const second = await fixture.openSecond();
        await log.append(stream, workload(2), 0);
        const seen = recorder();
        const subscription = second.subscribe(stream, 0, seen.onEvents);
        try {
          await seen.until(2);
          let version = 2;
          for (let i = 0; i < 5; i++) version = await log.append(stream, workload(3, `remote-${i}`), version);
          await seen.until(17);
          expect(seen.versions()).toEqual(range(1, 17));
        } finally {
          await subscription.close();
        }
      });

      it('awaits an async onEvents before delivering more', async () => {
        let inFlight = 0;
        let maxInFlight = 0;
        const seen = recorder();
        const subscription = log.subscribe(stream, 0, async (events) => {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await pause(15);
          seen.onEvents(events);
          inFlight--;
        });
        try {
          let version = 0;
          for (let i = 0; i < 10; i++) {
            version = await log.append(stream, workload(1, `slow-${i}`), version);
            await pause(3);
          }
          await seen.until(10);
          expect(maxInFlight).toBe(1);
          expect(seen.versions()).toEqual(range(1, 10));
        } finally {
          await subscription.close();
        }
      });

      it('delivers only its own stream', async () => {
        const other = freshStream();
        const seen = recorder();
        const subscription = log.subscribe(stream, 0, seen.onEvents);
        try {
          await log.append(other, workload(4, 'other'), 0);
          await log.append(stream, workload(1, 'mine'), 0);
          await seen.until(1);
          await pause(100);
          expect(seen.events.map((s) => s.event)).toEqual(workload(1, 'mine'));
        } finally {
          await subscription.close();
        }
      });

      it('delivers nothing after close', async () => {
        const seen = recorder();
        const subscription: Subscription = log.subscribe(stream, 0, seen.onEvents);
        await log.append(stream, workload(2), 0);
        await seen.until(2);
        await subscription.close();

        await log.append(stream, workload(2, 'after-close'), 2);
        await pause(150);
        expect(seen.versions()).toEqual([1, 2]);
      });
    });

    describe('snapshots', () => {
      it('loads nothing before a snapshot is saved', async () => {
        expect(await log.loadSnapshot(stream)).toBeUndefined();
      });

      it('loads the latest snapshot, each save replacing the previous one', async () => {
        await log.saveSnapshot(stream, { version: 5, data: '{"queue":["t1"]}' });
        expect(await log.loadSnapshot(stream)).toEqual({ version: 5, data: '{"queue":["t1"]}' });

        const big = JSON.stringify({ queue: range(1, 5_000).map((i) => `task-${i}`), note: 'é ✓' });
        await log.saveSnapshot(stream, { version: 12, data: big });
        expect(await log.loadSnapshot(stream)).toEqual({ version: 12, data: big });
      });

      it('keeps one snapshot per stream', async () => {
        const other = freshStream();
        await log.saveSnapshot(stream, { version: 1, data: 'a' });
        await log.saveSnapshot(other, { version: 2, data: 'b' });
        expect(await log.loadSnapshot(stream)).toEqual({ version: 1, data: 'a' });
        expect(await log.loadSnapshot(other)).toEqual({ version: 2, data: 'b' });
      });

      it('is visible to another log object on the same storage', async () => {
        await log.saveSnapshot(stream, { version: 3, data: 'state' });
        const second = await fixture.openSecond();
        expect(await second.loadSnapshot(stream)).toEqual({ version: 3, data: 'state' });
      });
    });

    describe('readTask', () => {
      it('returns the events of one task in order, with their stream versions', async ({ skip }) => {
        if (!log.readTask) return skip('this backend does not implement readTask');
        await log.append(stream, [
          agentRegistered('agent-a'),
          taskSubmitted('t1'),
          taskSubmitted('t2'),
          taskAssigned('t1', 'agent-a'),
          agentHeartbeat('agent-a'),
          taskAssigned('t2', 'agent-a'),
          taskFailed('t1', 'agent-a'),
        ], 0);
        await log.append(stream, [taskCompleted('t1', 'agent-a')], 7);
        await log.append(freshStream(), [taskSubmitted('t1')], 0);

        const history = await log.readTask(stream, 't1');
        expect(history.map((s) => s.version)).toEqual([2, 4, 7, 8]);
        expect(history.map((s) => s.event)).toEqual([
          taskSubmitted('t1'), taskAssigned('t1', 'agent-a'), taskFailed('t1', 'agent-a'), taskCompleted('t1', 'agent-a'),
        ]);
        expect(await log.readTask(stream, 'unknown')).toEqual([]);
      });
    });

    describe('writer lease', () => {
      it('refuses a second writer with WriterBusyError while the lease is held', async () => {
        const second = await fixture.openSecond();
        const lease = await log.acquireWriter(stream, { wait: false });
        try {
          const error = await second.acquireWriter(stream, { wait: false }).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(WriterBusyError);
          expect(error).toMatchObject({ stream, retriable: true });
          expect((error as Error).message).toContain(stream);
        } finally {
          await lease.release();
        }
        const next = await second.acquireWriter(stream, { wait: false });
        await next.release();
      });

      it('makes a waiting standby the writer once the lease is released', async () => {
        const second = await fixture.openSecond();
        const lease = await log.acquireWriter(stream, { wait: false });
        let acquired = false;
        const standby = second.acquireWriter(stream, { wait: true }).then((l) => {
          acquired = true;
          return l;
        });
        await pause(300);
        expect(acquired).toBe(false);

        await lease.release();
        const standbyLease = await standby;
        expect(acquired).toBe(true);
        await expect(log.acquireWriter(stream, { wait: false })).rejects.toBeInstanceOf(WriterBusyError);
        await standbyLease.release();
      });

      it('stops waiting when the signal aborts', async () => {
        const second = await fixture.openSecond();
        const lease = await log.acquireWriter(stream, { wait: false });
        try {
          const controller = new AbortController();
          const standby = second.acquireWriter(stream, { wait: true, signal: controller.signal });
          setTimeout(() => controller.abort(), 50);
          await expect(standby).rejects.toMatchObject({ name: 'AbortError' });
        } finally {
          await lease.release();
        }
      });

      it('does not let a lease on one stream block another stream', async () => {
        const second = await fixture.openSecond();
        const lease = await log.acquireWriter(stream, { wait: false });
        const otherLease = await second.acquireWriter(freshStream(), { wait: false });
        await otherLease.release();
        await lease.release();
      });
    });
  });
}

export function freshStream(): string {
  return `dispatcher-${randomUUID().slice(0, 8)}`;
}

export async function readAll(log: EventLog, stream: string, afterVersion?: number): Promise<StoredEvent[]> {
  const stored: StoredEvent[] = [];
  for await (const s of log.read(stream, afterVersion)) stored.push(s);
  return stored;
}

export function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` until true, failing after `timeoutMs` with `what` in the message. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await pause(5);
  }
}

/** Records what a subscription delivers. */
export function recorder(): {
  events: StoredEvent[];
  onEvents: (events: StoredEvent[]) => void;
  versions: () => number[];
  until: (count: number) => Promise<void>;
} {
  const events: StoredEvent[] = [];
  return {
    events,
    onEvents: (batch) => { events.push(...batch); },
    versions: () => events.map((s) => s.version),
    until: (count) => waitFor(() => events.length >= count, `${count} delivered events (have ${events.length})`),
  };
}

function expectIncreasingPositions(stored: StoredEvent[]): void {
  for (let i = 1; i < stored.length; i++) expect(stored[i].position).toBeGreaterThan(stored[i - 1].position);
}

function expectOneWinner(results: PromiseSettledResult<number>[]): void {
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  expect(won).toHaveLength(1);
  expect(lost).toHaveLength(1);
  expect(lost[0].reason).toBeInstanceOf(ConcurrencyError);
}
