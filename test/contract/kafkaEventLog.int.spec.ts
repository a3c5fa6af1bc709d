import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import kafkajs, { type Admin, type Consumer, type Kafka, type KafkaMessage } from 'kafkajs';
import ts from 'typescript';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { getKafkaEventLog, type KafkaEventLogOptions } from '../../src/adapters/kafka/kafkaEventLog.js';
import { ASSIGNMENT_MAX_MESSAGE_BYTES } from '../../src/adapters/kafka/ensureTopics.js';
import { createKafka, topicNames, topicPart } from '../../src/adapters/kafka/topics.js';
import { ConcurrencyError, WriterBusyError, type EventLog, type WriterLease } from '../../src/runtime/eventLog.js';
import { describeKafka, requireKafkaBrokers } from '../setup/kafka.js';
import { eventLogContract, freshStream, pause, range, readAll, recorder, waitFor } from './eventLog.contract.js';
import { taskAssigned, taskSubmitted, workload } from './sampleEvents.js';

const { AssignerProtocol, ConfigResourceTypes } = kafkajs;

/** A prefix of its own for each test, so tests sharing the broker never see each other's topics. */
const freshPrefix = (): string => `t${randomUUID().slice(0, 8)}`;
const brokers = (): string[] => requireKafkaBrokers().split(',');
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Holds the writer lease and appends every 200 ms, printing "held", "appended <v>", "refused <error>", "lost <reason>". */
const HOLDER = `
  const [adapter, brokers, prefix, stream] = process.argv.slice(2);
  const { getKafkaEventLog } = await import(adapter);
  const say = (line) => process.stdout.write(line + '\\n');
  const log = getKafkaEventLog({ brokers: brokers.split(','), prefix });
  const lease = await log.acquireWriter(stream, { wait: false });
  lease.onLost((reason) => say('lost ' + reason.message));
  say('held');
  let version = await log.version(stream);
  let n = 0;
  const event = () => ({ type: 'AgentHeartbeat', v: 1, at: Date.parse('2025-03-03T09:00:00.000Z') + n++, agentId: 'holder' });
  for (;;) {
    try {
      version = await log.append(stream, [event()], version);
      say('appended ' + version);
    } catch (error) {
      say('refused ' + error.name + ' ' + error.message);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
`;

/**
 * Transpiles a TypeScript module and the relative imports it reaches into `outDir` (as ESM,
 * without type checking), so a child process can run the current sources without a build.
 * Returns the path of the entry's JavaScript.
 */
async function transpileTree(entry: string, outDir: string): Promise<string> {
  await writeFile(join(outDir, 'package.json'), '{"type":"module"}');
  await symlink(join(ROOT, 'node_modules'), join(outDir, 'node_modules'), 'dir');
  const outputOf = (file: string): string => join(outDir, relative(ROOT, file)).replace(/\.ts$/, '.js');
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = await readFile(file, 'utf8');
    for (const [, spec] of source.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)\.js['"]/g)) {
      const imported = resolve(dirname(file), `${spec}.ts`);
      if (existsSync(imported)) queue.push(imported); // else a match in a comment, or plain JavaScript
    }
    const { outputText } = ts.transpileModule(source, {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    });
    await mkdir(dirname(outputOf(file)), { recursive: true });
    await writeFile(outputOf(file), outputText);
  }
  return outputOf(entry);
}

describe('kafka topic names', () => {
  const names = topicNames('sw');

  it('names every topic under the prefix, a dispatcher stream by its shard', () => {
    expect(names.log('dispatcher-main')).toBe('sw.log.main');
    expect(names.log('audit')).toBe('sw.log.audit');
    expect(names.snapshots).toBe('sw.snapshots');
    expect(names.assignments('agent-7')).toBe('sw.assignments.agent-7');
    expect(names.tasks).toBe('sw.tasks');
    expect(names.agents).toBe('sw.agents');
    expect(names.deadLetter).toBe('sw.dead-letter');
    expect(names.leader('dispatcher-eu')).toBe('sw.leader.eu');
    expect(names.writerTransactionalId('dispatcher-eu')).toBe('sw.writer.eu');
    expect(topicNames().log('dispatcher-main')).toBe('switchyard.log.main');
  });

  it('encodes other characters one to one into legal topic names of at most 249 characters', () => {
    expect(topicPart('eu.west_1')).toBe('eu_2e_west_5f_1');
    expect(topicPart('a/b c')).toBe('a_2f_b_20_c');
    expect(topicPart('é✓')).toBe('_e9__2713_');
    expect(names.assignments('a.b')).not.toBe(names.assignments('a_b'));
    const long = names.log(`dispatcher-${'x'.repeat(400)}`);
    expect(long.length).toBe(249);
    expect(long).not.toBe(names.log(`dispatcher-${'x'.repeat(401)}`));
    for (const name of [names.log('dispatcher-a b/c'), names.assignments('agent:1'), long]) expect(name).toMatch(/^[A-Za-z0-9._-]+$/);
  });

  it('refuses a prefix Kafka could not use', () => {
    expect(() => topicNames('no spaces')).toThrow(/prefix/);
  });
});

