import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadPolicyFile } from '../../runtime/config.js';
import { openLog, parseBrokers, parseLogTarget } from '../log/openLog.js';
import { startServer } from './startServer.js';
import { runDemo } from './demo.js';
import { explainTask, replayLog, verifyLog } from './audit.js';

const COMMON = {
  data: { type: 'string', default: './data' },
  log: { type: 'string' },
  kafka: { type: 'string' },
  config: { type: 'string' },
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  shard: { type: 'string', default: 'main' },
  'topic-prefix': { type: 'string', default: 'switchyard' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const COMMON_HELP = `Common flags:
  --data <dir>       data directory (default ./data)
  --log <target>     the durable log: sqlite:<path> | kafka:<brokers> | esdb:<url> (default sqlite in the data dir)
  --kafka <brokers>  Kafka ingress and assignment topics beside another log
  --config <file>    policy file, .json or .yaml
  --shard <name>     dispatcher shard; the stream is dispatcher-<shard> (default main)
  --topic-prefix <p> prefix of every Kafka topic, group and transactional id (default switchyard)
  --host <addr>      HTTP host (default 127.0.0.1)
  --port <n>         HTTP port (default 8080)`;

const HELP: Record<string, string> = {
  '': `Usage: switchyard <command> [flags]

Commands:
  serve              run the dispatcher and its HTTP API (default)
  demo               serve plus a simulated fleet and producers that exercise every rule
  replay             rebuild the dashboard from the log
  explain <taskId>   why a task went where it went
  verify             re-decide every recorded input; exit 1 on any difference

Run 'switchyard <command> --help' for its flags.`,
  serve: `Usage: switchyard serve [flags]

Run the dispatcher on its durable log with the HTTP API in front of it. If another dispatcher
holds the log, wait as a standby and take over when it stops (--no-standby: refuse instead).

  --no-standby       exit with an error if another dispatcher is the writer
${COMMON_HELP}`,
  demo: `Usage: switchyard demo [--seconds N] [flags]

Serve, plus a simulated fleet (capabilities, speeds, one agent that dies mid-task) and producers
(a Monday-morning flood, a critical incident, a flooding tenant, sessions, deadlines, dependencies).
Prints the dashboard as it goes and a closing summary of what each rule did.

  --seconds <n>      how long to run (default 20)
  --port <n>         HTTP port (default 0: a free one)
${COMMON_HELP}
Without --data the demo writes to a new temporary directory.`,
  replay: `Usage: switchyard replay [--until <ISO time|version>] [--json] [flags]

Fold the log into the dashboard, up to --until, and print it.

  --until <t>        stop at this event time (ISO-8601) or stream version (integer)
  --json             print JSON
${COMMON_HELP}`,
  explain: `Usage: switchyard explain <taskId> [--json] [flags]

Print the task's history and the reasons recorded with each decision about it.

  --json             print JSON
${COMMON_HELP}`,
  verify: `Usage: switchyard verify [flags]

Re-decide every recorded input from the start of the log and compare with the recorded
decisions. Exit 0 when identical, 1 on the first difference (printed).
${COMMON_HELP}`,
};

class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

function parse<E extends Options = Record<never, never>>(cmd: string, argv: string[], extra?: E) {
  try {
    const options = { ...COMMON, ...(extra ?? {}) } as typeof COMMON & E;
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('\n')[0]} (see 'switchyard ${cmd} --help')`);
  }
}

function port(v: string | undefined): number {
  const n = Number(v);
  if (!/^\d+$/.test(v ?? '') || n > 65535) throw new UsageError(`--port must be an integer 0-65535, got "${v}"`);
  return n;
}

/** Run the CLI; returns the exit code (undefined while a server keeps the process alive). */
export async function runCli(argv: string[]): Promise<number | undefined> {
  const known = ['serve', 'demo', 'replay', 'explain', 'verify'];
  let cmd = argv[0] && !argv[0].startsWith('-') ? argv[0] : 'serve';
  const rest = argv[0] === cmd ? argv.slice(1) : argv;
  if (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') { process.stdout.write(`${HELP['']}\n`); return 0; }
  if (!known.includes(cmd)) {
    process.stderr.write(`switchyard: unknown command "${cmd}" (commands: ${known.join(', ')})\n`);
    return 2;
  }
  try {
    return await run(cmd, rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`switchyard ${cmd}: ${e.message}\n`);
      return 2;
    }
    throw e;
  } finally {
    cmd = '';
  }
}

async function run(cmd: string, argv: string[]): Promise<number | undefined> {
  switch (cmd) {
    case 'serve': {
      const { values: v, positionals } = parse(cmd, argv, { 'no-standby': { type: 'boolean' } });
      if (v.help) { process.stdout.write(`${HELP.serve}\n`); return 0; }
      if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
      const policy = loadPolicyFile(v.config);
      const target = parseLogTarget(v.log, v.data);
      // On a Kafka log the ingress and egress topics live on the same cluster unless --kafka says otherwise.
      const kafkaSpec = v.kafka ?? (target.kind === 'kafka' ? target.target : undefined);
      let kafka: { brokers: string[]; prefix: string } | undefined;
      const prefix = v['topic-prefix'];
      try { kafka = kafkaSpec ? { brokers: parseBrokers(kafkaSpec), prefix } : undefined; } catch (e) { throw new UsageError((e as Error).message); }
      const log = await openLog(target, { prefix });
      const server = await startServer({ log, policy, host: v.host, port: port(v.port), shard: v.shard, standby: !v['no-standby'], kafka });
      const stop = (signal: string) => {
        process.stderr.write(`switchyard: ${signal}, stopping\n`);
        server.close().then(() => process.exit(0), () => process.exit(1));
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
      return undefined;
    }
    case 'demo': {
      const { values: v, positionals } = parse(cmd, argv, { seconds: { type: 'string', default: '20' } });
      if (v.help) { process.stdout.write(`${HELP.demo}\n`); return 0; }
      if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
      const seconds = Number(v.seconds);
      if (!(seconds > 0) || seconds > 3600) throw new UsageError(`--seconds must be a number of seconds in (0, 3600], got "${v.seconds}"`);
      const dataGiven = argv.some((a) => a === '--data' || a.startsWith('--data='));
      return runDemo({ seconds, data: dataGiven ? v.data : undefined, config: v.config, log: v.log, host: v.host, port: argv.some((a) => a.startsWith('--port')) ? port(v.port) : 0 });
    }
    case 'replay': {
      const { values: v, positionals } = parse(cmd, argv, { until: { type: 'string' }, json: { type: 'boolean' } });
      if (v.help) { process.stdout.write(`${HELP.replay}\n`); return 0; }
      if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
      let until: { version?: number; at?: number } | undefined;
      if (v.until !== undefined) {
        if (/^\d+$/.test(v.until)) until = { version: Number(v.until) };
        else if (!Number.isNaN(Date.parse(v.until))) until = { at: Date.parse(v.until) };
        else throw new UsageError(`--until must be an ISO-8601 time or a stream version, got "${v.until}"`);
      }
      const log = await openLog(parseLogTarget(v.log, v.data), { readonly: true, prefix: v['topic-prefix'] });
      try { return await replayLog(log, `dispatcher-${v.shard}`, { until, json: v.json ?? false }); } finally { await log.close(); }
    }
    case 'explain': {
      const { values: v, positionals } = parse(cmd, argv, { json: { type: 'boolean' } });
      if (v.help) { process.stdout.write(`${HELP.explain}\n`); return 0; }
      if (positionals.length !== 1) throw new UsageError('explain needs exactly one task id');
      const log = await openLog(parseLogTarget(v.log, v.data), { readonly: true, prefix: v['topic-prefix'] });
      try { return await explainTask(log, `dispatcher-${v.shard}`, positionals[0], v.json ?? false); } finally { await log.close(); }
    }
    case 'verify': {
      const { values: v, positionals } = parse(cmd, argv);
      if (v.help) { process.stdout.write(`${HELP.verify}\n`); return 0; }
      if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
      const log = await openLog(parseLogTarget(v.log, v.data), { readonly: true, prefix: v['topic-prefix'] });
      try { return await verifyLog(log, `dispatcher-${v.shard}`); } finally { await log.close(); }
    }
    default:
      throw new UsageError(`unknown command ${cmd}`);
  }
}
