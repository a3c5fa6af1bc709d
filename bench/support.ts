import { cpus, loadavg, totalmem } from 'node:os';

/** One line of a benchmark's results; a target makes it print its measured/target ratio. */
export interface ResultRow {
  name: string;
  value: number;
  unit: string;
  /** `min`: the value must reach the target; `max`: it must stay at or under it. */
  target?: { kind: 'min' | 'max'; value: number };
  note?: string;
}

/** What a benchmark hands back to `run.ts`: what it ran, and what it measured. */
export interface BenchReport {
  title: string;
  workload: string[];
  results: ResultRow[];
  notes?: string[];
}

export function machineLines(): string[] {
  const cs = cpus();
  return [
    `cpu      ${cs[0]?.model ?? 'unknown'} (${cs.length} logical cores${cs[0]?.speed ? `, ${cs[0].speed} MHz` : ''})`,
    `memory   ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `node     ${process.version} (v8 ${process.versions.v8}), ${process.platform}/${process.arch}`,
    `flags    ${process.execArgv.join(' ') || '(none)'}`,
    // Other work on the machine skews every number below: say how busy it was.
    `load     ${loadavg().map((x) => x.toFixed(2)).join(' ')} (1/5/15 min) at start`,
  ];
}

/** Seeded PRNG (mulberry32): the same workload on every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const gc = (globalThis as { gc?: () => void }).gc;

/** Heap in use after a full collection; undefined without --expose-gc (a number then would include garbage). */
export function heapAfterGc(): number | undefined {
  if (!gc) return undefined;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

export function collect(): void {
  gc?.();
}

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;

/** A number for people: thousands separated, at most `digits` decimals. */
export function num(x: number, digits = 0): string {
  return x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Render one report: the workload, then each result beside its target and measured/target. */
export function renderReport(r: BenchReport): string[] {
  const out = [`== ${r.title}`, 'workload:'];
  for (const w of r.workload) out.push(`  ${w}`);
  out.push('results:');
  const width = Math.max(...r.results.map((x) => x.name.length));
  for (const x of r.results) {
    const digits = Math.abs(x.value) >= 100 ? 0 : Math.abs(x.value) >= 10 ? 1 : x.value === 0 ? 0 : 2;
    let line = `  ${x.name.padEnd(width)}  ${num(x.value, digits).padStart(12)} ${x.unit}`;
    if (x.target) {
      const ratio = x.value / x.target.value;
      const ok = x.target.kind === 'min' ? ratio >= 1 : ratio <= 1;
      line += `   target ${x.target.kind === 'min' ? '≥' : '≤'} ${num(x.target.value, x.target.value < 10 ? 2 : 0)} ${x.unit}`
        + `  measured/target ${ratio.toFixed(2)}  ${ok ? 'met' : 'MISSED'}`;
    }
    if (x.note) line += `   (${x.note})`;
    out.push(line);
  }
  for (const n of r.notes ?? []) out.push(`  note: ${n}`);
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