describeKafka('kafka event log', () => {
  eventLogContract('kafka', async () => {
    const prefix = freshPrefix();
    const logs: EventLog[] = [];
    const openLog = (): EventLog => {
      const log = getKafkaEventLog({ brokers: brokers(), prefix, clientId: `contract-${prefix}` });
      logs.push(log);
      return log;
    };
    return {
      log: openLog(),
      openSecond: async () => openLog(),
      cleanup: async () => {
        await Promise.all(logs.map((log) => log.close()));
      },
    };
  });

  describe('kafka specifics', () => {
    let prefix: string;
    let stream: string;
    let kafka: Kafka;
    let admin: Admin;
    const logs: EventLog[] = [];
    const consumers: Consumer[] = [];
    const children: ChildProcess[] = [];
    const tempDirs: string[] = [];

    const openLog = (options: Partial<KafkaEventLogOptions> = {}): EventLog => {
      const log = getKafkaEventLog({ brokers: brokers(), prefix, clientId: `spec-${prefix}`, ...options });
      logs.push(log);
      return log;
    };

    /** A read_committed consumer of `topic` from its beginning, in a group of its own. */
    const consume = async (topic: string): Promise<{ messages: KafkaMessage[] }> => {
      const consumer = kafka.consumer({ groupId: `spec-${randomUUID()}`, maxWaitTimeInMs: 100 });
      consumers.push(consumer);
      const seen = { messages: [] as KafkaMessage[] };
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({ eachMessage: async ({ message }) => { seen.messages.push(message); } });
      return seen;
    };

    const committedOffset = async (groupId: string, topic: string): Promise<string | undefined> => {
      const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
      const offset = offsets?.partitions.find((p) => p.partition === 0)?.offset;
      return offset === undefined || offset === '-1' ? undefined : offset;
    };

    /**
     * Runs the adapter in a child process: holds the writer lease of a stream and appends every
     * 200 ms, printing each outcome. The child runs the TypeScript sources transpiled on the fly.
     */
    const startHolder = async (holderPrefix: string, holderStream: string) => {
      const dir = await mkdtemp(join(tmpdir(), 'switchyard-kafka-child-'));
      tempDirs.push(dir);
      const adapter = await transpileTree(resolve(ROOT, 'src/adapters/kafka/kafkaEventLog.ts'), dir);
      const script = join(dir, 'holder.mjs');
      await writeFile(script, HOLDER);
      const child = spawn(process.execPath, [script, pathToFileURL(adapter).href, requireKafkaBrokers(), holderPrefix, holderStream], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
      child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
      const lines = (): string[] => stdout.split('\n').filter((l) => l.length > 0);
      return {
        process: child,
        lines,
        waitForLine: (match: (line: string) => boolean, what: string) => waitFor(() => {
          if (lines().some(match)) return true;
          if (child.exitCode !== null) throw new Error(`child exited with ${child.exitCode} before ${what}: ${stderr}`);
          return false;
        }, `${what} from the child (stdout: ${stdout || 'empty'}; stderr: ${stderr || 'empty'})`, 20_000),
        kill: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const exited = once(child, 'exit');
          child.kill('SIGKILL');
          await exited;
        },
      };
    };
    beforeEach(async () => {
      prefix = freshPrefix();
      stream = freshStream();
      kafka = createKafka(brokers(), `spec-${prefix}`);
      admin = kafka.admin();
      await admin.connect();
    });
    afterEach(async () => {
      for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await Promise.all(tempDirs.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
      await Promise.all(consumers.splice(0).map((c) => c.disconnect()));
      await Promise.all(logs.splice(0).map((log) => log.close()));
      await admin.disconnect();
    });

    it('stores each event as one message of a one-partition topic kept forever, with version and type headers', async () => {
      const log = openLog();
      const events = [taskSubmitted('t1'), taskAssigned('t1', 'agent-a'), ...workload(1)];
      await log.append(stream, events, 0);

      const topic = topicNames(prefix).log(stream);
      expect(topic).toBe(`${prefix}.log.${stream.slice('dispatcher-'.length)}`);
      const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
      expect(metadata.topics[0].partitions).toHaveLength(1);
      const configs = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms', 'retention.bytes'] }],
      });
      expect(Object.fromEntries(configs.resources[0].configEntries.map((e) => [e.configName, e.configValue])))
        .toEqual({ 'retention.ms': '-1', 'retention.bytes': '-1' });

      const seen = await consume(topic);
      await waitFor(() => seen.messages.length >= 3, 'the three messages');
      expect(seen.messages.map((m) => ({
        key: m.key?.toString(),
        value: JSON.parse(m.value!.toString()),
        version: m.headers?.version?.toString(),
        type: m.headers?.type?.toString(),
      }))).toEqual([
        { key: 't1', value: events[0], version: '1', type: 'TaskSubmitted' },
        { key: 't1', value: events[1], version: '2', type: 'TaskAssigned' },
        { key: 'task-0', value: events[2], version: '3', type: 'TaskSubmitted' },
      ]);
    });

    it('commits outbox messages and input offsets in the append transaction: invisible while it is open, visible once it resolves', async () => {
      const names = topicNames(prefix);
      const assignments = names.assignments('agent-a');
      const input = names.tasks;
      const groupId = `${prefix}.dispatcher`;
      await admin.createTopics({ topics: [input, assignments].map((topic) => ({ topic, numPartitions: 1 })), waitForLeaders: true });
      const reader = openLog();
      const seen = await consume(assignments);
      let duringTransaction: { version: number; outbox: number; offset: string | undefined } | undefined;
      let armed = false;
      const log = openLog({
        beforeCommit: async () => {
          if (!armed) return;
          // Everything is sent; nothing may be visible to read_committed readers yet.
          await pause(300);
          duringTransaction = { version: await reader.version(stream), outbox: seen.messages.length, offset: await committedOffset(groupId, input) };
        },
      });
      await log.append(stream, workload(2), 0);
      armed = true;

      const resolved = await log.append(stream, [taskAssigned('t9', 'agent-a')], 2, {
        outbox: [{ topic: assignments, key: 't9', value: '{"taskId":"t9"}', headers: { kind: 'assignment' } }],
        inputs: [{ groupId, topic: input, partition: 0, offset: '7' }],
      });
      expect(resolved).toBe(3);
      expect(duringTransaction).toEqual({ version: 2, outbox: 0, offset: undefined });
      await waitFor(() => seen.messages.length === 1, 'the assignment');
      expect(seen.messages[0].key?.toString()).toBe('t9');
      expect(seen.messages[0].value?.toString()).toBe('{"taskId":"t9"}');
      expect(seen.messages[0].headers?.kind?.toString()).toBe('assignment');
      expect(await committedOffset(groupId, input)).toBe('7');
      expect(await reader.version(stream)).toBe(3);
    });

    it('commits appends that carry only input offsets back to back (AddOffsetsToTxn meets CONCURRENT_TRANSACTIONS while the last commit is completed)', async () => {
      // Found by the chaos campaign: agents' heartbeats decide nothing, so their offsets were
      // committed by appends with no events, whose first call to the coordinator is
      // AddOffsetsToTxn. kafkajs does not retry its CONCURRENT_TRANSACTIONS, and the dispatcher stopped.
      const input = topicNames(prefix).tasks;
      const groupId = `${prefix}.offsets-only`;
      await admin.createTopics({ topics: [{ topic: input, numPartitions: 1 }], waitForLeaders: true });
      const log = openLog();
      let version = await log.append(stream, workload(1), 0);
      for (let i = 1; i <= 150; i++) {
        version = await log.append(stream, [], version, { inputs: [{ groupId, topic: input, partition: 0, offset: String(i) }] });
      }
      expect(version).toBe(1);
      expect(await committedOffset(groupId, input)).toBe('150');
    }, 120_000);

    it('makes all of an append\'s new assignment topics at once, with room for large messages, and raises the ones agents made first', async () => {
      const names = topicNames(prefix);
      const agents = Array.from({ length: 60 }, (_, i) => `agent-${i}`);
      // Ten agents made their topics first, with the broker's default max.message.bytes.
      await admin.createTopics({ topics: agents.slice(0, 10).map((a) => ({ topic: names.assignments(a), numPartitions: 1 })), waitForLeaders: true });
      const log = openLog();
      const outbox = agents.map((a) => ({ topic: names.assignments(a), key: `t-${a}`, value: JSON.stringify({ kind: 'assignment', taskId: `t-${a}` }) }));
      expect(await log.append(stream, workload(1), 0, { outbox })).toBe(1);

      const described = await admin.describeConfigs({
        includeSynonyms: false,
        resources: agents.map((a) => ({ type: ConfigResourceTypes.TOPIC, name: names.assignments(a), configNames: ['max.message.bytes'] })),
      });
      expect(described.resources.map((r) => Number(r.configEntries[0].configValue))).toEqual(agents.map(() => ASSIGNMENT_MAX_MESSAGE_BYTES));
      const last = await consume(names.assignments('agent-59'));
      await waitFor(() => last.messages.length === 1, 'the last agent\'s assignment');
    }, 120_000);

    it('fences a writer mid-transaction: its commit fails with ConcurrencyError and none of its events, outbox messages or offsets appear', async () => {
      const names = topicNames(prefix);
      const assignments = names.assignments('agent-a');
      const input = names.tasks;
      const groupId = `${prefix}.dispatcher`;
      await admin.createTopics({ topics: [{ topic: input, numPartitions: 1 }], waitForLeaders: true });
      const setup = openLog();
      await setup.append(stream, workload(2), 0);
      const second = openLog();
      let interloper: Promise<number> | undefined;
      const zombie = openLog({
        // While the zombie's transaction is open (all sent, not committed), another writer of the
        // stream starts, which fences the zombie and aborts its transaction, and appends.
        beforeCommit: async () => {
          interloper ??= second.append(stream, [taskSubmitted('from-second')], 2, {
            outbox: [{ topic: assignments, key: 'second', value: 'second' }],
            inputs: [{ groupId, topic: input, partition: 0, offset: '12' }],
          });
          await interloper;
        },
      });
      const error = await zombie.append(stream, [taskSubmitted('from-zombie')], 2, {
        outbox: [{ topic: assignments, key: 'zombie', value: 'zombie' }],
        inputs: [{ groupId, topic: input, partition: 0, offset: '9' }],
      }).catch((e: unknown) => e);

      expect(error).toBeInstanceOf(ConcurrencyError);
      expect(error).toMatchObject({ stream, expected: 2, actual: 3 });
      expect(await interloper).toBe(3);
      const stored = await readAll(setup, stream);
      expect(stored.map((s) => s.event)).toEqual([...workload(2), taskSubmitted('from-second')]);
      const seen = await consume(assignments);
      await waitFor(() => seen.messages.some((m) => m.key?.toString() === 'second' && m.value?.toString() === 'second'), 'the second writer\'s assignment');
      expect(seen.messages.map((m) => m.key?.toString())).not.toContain('zombie');
      expect(await committedOffset(groupId, input)).toBe('12');
    });

    it('keeps a fenced log object fenced until it becomes the writer again', async () => {
      const first = openLog();
      const second = openLog();
      await first.append(stream, workload(2), 0);
      expect(await second.append(stream, [taskSubmitted('second')], 2)).toBe(3);

      // The first does not know it was fenced: its next commit is refused by the broker.
      const refused = await first.append(stream, [taskSubmitted('stale')], 2).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(ConcurrencyError);
      expect(refused).toMatchObject({ expected: 2, actual: 3 });
      // Even at the right version: a fenced writer must not fence the new one back.
      const again = await first.append(stream, [taskSubmitted('stale')], 3).catch((e: unknown) => e);
      expect(again).toBeInstanceOf(ConcurrencyError);
      expect((again as Error).message).toMatch(/fenced/);
      expect(await second.append(stream, [taskSubmitted('second-2')], 3)).toBe(4);
      expect((await readAll(first, stream)).map((s) => s.event)).toEqual([...workload(2), taskSubmitted('second'), taskSubmitted('second-2')]);

      // Becoming the writer through the election fences the other one instead.
      const lease = await first.acquireWriter(stream, { wait: false });
      expect(await first.append(stream, [taskSubmitted('first-again')], 4)).toBe(5);
      await expect(second.append(stream, [taskSubmitted('late')], 5)).rejects.toBeInstanceOf(ConcurrencyError);
      await lease.release();
      expect(await second.version(stream)).toBe(5);
    });

    it('reads from the offset a snapshot records, and keeps big snapshots', async () => {
      const writer = openLog();
      let version = 0;
      for (let i = 0; i < 3; i++) version = await writer.append(stream, workload(1000, `b${i}`), version);
      const data = randomBytes(3 * 1024 * 1024).toString('base64'); // 4 MiB, past Kafka's default 1 MiB
      await writer.saveSnapshot(stream, { version, data });
      await writer.append(stream, workload(5, 'after'), version);

      const raw = await consume(topicNames(prefix).snapshots);
      await waitFor(() => raw.messages.length === 1, 'the snapshot message');
      const [message] = raw.messages;
      expect(message.key?.toString()).toBe(stream);
      expect(message.headers?.version?.toString()).toBe('3000');
      const stored = await readAll(writer, stream, 2999);
      expect(message.headers?.offset?.toString()).toBe(String(stored[0].position));

      const restarted = openLog();
      const snapshot = await restarted.loadSnapshot(stream);
      expect(snapshot).toEqual({ version: 3000, data });
      const tail = await readAll(restarted, stream, snapshot!.version);
      expect(tail.map((s) => s.version)).toEqual(range(3001, 3005));
      expect(tail.map((s) => s.event)).toEqual(workload(5, 'after'));
    });

    it('finds the latest snapshot of each stream among many', async () => {
      const log = openLog();
      const other = freshStream();
      for (let i = 1; i <= 20; i++) {
        await log.saveSnapshot(stream, { version: i, data: `s${i}` });
        if (i === 3) await log.saveSnapshot(other, { version: 3, data: 'other' });
      }
      const second = openLog();
      expect(await second.loadSnapshot(stream)).toEqual({ version: 20, data: 's20' });
      expect(await second.loadSnapshot(other)).toEqual({ version: 3, data: 'other' });
      expect(await second.loadSnapshot(freshStream())).toBeUndefined();
    });

    it('reads and follows read-only beside the writer, without fencing it, and refuses to write', async () => {
      const writer = openLog();
      await writer.append(stream, workload(3), 0);
      const reader = openLog({ readonly: true });
      expect((await readAll(reader, stream)).map((s) => s.version)).toEqual([1, 2, 3]);
      const seen = recorder();
      const subscription = reader.subscribe(stream, 0, seen.onEvents);
      expect(await writer.append(stream, workload(2, 'later'), 3)).toBe(5);
      await seen.until(5);
      await subscription.close();
      expect(await reader.version(stream)).toBe(5);
      await expect(reader.append(stream, workload(1), 5)).rejects.toThrow(/open read-only: cannot append/);
      await expect(reader.saveSnapshot(stream, { version: 5, data: '' })).rejects.toThrow(/read-only: cannot save a snapshot/);
      await expect(reader.acquireWriter(stream, { wait: false })).rejects.toThrow(/read-only: cannot become the writer/);
      expect(await writer.append(stream, workload(1, 'still'), 5)).toBe(6);
    });

    it('stops a subscription whose onEvents throws and reports the error', async () => {
      const reported: unknown[] = [];
      const log = openLog({ onSubscriptionError: (error) => reported.push(error) });
      let calls = 0;
      log.subscribe(stream, 0, () => {
        calls++;
        throw new Error('projection bug');
      });
      await log.append(stream, workload(1), 0);
      await waitFor(() => reported.length === 1, 'the error to be reported');
      await log.append(stream, workload(1, 'next'), 1);
      await pause(300);
      expect(calls).toBe(1);
      expect((reported[0] as Error).message).toBe('projection bug');
    });

    it('subscribes before the stream exists and delivers what another process appends', async () => {
      const reader = openLog();
      const seen = recorder();
      const subscription = reader.subscribe(stream, 0, seen.onEvents);
      try {
        await pause(300);
        const writer = openLog();
        let version = 0;
        for (let i = 0; i < 5; i++) version = await writer.append(stream, workload(4, `w${i}`), version);
        await seen.until(20);
        expect(seen.versions()).toEqual(range(1, 20));
      } finally {
        await subscription.close();
      }
    });

    describe('writer election', () => {
      const holderOf = async (groupId: string): Promise<string | undefined> => {
        const { groups } = await admin.describeGroups([groupId]);
        return groups[0]?.members.find((m) => m.memberAssignment.length > 0
          && (AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment[groupId] ?? []).includes(0))?.memberId;
      };

      /**
       * Removes a member from a group, as the coordinator does when its session expires. kafkajs's
       * admin cannot, so this goes through its internal cluster (the LeaveGroup request).
       */
      const expel = async (groupId: string, memberId: string): Promise<void> => {
        const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === 'private:Kafka:createCluster')!;
        type Coordinator = { leaveGroup(args: { groupId: string; memberId: string }): Promise<unknown> };
        type Cluster = { connect(): Promise<void>; disconnect(): Promise<void>; findGroupCoordinator(args: { groupId: string }): Promise<Coordinator> };
        const cluster = (kafka as unknown as Record<symbol, (o: object) => Cluster>)[symbol]({ allowAutoTopicCreation: false });
        await cluster.connect();
        try {
          await (await cluster.findGroupCoordinator({ groupId })).leaveGroup({ groupId, memberId });
        } finally {
          await cluster.disconnect();
        }
      };

      it('names the holder in WriterBusyError', async () => {
        const lease = await openLog().acquireWriter(stream, { wait: false });
        try {
          const error = await openLog().acquireWriter(stream, { wait: false }).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(WriterBusyError);
          expect((error as Error).message).toContain(`pid ${process.pid}`);
          expect((error as Error).message).toContain(topicNames(prefix).leader(stream));
        } finally {
          await lease.release();
        }
      });

      it('tells the holder its lease is lost when the group takes its membership away, and hands the stream to the standby, which fences it', async () => {
        const holder = openLog();
        const standbyLog = openLog();
        const lease = await holder.acquireWriter(stream, { wait: false });
        const lost: Error[] = [];
        lease.onLost?.((reason) => lost.push(reason));
        await holder.append(stream, workload(2), 0);

        let standbyLease: WriterLease | undefined;
        const standby = standbyLog.acquireWriter(stream, { wait: true }).then((l) => (standbyLease = l));
        await pause(1500);
        expect(standbyLease).toBeUndefined();

        const groupId = topicNames(prefix).leader(stream);
        const memberId = await holderOf(groupId);
        expect(memberId).toBeDefined();
        await expel(groupId, memberId!);

        await waitFor(() => lost.length === 1, 'onLost', 15_000);
        expect(lost[0].message).toMatch(/expelled|another instance/);
        await standby;
        // The old holder may not write any more, even at the right version.
        await expect(holder.append(stream, [taskSubmitted('zombie')], 2)).rejects.toBeInstanceOf(ConcurrencyError);
        expect(await standbyLog.append(stream, [taskSubmitted('new-writer')], 2)).toBe(3);
        await standbyLease!.release();
        expect(lost).toHaveLength(1);
      }, 30_000);

      it('tells the holder its lease is lost when its log is closed, but not on release', async () => {
        const log = openLog();
        const released = await log.acquireWriter(stream, { wait: false });
        const lostOnRelease: Error[] = [];
        released.onLost?.((reason) => lostOnRelease.push(reason));
        await released.release();

        const lease = await log.acquireWriter(stream, { wait: false });
        const lost: Error[] = [];
        lease.onLost?.((reason) => lost.push(reason));
        await log.close();
        expect(lost.map((e) => e.message)).toEqual([expect.stringMatching(/closed/)]);
        expect(lostOnRelease).toEqual([]);
        // The group is free again.
        await (await openLog().acquireWriter(stream, { wait: false })).release();
      });

      it('hands the stream to a standby when the holder process stops answering, and fences the holder when it comes back', async () => {
        const child = await startHolder(prefix, stream);
        try {
          await child.waitForLine((l) => l === 'held', 'the lease');
          await child.waitForLine((l) => l.startsWith('appended '), 'a first append');
          const standbyLog = openLog();
          let standbyLease: WriterLease | undefined;
          const standby = standbyLog.acquireWriter(stream, { wait: true }).then((l) => (standbyLease = l));
          await pause(1000);
          expect(standbyLease).toBeUndefined();

          // Frozen, the holder neither heartbeats nor appends: to the group it is dead.
          child.process.kill('SIGSTOP');
          const stoppedAt = Date.now();
          await standby;
          const takeoverMs = Date.now() - stoppedAt;
          expect(takeoverMs).toBeLessThan(15_000);
          const before = await standbyLog.version(stream);
          expect(await standbyLog.append(stream, [taskSubmitted('new-writer')], before)).toBe(before + 1);

          // Revived, it learns it lost the lease and cannot write.
          child.process.kill('SIGCONT');
          await child.waitForLine((l) => l.startsWith('lost '), 'onLost in the old holder');
          await child.waitForLine((l) => l.startsWith('refused ConcurrencyError'), 'a refused append in the old holder');
          expect(child.lines().filter((l) => l.startsWith('appended ')).map((l) => Number(l.slice(9)))).toEqual(range(1, before));
          const stored = await readAll(standbyLog, stream);
          expect(stored.map((s) => s.version)).toEqual(range(1, before + 1));
          expect(stored.at(-1)!.event).toEqual(taskSubmitted('new-writer'));
          await standbyLease!.release();
        } finally {
          await child.kill();
        }
      }, 40_000);

      it('becomes the writer after giving up a wait whose join was still under way (the holder SIGKILLed): the given-up member neither lingers nor gets the stream', async () => {
        const child = await startHolder(prefix, stream);
        await child.waitForLine((l) => l === 'held', 'the lease');
        await child.waitForLine((l) => l.startsWith('appended '), 'a first append');
        await child.kill();
        const groupId = topicNames(prefix).leader(stream);

        // Instances that give up at different moments of the joins and rebalances that follow
        // (kafkajs forgets a consumer disconnected mid-join, but its join goes on). The member left
        // behind appears only when a disconnect falls between two requests of a join, which this
        // does not force: the test passes on the code before the fix too. `npm run
        // chaos:election` is the reproduction (BENCHMARKS.md §8); this guards the path around it.
        const givenUp = await Promise.all([400, 900, 1400, 1900, 2400].map((busyTimeoutMs) =>
          openLog({ busyTimeoutMs }).acquireWriter(stream, { wait: false }).catch((e: unknown) => e)));
        for (const e of givenUp) expect(e).toBeInstanceOf(WriterBusyError);
        // As `serve` starts after a crash: try, stand by, wait. The dead holder's session has not
        // expired, so the first join is still waiting for it when the try gives up.
        const restarted = openLog({ busyTimeoutMs: 1000 });
        const tried = await restarted.acquireWriter(stream, { wait: false }).catch((e: unknown) => e);
        expect(tried).toBeInstanceOf(WriterBusyError);
        expect((tried as Error).message).toMatch(/no assignment .* within 1000 ms/);
        const waitedAt = Date.now();
        const lease = await restarted.acquireWriter(stream, { wait: true });
        expect(Date.now() - waitedAt).toBeLessThan(20_000);
        const before = await restarted.version(stream);
        expect(await restarted.append(stream, [taskSubmitted('after-restart')], before)).toBe(before + 1);
        // The given-up try's member leaves (once its join is over): the holder is left alone.
        const holder = await holderOf(groupId);
        let members: string[] = [];
        for (const until = Date.now() + 15_000; Date.now() < until; await pause(200)) {
          members = (await admin.describeGroups([groupId])).groups[0].members.map((m) => m.memberId);
          if (members.length === 1) break;
        }
        expect(members).toEqual([holder]);
        await lease.release();
      }, 45_000);

      it('stops a standby waiting for the lease when its log closes', async () => {
        const lease = await openLog().acquireWriter(stream, { wait: false });
        const standbyLog = openLog();
        const standby = expect(standbyLog.acquireWriter(stream, { wait: true })).rejects.toThrow(/closed while waiting to become the writer/);
        await pause(200);
        await standbyLog.close();
        await standby;
        await lease.release();
      });
    });
  });
});
