/**
 * A fixed-bucket, log-scale histogram of non-negative durations in milliseconds (HdrHistogram's
 * layout): every integer below 32 ms has its own bucket; above that each power of two is split
 * into 32 equal buckets. Memory is bounded (at most {@link BUCKETS} counters whatever the number
 * of samples), two histograms merge by adding counters, and the layout is integer arithmetic only,
 * so the same samples give the same buckets on every machine.
 *
 * Error: a sample is rounded to whole milliseconds, then a percentile is reported as the middle of
 * its bucket, clamped to the exact minimum and maximum. A bucket in octave [2^e, 2^(e+1)) is
 * 2^(e-5) ms wide, so the reported value is within 1/64 (≈ 1.6 %) of a value in that bucket, and
 * exact below 64 ms and whenever all samples are equal.
 */
export interface LogHistogram {
  /** Counters by bucket index; grows to the highest bucket used. */
  buckets: number[];
  count: number;
  /** Exact smallest and largest samples (ms); 0 when empty. */
  min: number;
  max: number;
}

/** Sub-buckets per power of two: 2^SUB_BITS. */
const SUB_BITS = 5;
const SUB = 1 << SUB_BITS;
/** Largest exponent covered: durations up to 2^53 ms, far beyond any real wait. */
const MAX_EXP = 52;
/** Number of buckets: the 32 exact ones plus 32 per octave from 2^5 to 2^52. */
export const BUCKETS = SUB + (MAX_EXP - SUB_BITS + 1) * SUB;

/** The relative error bound of a reported percentile (see the file comment). */
export const RELATIVE_ERROR = 1 / (2 * SUB);

export function emptyHistogram(): LogHistogram {
  return { buckets: [], count: 0, min: 0, max: 0 };
}

/** Position of the highest set bit of a positive integer below 2^53. */
function exponentOf(v: number): number {
  if (v < 0x1_0000_0000) return 31 - Math.clz32(v);
  return 32 + 31 - Math.clz32(Math.floor(v / 0x1_0000_0000));
}

export function bucketOf(ms: number): number {
  if (ms < SUB) return ms;
  const e = exponentOf(ms);
  const width = 2 ** (e - SUB_BITS);
  return SUB + (e - SUB_BITS) * SUB + (Math.floor(ms / width) - SUB);
}

/** The smallest value and the width (in whole ms) of a bucket. */
export function bucketRange(index: number): { lo: number; width: number } {
  if (index < SUB) return { lo: index, width: 1 };
  const octave = Math.floor((index - SUB) / SUB);
  const width = 2 ** octave;
  return { lo: (SUB + ((index - SUB) % SUB)) * width, width };
}

/** Clamp a sample to a whole number of ms in the covered range. */
function normalise(ms: number): number {
  if (!(ms > 0)) return 0; // negative, zero and NaN (a clock that ran back) count as no wait
  return Math.min(Math.round(ms), 2 ** (MAX_EXP + 1) - 1);
}

export function record(h: LogHistogram, ms: number): void {
  const v = normalise(ms);
  const i = bucketOf(v);
  while (h.buckets.length <= i) h.buckets.push(0);
  h.buckets[i]++;
  if (h.count === 0 || v < h.min) h.min = v;
  if (h.count === 0 || v > h.max) h.max = v;
  h.count++;
}

/** Add `from`'s samples to `into` (histograms of two shards, or two periods). */
export function merge(into: LogHistogram, from: LogHistogram): void {
  if (from.count === 0) return;
  while (into.buckets.length < from.buckets.length) into.buckets.push(0);
  for (let i = 0; i < from.buckets.length; i++) into.buckets[i] += from.buckets[i];
  into.min = into.count === 0 ? from.min : Math.min(into.min, from.min);
  into.max = into.count === 0 ? from.max : Math.max(into.max, from.max);
  into.count += from.count;
}

/**
 * The q-quantile (0 < q ≤ 1) by nearest rank, in ms: the middle of the bucket holding the
 * ⌈q·n⌉-th smallest sample, clamped to [min, max]. 0 when empty.
 */
export function percentile(h: LogHistogram, q: number): number {
  if (h.count === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * h.count));
  let seen = 0;
  for (let i = 0; i < h.buckets.length; i++) {
    seen += h.buckets[i];
    if (seen >= rank) {
      const { lo, width } = bucketRange(i);
      return Math.min(h.max, Math.max(h.min, lo + (width - 1) / 2));
    }
  }
  return h.max;
}

/** Plain data for a checkpoint: only the non-empty buckets, as [index, count] pairs. */
export interface LogHistogramData {
  count: number;
  min: number;
  max: number;
  buckets: [number, number][];
}

export function saveHistogram(h: LogHistogram): LogHistogramData {
  const buckets: [number, number][] = [];
  for (let i = 0; i < h.buckets.length; i++) if (h.buckets[i] > 0) buckets.push([i, h.buckets[i]]);
  return { count: h.count, min: h.min, max: h.max, buckets };
}

export function loadHistogram(d: LogHistogramData): LogHistogram {
  const h = emptyHistogram();
  let total = 0;
  for (const [i, c] of d.buckets) {
    if (!Number.isInteger(i) || i < 0 || i >= BUCKETS || !(c > 0)) throw new Error(`histogram bucket [${i}, ${c}] is out of range`);
    while (h.buckets.length <= i) h.buckets.push(0);
    h.buckets[i] += c;
    total += c;
  }
  if (total !== d.count) throw new Error(`histogram buckets hold ${total} samples, count says ${d.count}`);
  h.count = d.count;
  h.min = d.min;
  h.max = d.max;
  return h;
}
