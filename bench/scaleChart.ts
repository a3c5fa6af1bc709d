/**
 * A small-multiples line chart as a standalone SVG string, for `bench/scale.ts`: one panel per
 * curve, log-scale x (sizes grow by decades), linear y from zero (so a flat cost looks flat and a
 * doubling looks like one). Hand-written to keep the benchmarks free of chart dependencies.
 */

export interface Series {
  name: string;
  /** [x, y]; points with a non-finite or non-positive x are left out (log scale). */
  points: [number, number][];
  color: string;
  marker: 'circle' | 'square' | 'triangle' | 'diamond';
  dashed?: boolean;
  /** Write each point's value beside it. */
  labels?: boolean;
}

export interface Panel {
  /** Stable id (the smoke test looks panels up by it). */
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** A horizontal reference line, e.g. a target. */
  reference?: { y: number; label: string };
  /** Formats y tick labels and point labels. Default {@link short}. */
  yFormat?: (y: number) => string;
}

export interface ChartOptions {
  title: string;
  /** Lines under the title: the machine, the command. */
  subtitle: string[];
  panels: Panel[];
  columns?: number;
}

/** Colour-blind-safe (Okabe-Ito) colours, distinct from each other in grey too. */
export const COLORS = { blue: '#0072B2', vermillion: '#D55E00', green: '#009E73', purple: '#CC79A7', orange: '#E69F00', sky: '#56B4E9' } as const;

const PANEL_W = 520;
const PANEL_H = 350;
const MARGIN = { left: 74, right: 22, top: 92, bottom: 52 };
const FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\"";

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** 1,500 → "1.5k", 2,000,000 → "2M", 0.25 → "0.25": tick and point labels. */
export function short(x: number): string {
  const a = Math.abs(x);
  const trim = (v: number, unit: string): string => `${Number(v.toPrecision(3))}${unit}`;
  if (a >= 1e9) return trim(x / 1e9, 'G');
  if (a >= 1e6) return trim(x / 1e6, 'M');
  if (a >= 1e3) return trim(x / 1e3, 'k');
  if (a === 0) return '0';
  return `${Number(x.toPrecision(a >= 1 ? 3 : 2))}`;
}

/** A round axis maximum at or above `max` (1, 2, 2.5, 5 × 10^k) and its tick step (5 steps or fewer). */
function niceAxis(max: number): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.2 };
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

