import { runBadInput } from './badInput.js';
import { runDecisionCore } from './decisionCore.js';
import { runEmbedded } from './embedded.js';
import { runKafka } from './kafka.js';
import { parsePeersArgs, runPeers } from './peers.js';
import { runReplay } from './replay.js';
import { parseScaleArgs, runScale } from './scale.js';
import { machineLines, renderReport, type BenchReport } from './support.js';

/**
 * `node --expose-gc dist/bench/run.js [decision|embedded|replay|kafka|bad-input ...]`: run the
 * named benchmarks (default: all but kafka, which starts its own Kafka broker, and bad-input, the
 * junk campaign) and print the machine, each workload, and results beside their targets.
 */

const BENCHES: Record<string, (log: (l: string) => void) => BenchReport | Promise<BenchReport>> = {
  decision: (log) => runDecisionCore({}, log),
  embedded: (log) => runEmbedded({}, log),
  replay: (log) => runReplay({}, log),
  kafka: (log) => runKafka({}, log),
  'bad-input': (log) => runBadInput({}, log),
  peers: (log) => runPeers(parsePeersArgs(process.argv.slice(2)), log),
  scale: (log) => runScale(parseScaleArgs(process.argv.slice(2)), log),
};
/** Run only when named. */
const OPT_IN = new Set(['kafka', 'bad-input', 'scale', 'peers']);

async function main(): Promise<number> {
  // Names up to the first --flag; the flags belong to the benchmarks (e.g. scale --max-history 1000000).
  const flagAt = process.argv.slice(2).findIndex((a) => a.startsWith('--'));
  const names = process.argv.slice(2, flagAt < 0 ? undefined : 2 + flagAt);
  for (const n of names) {
    if (!(n in BENCHES)) {
      console.error(`unknown benchmark "${n}": choose from ${Object.keys(BENCHES).join(', ')}`);
      return 2;
    }
  }
  const selected = names.length > 0 ? names : Object.keys(BENCHES).filter((n) => !OPT_IN.has(n));
  const log = (l: string): void => console.log(l);
  log('switchyard benchmarks');
  for (const l of machineLines()) log(`  ${l}`);
  if (!(globalThis as { gc?: unknown }).gc) log('  (no --expose-gc: heap figures are skipped)');
  const reports: BenchReport[] = [];
  const started = performance.now();
  for (const name of selected) {
    log('');
    log(`-- ${name}`);
    const t = performance.now();
    reports.push(await BENCHES[name](log));
    log(`   (${((performance.now() - t) / 1000).toFixed(0)} s)`);
  }
  log('');
  for (const r of reports) {
    for (const l of renderReport(r)) log(l);
    log('');
  }
  log(`total ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return 0;
}

main().then((code) => { process.exitCode = code; }, (e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
