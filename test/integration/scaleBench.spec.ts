/**
 * Smoke test of `npm run bench:scale` at its smallest points: the built benchmark runs end to end
 * (child processes, SQLite files, chart), writes a well-formed SVG with every panel, measures
 * finite positive values, and leaves no SQLite files behind. The real sizes are for the benchmark.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ScaleResults } from '../../bench/scale.js';

const RUN = resolve('dist/bench/run.js');
const PANELS = ['cost-vs-depth', 'cost-vs-agents', 'rss-vs-depth', 'rss-vs-agents', 'replay-vs-history', 'restart-vs-history'];

/**
 * Enough of an XML parser to say the file is well-formed: every tag closed in order, attributes
 * quoted and not repeated, no stray `<` or `&`. Returns the element names with their `id`s, or
 * throws at the first fault. (No XML library is a dependency of this project.)
 */
function parseXml(text: string): { name: string; id?: string }[] {
  const elements: { name: string; id?: string }[] = [];
  const open: string[] = [];
  const token = /<\?[\s\S]*?\?>|<!--[\s\S]*?-->|<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*"[^"<]*")*)\s*(\/?)>|([^<]+)/y;
  const entity = /&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/;
  let seenRoot = false;
  while (token.lastIndex < text.length) {
    const at = token.lastIndex;
    const m = token.exec(text);
    if (!m) throw new Error(`not well-formed at offset ${at}: ${JSON.stringify(text.slice(at, at + 40))}`);
    if (m[5] !== undefined) {
      if (entity.test(m[5])) throw new Error(`bare & in text at offset ${at}`);
      if (open.length === 0 && m[5].trim()) throw new Error(`text outside the root element at offset ${at}`);
      continue;
    }
    if (m[2] === undefined) continue; // declaration or comment
    const [, closing, name, attrs, selfClosing] = m;
    if (closing) {
      if (open.pop() !== name) throw new Error(`</${name}> at offset ${at} closes nothing open`);
      continue;
    }
    if (open.length === 0 && seenRoot) throw new Error(`a second root element <${name}> at offset ${at}`);
    seenRoot = true;
    const names = [...attrs.matchAll(/([\w:.-]+)\s*=\s*"([^"]*)"/g)];
    const keys = names.map((a) => a[1]);
    if (new Set(keys).size !== keys.length) throw new Error(`<${name}> at offset ${at} repeats an attribute`);
    for (const a of names) if (entity.test(a[2])) throw new Error(`bare & in an attribute of <${name}> at offset ${at}`);
    const id = names.find((a) => a[1] === 'id')?.[2];
    elements.push(id === undefined ? { name } : { name, id });
    if (!selfClosing) open.push(name);
  }
  if (open.length > 0) throw new Error(`unclosed <${open.join('>, <')}>`);
  return elements;
}

/** Run the built benchmark runner to completion: its exit code and everything it printed. */
function run(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((res) => {
    execFile(process.execPath, ['--expose-gc', RUN, ...args], { maxBuffer: 64 * 2 ** 20 }, (err, stdout, stderr) => {
      res({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

/** Every number in the object (recursively), with its path. */
function numbers(x: unknown, path = ''): [string, number][] {
  if (typeof x === 'number') return [[path, x]];
  if (Array.isArray(x)) return x.flatMap((v, i) => numbers(v, `${path}[${i}]`));
  if (x && typeof x === 'object') return Object.entries(x).flatMap(([k, v]) => numbers(v, path ? `${path}.${k}` : k));
  return [];
}

describe('bench:scale at its smallest points', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-scale-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a well-formed chart with every panel and measures finite positive values', async () => {
    if (!existsSync(RUN)) throw new Error(`${RUN} is missing: run 'npm run build' (npm test does) first`);
    const svgPath = join(dir, 'scale.svg');
    const jsonPath = join(dir, 'scale.json');
    const t0 = Date.now();
    const { code, output } = await run([
      'scale', '--depths', '1k', '--fixed-agents', '10', '--agents', '10', '--fixed-depth', '1k', '--histories', '10k',
      '--warmup-ms', '50', '--measure-ms', '200', '--out', svgPath, '--json', jsonPath, '--tmp', dir,
    ]);
    expect(code, output).toBe(0);
    expect(Date.now() - t0).toBeLessThan(20_000);
    expect(output).toContain('| queued | agents (slots) |');
    expect(output).toContain('| history (events) |');

    const elements = parseXml(readFileSync(svgPath, 'utf8'));
    expect(elements[0].name).toBe('svg');
    const panelIds = elements.filter((e) => e.name === 'g' && e.id?.startsWith('panel-')).map((e) => e.id);
    expect(panelIds).toEqual(PANELS.map((p) => `panel-${p}`));
    // Each panel has drawn its lines (one path per series with data).
    expect(elements.filter((e) => e.name === 'path').length).toBeGreaterThanOrEqual(14);

    const r = JSON.parse(readFileSync(jsonPath, 'utf8')) as ScaleResults;
    expect(r.byDepth).toHaveLength(1);
    expect(r.byAgents).toHaveLength(1);
    expect(r.histories).toHaveLength(1);
    expect(r.skipped).toEqual([]);
    const measured = [
      ...numbers({ byDepth: r.byDepth, byAgents: r.byAgents }),
      ...numbers(r.histories.map((h) => ({ gen: h.gen, rebuild: h.replay.rebuild, restart: h.restart }))),
      // Legitimately 0: idle agents and deferrals (every agent busy), a snapshot (10k events is shorter than the tail).
    ].filter(([path]) => !/(freeAgents|deferredShare|snapshotVersion|snapshotBytes)$/.test(path));
    expect(measured.length).toBeGreaterThan(30);
    for (const [path, v] of measured) expect(Number.isFinite(v) && v > 0, `${path} = ${v}`).toBe(true);
    // 10k events is shorter than the 50k tail: no snapshot, the restart replays the whole log.
    expect(r.histories[0].replay.steps.tailEvents).toBe(r.histories[0].gen.events);

    // The SQLite files are gone; only what this test wrote is left.
    expect(readdirSync(dir).sort()).toEqual(['scale.json', 'scale.svg']);
  }, 60_000);
});