function marker(kind: Series['marker'], x: number, y: number, color: string): string {
  const f = `fill="${color}" stroke="#fff" stroke-width="1"`;
  switch (kind) {
    case 'circle': return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="4.2" ${f}/>`;
    case 'square': return `<rect x="${(x - 3.8).toFixed(1)}" y="${(y - 3.8).toFixed(1)}" width="7.6" height="7.6" ${f}/>`;
    case 'triangle': return `<path d="M${x.toFixed(1)},${(y - 5).toFixed(1)} L${(x + 4.6).toFixed(1)},${(y + 3.6).toFixed(1)} L${(x - 4.6).toFixed(1)},${(y + 3.6).toFixed(1)} Z" ${f}/>`;
    case 'diamond': return `<path d="M${x.toFixed(1)},${(y - 5).toFixed(1)} L${(x + 5).toFixed(1)},${y.toFixed(1)} L${x.toFixed(1)},${(y + 5).toFixed(1)} L${(x - 5).toFixed(1)},${y.toFixed(1)} Z" ${f}/>`;
  }
}

function renderPanel(p: Panel, ox: number, oy: number): string {
  const fmt = p.yFormat ?? short;
  const pw = PANEL_W - MARGIN.left - MARGIN.right;
  const ph = PANEL_H - MARGIN.top - MARGIN.bottom;
  const series = p.series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => x > 0 && Number.isFinite(x) && Number.isFinite(y)) }));
  const xs = series.flatMap((s) => s.points.map(([x]) => x));
  const ys = series.flatMap((s) => s.points.map(([, y]) => y));
  // Whole decades either side of the data; a single size gets a decade of room on each side.
  // (A hair of tolerance: a log of 1,000,003 events is drawn on a 1M axis end, not given a decade of its own.)
  let lo = xs.length ? Math.floor(Math.log10(Math.min(...xs)) + 0.01) : 0;
  let hi = xs.length ? Math.ceil(Math.log10(Math.max(...xs)) - 0.01) : 1;
  if (hi === lo) { lo -= 1; hi += 1; }
  const { top, step } = niceAxis(Math.max(...ys, p.reference?.y ?? 0, 0) * 1.08);
  const X = (x: number): number => ox + MARGIN.left + ((Math.log10(x) - lo) / (hi - lo)) * pw;
  const Y = (y: number): number => oy + MARGIN.top + ph - (y / top) * ph;
  const out: string[] = [`<g id="panel-${escapeXml(p.id)}" class="panel">`];
  out.push(`<rect x="${ox + 0.5}" y="${oy + 0.5}" width="${PANEL_W - 1}" height="${PANEL_H - 1}" fill="#fff" stroke="#ddd"/>`);
  out.push(`<text x="${ox + 12}" y="${oy + 22}" ${FONT} font-size="15" font-weight="bold" fill="#222">${escapeXml(p.title)}</text>`);

  // Legend: entries left to right under the title, wrapping to a second row when they do not fit.
  let lx = ox + 12;
  let ly = oy + 42;
  for (const s of series) {
    const w = 34 + s.name.length * 6.6;
    if (lx + w > ox + PANEL_W - 8) { lx = ox + 12; ly += 17; }
    out.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    out.push(marker(s.marker, lx + 11, ly - 4, s.color));
    out.push(`<text x="${lx + 28}" y="${ly}" ${FONT} font-size="11.5" fill="#333">${escapeXml(s.name)}</text>`);
    lx += w;
  }

  // Grid and y ticks.
  const left = ox + MARGIN.left;
  const right = ox + MARGIN.left + pw;
  for (let v = 0; v <= top + step / 2; v += step) {
    const y = Y(v).toFixed(1);
    out.push(`<line x1="${left}" y1="${y}" x2="${right}" y2="${y}" stroke="${v === 0 ? '#888' : '#e6e6e6'}" stroke-width="1"/>`);
    out.push(`<text x="${left - 7}" y="${(Y(v) + 4).toFixed(1)}" ${FONT} font-size="11" fill="#444" text-anchor="end">${escapeXml(fmt(v))}</text>`);
  }
  // x ticks: a labelled line per decade, unlabelled minor ticks at 2-9 × 10^k.
  for (let d = lo; d <= hi; d++) {
    const x = X(10 ** d).toFixed(1);
    out.push(`<line x1="${x}" y1="${Y(top).toFixed(1)}" x2="${x}" y2="${(Y(0) + 5).toFixed(1)}" stroke="${d === lo ? '#888' : '#e6e6e6'}" stroke-width="1"/>`);
    out.push(`<text x="${x}" y="${(Y(0) + 19).toFixed(1)}" ${FONT} font-size="11" fill="#444" text-anchor="middle">${escapeXml(short(10 ** d))}</text>`);
    if (d < hi) {
      for (let m = 2; m <= 9; m++) {
        const mx = X(m * 10 ** d).toFixed(1);
        out.push(`<line x1="${mx}" y1="${Y(0).toFixed(1)}" x2="${mx}" y2="${(Y(0) + 3).toFixed(1)}" stroke="#888" stroke-width="1"/>`);
      }
    }
  }
  out.push(`<text x="${left + pw / 2}" y="${oy + PANEL_H - 12}" ${FONT} font-size="12" fill="#222" text-anchor="middle">${escapeXml(p.xLabel)}</text>`);
  const cy = oy + MARGIN.top + ph / 2;
  out.push(`<text x="${ox + 16}" y="${cy}" ${FONT} font-size="12" fill="#222" text-anchor="middle" transform="rotate(-90 ${ox + 16} ${cy})">${escapeXml(p.yLabel)}</text>`);

  if (p.reference) {
    const y = Y(p.reference.y).toFixed(1);
    out.push(`<line x1="${left}" y1="${y}" x2="${right}" y2="${y}" stroke="#b00" stroke-width="1.2" stroke-dasharray="2 3"/>`);
    out.push(`<text x="${right - 4}" y="${(Y(p.reference.y) - 5).toFixed(1)}" ${FONT} font-size="11" fill="#b00" text-anchor="end">${escapeXml(p.reference.label)}</text>`);
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    const d = pts.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    pts.forEach(([x, y], i) => {
      out.push(marker(s.marker, X(x), Y(y), s.color));
      if (s.labels) {
        // The last label goes left of its point, so it stays inside the panel.
        const last = i === pts.length - 1 && pts.length > 1;
        out.push(`<text x="${(X(x) + (last ? -6 : 6)).toFixed(1)}" y="${(Y(y) - 7).toFixed(1)}" ${FONT} font-size="10.5" fill="${s.color}"${last ? ' text-anchor="end"' : ''}>${escapeXml(fmt(y))}</text>`);
      }
    });
  }
  out.push('</g>');
  return out.join('\n');
}

/** Lines longer than `width` characters broken at spaces: SVG text does not wrap. */
function wrap(lines: string[], width: number): string[] {
  const out: string[] = [];
  for (let line of lines) {
    while (line.length > width) {
      const cut = line.lastIndexOf(' ', width);
      const at = cut > 0 ? cut : width;
      out.push(line.slice(0, at));
      line = `    ${line.slice(at).trimStart()}`;
    }
    out.push(line);
  }
  return out;
}

export function renderChart(o: ChartOptions): string {
  const columns = o.columns ?? 2;
  const subtitle = wrap(o.subtitle, Math.floor((columns * PANEL_W) / 6.4));
  const rows = Math.ceil(o.panels.length / columns);
  const head = 40 + 16 * subtitle.length;
  const gap = 14;
  const width = columns * PANEL_W + (columns + 1) * gap;
  const height = head + rows * PANEL_H + (rows + 1) * gap;
  const out = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    `<title>${escapeXml(o.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#f7f7f7"/>`,
    `<text x="${gap}" y="28" ${FONT} font-size="19" font-weight="bold" fill="#111">${escapeXml(o.title)}</text>`,
  ];
  subtitle.forEach((line, i) => {
    out.push(`<text x="${gap}" y="${48 + 16 * i}" ${FONT} font-size="11.5" fill="#555">${escapeXml(line)}</text>`);
  });
  o.panels.forEach((p, i) => {
    const col = i % columns;
    const row = Math.floor(i / columns);
    out.push(renderPanel(p, gap + col * (PANEL_W + gap), head + gap + row * (PANEL_H + gap)));
  });
  out.push('</svg>', '');
  return out.join('\n');
}
