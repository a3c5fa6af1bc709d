/**
 * The bad-input campaign (issue "Proof", item 4): a seeded generator of junk for every input
 * surface — every HTTP route, and raw records on `<prefix>.tasks` and `<prefix>.agents` — with
 * what each case expects back, and the runners that send the cases to a real server and judge
 * the answers. Shared by test/integration/badInput.int.spec.ts (1,000 cases a surface) and
 * bench/badInput.ts (10,000). Framework-free: no vitest here.
 *
 * The cases refer to a small world the runners set up first ({@link prepareWorld}): an agent
 * that runs a few tasks (so completions can be valid, duplicate or stale), an agent that left,
 * parked tasks to cancel, accepted tasks with awkward ids, and a tenant already at its quota.
 * A second server with a tiny shedding watermark, already overloaded, answers the shed cases.
 */
import http from 'node:http';
import kafkajs, { type Consumer, type Kafka, type Producer } from 'kafkajs';
import { prng } from '../../bench/support.js';

// --- contract ------------------------------------------------------------------------------------

export const TASK_STATUSES: readonly string[] = ['queued', 'blocked', 'assigned', 'succeeded', 'failed', 'cancelled', 'shed', 'rejected', 'dead-lettered'];
export const BODY_LIMIT = 1024 * 1024;
/** Nesting the server accepts (src/adapters/http/app.ts MAX_JSON_DEPTH). */
export const MAX_DEPTH = 128;

/** The policy of the main server: one tenant with room for a single waiting task. */
export const CAMPAIGN_POLICY = { quotas: { 'fx-quota': { maxQueued: 1 } } };
/** The policy of the shed server: low work is shed at 2 waiting, normal at 2.5, high at 3. */
export const SHED_POLICY = { shedding: { highWatermark: 2 } };

// --- the world the cases refer to --------------------------------------------------------------

export interface World {
  /** Alive, capabilities [fx-cap]; runs `live` (attempt 1), has completed `done`. */
  worker: string;
  /** Registered, then left: its heartbeat is refused (409). */
  left: string;
  /** Assigned to `worker` at attempt 1: each one may be completed (succeeded) once by the cases. */
  live: string[];
  /** Completed (succeeded) by `worker` at attempt 1: sending that again is a duplicate (200). */
  done: string[];
  /** Queued for good (they need a capability no agent has): cancel targets. */
  parked: string[];
  /** Accepted ids that are awkward in a URL (slash, percent, spaces, emoji, 256 characters…); parked too. */
  weird: string[];
  /** At its quota (maxQueued 1, one task waiting). */
  quotaTenant: string;
  /** The agent and capability of the task sent after all the junk on Kafka. */
  finalAgent: string;
  finalCap: string;
}

export function makeWorld(cases: number): World {
  const live = Math.max(8, Math.ceil(cases * 0.03));
  const small = Math.max(6, Math.ceil(cases * 0.01));
  return {
    worker: 'fx-worker',
    left: 'fx-left',
    live: Array.from({ length: live }, (_, i) => `fx-live-${i}`),
    done: Array.from({ length: small }, (_, i) => `fx-done-${i}`),
    parked: Array.from({ length: small }, (_, i) => `fx-parked-${i}`),
    weird: ['fx/slash', 'fx%2Fpercent', 'fx ?#&=+', 'fx😀', '..', 'fx\u0000nul', 'w'.repeat(256), '😀'.repeat(128), '__proto__', 'constructor'],
    quotaTenant: 'fx-quota',
    finalAgent: 'fx-final',
    finalCap: 'fx-final-cap',
  };
}

// --- a seeded source of junk ---------------------------------------------------------------------

class Junk {
  private readonly r: () => number;
  constructor(seed: number) { this.r = prng(seed); }
  float(): number { return this.r(); }
  int(n: number): number { return Math.floor(this.r() * n); }
  chance(p: number): boolean { return this.r() < p; }
  pick<T>(xs: readonly T[]): T { return xs[this.int(xs.length)]; }
  word(min = 1, max = 12): string {
    const n = min + this.int(max - min + 1);
    let s = '';
    for (let i = 0; i < n; i++) s += 'abcdefghijklmnopqrstuvwxyz0123456789-_'[this.int(38)];
    return s;
  }
  /** Random JSON: objects, arrays, strings, numbers, with keys that look like prototype parts (never `__proto__`). */
  json(depth = 3): unknown {
    const kind = depth <= 0 ? this.int(4) : this.int(6);
    switch (kind) {
      case 0: return this.chance(0.5) ? this.word(0, 20) : this.pick(['', '\u0000', '😀', 'NaN', 'Infinity', '-0', '\ud800', '<script>', "'; DROP TABLE events; --"]);
      case 1: return this.pick([0, -1, 1.5, -0, 2 ** 53, -(2 ** 63), 1e308, 5e-324, Number.MAX_SAFE_INTEGER]);
      case 2: return this.pick([true, false, null]);
      case 3: return this.word(0, 8);
      case 4: return Array.from({ length: this.int(4) }, () => this.json(depth - 1));
      default: {
        const o: Record<string, unknown> = {};
        for (let i = this.int(4); i > 0; i--) {
          const k = this.pick(['a', 'constructor', 'prototype', 'toString', 'valueOf', 'polluted', 'hasOwnProperty', '', this.word()]);
          // A constructor holding a prototype is the shape the server refuses: keep that one for the bad cases.
          o[k] = k === 'constructor' ? this.word() : this.json(depth - 1);
        }
        return o;
      }
    }
  }
}

const SOURCES = ['user', 'cron', 'webhook', 'subagent', 'hitl', 'api'] as const;
const PRIORITIES = ['critical', 'high', 'normal', 'low'] as const;
/** Valid names that look like prototype parts or are otherwise awkward. */
const ODD_NAMES = ['constructor', '__proto__', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', ' ', '\u0000', 'ünïcödé', '😀', '../..', 'a/b', 'n'.repeat(256)];
const TENANTS = ['acme', 'globex', 'initech', 'umbrella', ...ODD_NAMES];
const CAPS = ['gpu', 'k8s-mcp', 'aws-mcp', 'browser', 'fx-none', 'constructor', '__proto__'];
const GOOD_DATES = ['2026-12-01T15:00:00Z', '2031-01-01T00:00:00.000+02:00', '2020-01-01T00:00:00Z', '2026-12-01T15:00:00.123456Z', '0000-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z'];
const BAD_DATES = ['2026-13-01T00:00:00Z', '2026-02-30T00:00:00Z', '2026-12-01', '2026-12-01T15:00:00', '2026-12-01 15:00:00Z', '2026-12-01T25:00:00Z',
  '2026-12-01T15:00Z', '+275760-09-13T00:00:00Z', '2026-12-01T15:00:00+99:99', 'NaN', 'Infinity', '-Infinity', '', 'tomorrow', '2026-12-01T15:00:00z'];
const NAN_LIKE = ['NaN', 'Infinity', '-Infinity', '1e309', '0x10', '1_000', ' 1', '1', '-0', 'null', 'undefined'];
const BAD_NUMBERS = [-1, 0, 1.5, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, -0.5];
/** Raw number tokens that are not JSON. */
const NOT_JSON_NUMBERS = ['NaN', 'Infinity', '-Infinity', '01', '1.', '.5', '+1', '0x10', '1e', '--1'];
/** Number tokens that are JSON but out of range: they parse to ±Infinity. */
const HUGE_NUMBER_TOKENS = ['1e309', '-1e309', '123456789e999'];
const NOT_JSON = ['{"tenant":"acme",', '{tenant:"acme"}', "{'tenant':'acme'}", '{"tenant":"acme",}', '[1,2,', '{"a":1}{"b":2}',
  '{"a":1 /* c */}', '{"a":"\\x41"}', '{"a":"\u0001"}', 'nul', 'tru', '{"a":01}', '}', '{"a":"unterminated}', '\u0000'];
const NOT_OBJECTS = ['null', '[]', '"text"', '42', 'true', '[{"tenant":"acme","source":"api","type":"t"}]', '0', '-0', '""'];
/** Byte sequences that are not UTF-8: a lone continuation, overlong, a surrogate, truncated, out of range. */
const BAD_UTF8: readonly number[][] = [[0xff], [0xfe, 0xff], [0x80], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xc3]];
/** As they appear in the query string (already encoded). */
const BAD_WAITS = ['abc', '-1', '1.5', '1e3', '', '%201', '0x10', 'NaN', 'Infinity', '99999999999999999999', '%EF%BC%91', '1%3B2', '%zz', '1&waitMs=2', '+5', '%D9%A1', '5%00', '__proto__'];

const enc = encodeURIComponent;
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const text = (s: string): Buffer => Buffer.from(s, 'utf8');
const KB = 1024;

/** `{"a":` … 1 … `}` or `[` … `]`, n levels, without recursion. */
function nested(n: number, arrays: boolean): string {
  return arrays ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n);
}

/** `{"a":{"a":…{"<key>":{"polluted":"yes"}}}}` with the key at `level` (0 = this object). */
function protoAt(level: number, key: '__proto__' | 'constructor'): string {
  const inner = key === '__proto__' ? '{"__proto__":{"polluted":"yes"}}' : '{"constructor":{"prototype":{"polluted":"yes"}}}';
  return '{"a":'.repeat(level) + inner + '}'.repeat(level);
}

/** The JSON text of `v` with `extra` (raw JSON members) added to its top-level object. */
function withMembers(v: Record<string, unknown>, extra: string): string {
  const s = JSON.stringify(v);
  return s === '{}' ? `{${extra}}` : `${s.slice(0, -1)},${extra}}`;
}

// --- HTTP cases --------------------------------------------------------------------------------

export type HttpRoute =
  | 'POST /v1/tasks' | 'GET /v1/tasks/:id' | 'POST /v1/tasks/:id/cancel' | 'POST /v1/tasks/:id/complete'
  | 'POST /v1/agents/:id/ready' | 'POST /v1/agents/:id/heartbeat' | 'POST /v1/agents/:id/leave'
  | 'GET /v1/agents/:id/assignments' | 'other';

export interface HttpExpect {
  /** The acceptable statuses. */
  status: readonly number[];
  /** For a 400: a field path one of the issues must name (`tenant`, `requires.0`, `(root)`, `waitMs`, …). */
  issue?: string;
  /** The `error` code the body must carry (validation, bad-request, not-found, stale-attempt, quota, shed, too-large…). */
  error?: string;
  /** For a 202: the id the reply must carry (else the reply's id is taken); the task is looked up afterwards. */
  id?: string;
}

export interface HttpCase {
  n: number;
  route: HttpRoute;
  /** What the case is, e.g. `submit/wrong-type`. */
  kind: string;
  /** `shed`: the server that is overloaded on purpose. */
  server: 'main' | 'shed';
  method: string;
  /** Already encoded. */
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  expect: HttpExpect;
}

interface Ctx { world: World; n: number; uid: (p: string) => string; nextLive: () => string | undefined }

type Maker = (j: Junk, c: Ctx) => Omit<HttpCase, 'n' | 'route' | 'server'> & { server?: 'main' | 'shed' };

const JSON_CT = { 'content-type': 'application/json' };
const post = (path: string, body: Buffer | undefined, expect: HttpExpect, kind: string, headers: Record<string, string> = JSON_CT) =>
  ({ kind, method: 'POST', path, headers: body === undefined ? {} : headers, body, expect });
const bad = (issue?: string, error = 'validation'): HttpExpect => ({ status: [400], issue, error });
const BODY_ERR = (): HttpExpect => bad('(root)', 'bad-request');

/** A valid submission: every optional field sometimes, with odd-but-valid values. */
function validTask(j: Junk, c: Ctx, o: { id?: string | null; tenant?: string; priority?: string | null; noDeps?: boolean } = {}): Record<string, unknown> {
  const t: Record<string, unknown> = {};
  if (o.id !== null && (o.id !== undefined || j.chance(0.5))) t.id = o.id ?? (j.chance(0.85) ? c.uid('v') : `${c.uid('odd')}-${j.pick(['/', ' ', '😀', '%2F', '?', '#', '..', '\u0000'])}`);
  t.tenant = o.tenant ?? j.pick(TENANTS);
  t.source = j.pick(SOURCES);
  t.type = j.chance(0.8) ? j.pick(['summarise', 'deploy', 'triage', 'review']) : j.pick(ODD_NAMES);
  if (o.priority !== null && (o.priority !== undefined || j.chance(0.5))) t.priority = o.priority ?? j.pick(PRIORITIES);
  if (j.chance(0.4)) t.requires = Array.from({ length: j.int(4) }, () => j.pick(CAPS));
  if (j.chance(0.2)) t.sessionRef = j.pick(['incident-7', 'session-a', ...ODD_NAMES]);
  if (j.chance(0.2)) t.affinity = j.pick(['soft', 'hard']);
  if (j.chance(0.2)) t.deadline = j.pick(GOOD_DATES);
  if (j.chance(0.2)) t.estimatedDurationMs = j.pick([1, 1000, 1_800_000, Number.MAX_SAFE_INTEGER]);
  if (!o.noDeps && j.chance(0.15)) t.dependsOn = Array.from({ length: 1 + j.int(2) }, () => j.pick([...c.world.done, ...c.world.parked, ...c.world.live]));
  if (j.chance(0.5)) t.payload = j.json();
  return t;
}

const STRING_FIELDS = ['id', 'tenant', 'type', 'sessionRef'] as const;
const WRONG_TYPES: Record<string, unknown[]> = {
  id: [1, true, null, [], {}, ['a']],
  tenant: [1, false, null, [], { name: 'acme' }, 1e308],
  source: [1, null, ['api'], {}, true],
  type: [0, null, [], {}],
  priority: [1, null, ['high'], {}, true],
  requires: ['gpu', 1, null, {}, [1], [null], [['gpu']], [{}]],
  sessionRef: [1, null, [], {}],
  affinity: [true, null, 1, ['soft']],
  deadline: [1_700_000_000_000, null, {}, [], true],
  estimatedDurationMs: ['1000', null, [], {}, true, '1e3'],
  dependsOn: ['fx-done-0', 1, null, [1], {}],
};

function submitMakers(): [number, Maker][] {
  const path = '/v1/tasks';
  return [
    [14, (j, c) => { const t = validTask(j, c); return post(path, json(t), { status: [202], id: t.id as string | undefined }, 'submit/valid'); }],
    [2, (j, c) => { const id = j.pick([...c.world.live, ...c.world.done, ...c.world.parked, ...c.world.weird]); return post(path, json(validTask(j, c, { id })), { status: [202], id }, 'submit/resubmit-known-id'); }],
    [1, (j, c) => {
      // Duplicate keys: JSON.parse keeps the last one.
      const t = validTask(j, c, { id: c.uid('dupkey') });
      return post(path, text(withMembers(t, '"tenant":"acme"')), { status: [202], id: t.id as string }, 'submit/duplicate-keys');
    }],
    [1, (j, c) => {
      const t = validTask(j, c, { id: c.uid('deep-ok') });
      // The body is level 1, payload level 2: MAX_DEPTH - 1 array levels inside payload is the deepest accepted.
      return post(path, text(withMembers({ ...t, payload: undefined }, `"payload":${nested(MAX_DEPTH - 1, j.chance(0.5))}`)), { status: [202], id: t.id as string }, 'submit/deep-at-limit');
    }],
    [1, (j, c) => {
      const t = validTask(j, c, { id: c.uid('big') });
      return post(path, json({ ...t, payload: { blob: 'x'.repeat(300 * KB + j.int(KB)) } }), { status: [202], id: t.id as string }, 'submit/300KB-payload');
    }],
    [0.3, (j, c) => {
      // Exactly the body limit: accepted.
      const t = { id: c.uid('limit'), tenant: 'acme', source: 'api', type: 'summarise', payload: '' };
      const pad = BODY_LIMIT - json(t).length;
      return post(path, json({ ...t, payload: 'p'.repeat(pad) }), { status: [202], id: t.id }, 'submit/exactly-1MiB');
    }],
    [4, (j, c) => {
      const field = j.pick(Object.keys(WRONG_TYPES));
      return post(path, json({ ...validTask(j, c, { id: null }), [field]: j.pick(WRONG_TYPES[field]) }), bad(field), 'submit/wrong-type');
    }],
    [3, (j, c) => {
      const t = validTask(j, c);
      const field = j.pick(['tenant', 'source', 'type']);
      delete t[field];
      return post(path, json(t), bad(field), 'submit/missing-field');
    }],
    [3, (j, c) => {
      const field = j.pick(['bogus', 'Tenant', 'constructor', 'prototype', 'toString', 'valueOf', 'isAdmin', 'payload ', 'polluted', '']);
      return post(path, json({ ...validTask(j, c, { id: null }), [field]: j.pick([1, 'x', null, { polluted: true }, []]) }), bad(field), 'submit/unknown-field');
    }],
    [3, (j, c) => {
      const [field, values] = j.pick([['source', ['USER', 'robot', '', 'api ', 'cron\u0000', '*']], ['priority', ['urgent', 'CRITICAL', '0', '', 'p1']], ['affinity', ['sticky', 'SOFT', '', 'none']]] as const);
      return post(path, json({ ...validTask(j, c, { id: null }), [field]: j.pick(values) }), bad(field), 'submit/bad-enum');
    }],
    [3, (j, c) => post(path, json({ ...validTask(j, c, { id: null }), deadline: j.pick(BAD_DATES) }), bad('deadline'), 'submit/bad-date')],
    [2, (j, c) => post(path, json({ ...validTask(j, c, { id: null }), estimatedDurationMs: j.pick(NAN_LIKE) }), bad('estimatedDurationMs'), 'submit/nan-like-string')],
    [2, (j, c) => post(path, json({ ...validTask(j, c, { id: null }), estimatedDurationMs: j.pick(BAD_NUMBERS) }), bad('estimatedDurationMs'), 'submit/bad-number')],
    [1, (j, c) => post(path, text(withMembers({ ...validTask(j, c, { id: null }), estimatedDurationMs: undefined }, `"estimatedDurationMs":${j.pick(HUGE_NUMBER_TOKENS)}`)), bad('estimatedDurationMs'), 'submit/number-overflows-to-infinity')],
    [1, (j, c) => post(path, text(withMembers({ ...validTask(j, c, { id: null }), estimatedDurationMs: undefined }, `"estimatedDurationMs":${j.pick(NOT_JSON_NUMBERS)}`)), BODY_ERR(), 'submit/not-json-number')],
    [2, (j, c) => {
      const field = j.pick(STRING_FIELDS);
      return post(path, json({ ...validTask(j, c, { id: null }), [field]: j.pick(['', 's'.repeat(257), 'h'.repeat(300 * KB)]) }), bad(field), 'submit/bad-length-string');
    }],
    [1, (j, c) => {
      const field = j.pick(['requires', 'dependsOn']);
      return post(path, json({ ...validTask(j, c, { id: null }), [field]: [j.pick(['', 'r'.repeat(257), 'h'.repeat(300 * KB)])] }), bad(`${field}.0`), 'submit/bad-list-item');
    }],
    [1, (j, c) => {
      const [field, n] = j.pick([['requires', 65], ['dependsOn', 1001]] as const);
      return post(path, json({ ...validTask(j, c, { id: null }), [field]: Array.from({ length: n }, (_, i) => `x${i}`) }), bad(field), 'submit/list-too-long');
    }],
    [1.5, (j, c) => {
      const ghost = c.uid('ghost');
      return post(path, json({ ...validTask(j, c, { id: null }), dependsOn: [...(j.chance(0.5) ? [c.world.done[0]] : []), ghost] }), bad('dependsOn'), 'submit/unknown-dependency');
    }],
    [2, (j, c) => {
      const arrays = j.chance(0.5);
      // 3000 passed the validator and stopped the dispatcher in the log append; 5000 overflowed the validator.
      const depth = j.pick([MAX_DEPTH, MAX_DEPTH + 1, 1000, 3000, 5000, 20_000]);
      return post(path, text(withMembers({ ...validTask(j, c, { id: null }), payload: undefined }, `"payload":${nested(depth, arrays)}`)), bad('payload'), 'submit/deep-payload');
    }],
    [0.5, (j) => post(path, text(nested(5000, j.chance(0.5))), bad(), 'submit/deep-body')],
    [2, (j, c) => {
      const t = JSON.stringify(validTask(j, c, { id: null }));
      const at = t.indexOf('"', t.indexOf(':') + 1) + 1;
      return post(path, Buffer.concat([text(t.slice(0, at)), Buffer.from(j.pick(BAD_UTF8)), text(t.slice(at))]), BODY_ERR(), 'submit/invalid-utf8');
    }],
    [3, (j, c) => {
      // A __proto__ key, or a constructor.prototype, at the top or deep inside the payload.
      const key = j.pick(['__proto__', 'constructor'] as const);
      const v = validTask(j, c, { id: null });
      const raw = j.chance(0.4) ? (key === '__proto__' ? withMembers(v, '"__proto__":{"polluted":"yes"}') : withMembers(v, '"constructor":{"prototype":{"polluted":"yes"}}'))
        : withMembers({ ...v, payload: undefined }, `"payload":${protoAt(j.int(6), key)}`);
      return post(path, text(raw), BODY_ERR(), `submit/${key}-key`);
    }],
    [0.5, (j, c) => {
      // A byte order mark before the JSON is allowed (RFC 8259 §8.1: parsers may ignore it), on Kafka too.
      const t = validTask(j, c, { id: c.uid('bom') });
      return post(path, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), json(t)]), { status: [202], id: t.id as string }, 'submit/byte-order-mark');
    }],
    [1, (j, c) => post(path, json({ ...validTask(j, c, { id: c.uid('ctor-ok') }), payload: { constructor: { name: 'x' }, prototype: { polluted: 'yes' }, toString: 1 } }), { status: [202] }, 'submit/prototype-like-keys-in-payload')],
    [1.5, (j) => post(path, j.chance(0.5) ? Buffer.alloc(0) : undefined, bad('(root)'), 'submit/empty-body')],
    [1.5, (j) => post(path, text(j.pick(NOT_OBJECTS)), bad('(root)'), 'submit/not-an-object')],
    [2, (j) => post(path, text(j.pick(NOT_JSON)), BODY_ERR(), 'submit/not-json')],
    [2, (j, c) => {
      const body = json(validTask(j, c, { id: null }));
      const [ct, status] = j.pick([
        ['text/plain', 400], ['application/xml', 415], ['application/x-www-form-urlencoded', 415], ['multipart/form-data; boundary=x', 415],
        ['application/octet-stream', 415], ['image/png', 415], ['', 415], ['json', 415],
      ] as const);
      return post(path, body, status === 400 ? bad('(root)') : { status: [415] }, 'submit/wrong-content-type', ct === '' ? {} : { 'content-type': ct });
    }],
    [0.8, (j, c) => {
      const size = j.pick([BODY_LIMIT + 1, BODY_LIMIT + 1000, 2 * BODY_LIMIT, 1.5 * BODY_LIMIT]);
      const t = { ...validTask(j, c, { id: null }), payload: '' };
      return post(path, json({ ...t, payload: 'o'.repeat(size - json(t).length) }), { status: [413], error: 'too-large' }, 'submit/over-1MiB');
    }],
    [1.5, (j, c) => post(path, json(validTask(j, c, { id: c.uid('q'), tenant: c.world.quotaTenant })), { status: [429], error: 'quota' }, 'submit/over-quota')],
    [1.5, (j, c) => ({ ...post(path, json(validTask(j, c, { tenant: 'acme', priority: j.pick(['low', 'normal', 'high', null]), noDeps: true })), { status: [429], error: 'shed' }, 'submit/shed'), server: 'shed' as const })],
  ];
}

/** An id in a URL: fixtures, unknown ones, and ones that are hard to route. */
function oddPathIds(j: Junk, c: Ctx): { raw: string; known: boolean } {
  const k = j.int(10);
  if (k < 3) return { raw: enc(j.pick(c.world.weird)), known: true };
  if (k < 5) return { raw: enc(c.uid('nobody')), known: false };
  return {
    raw: j.pick(['a%2Fb', '%2e%2e', '%2E%2E%2F%2E%2E%2Fetc%2Fpasswd', '%00', '%F0%9F%98%80', 'x'.repeat(10 * KB), '%20', 'null', 'undefined',
      '__proto__', 'constructor', 'prototype', '%5F%5Fproto%5F%5F', 'toString', 'hasOwnProperty', '%C3%A9', '*', "'", '%22%3E%3Cscript%3E']),
    known: false,
  };
}

function taskRouteMakers(): [HttpRoute, number, Maker][] {
  return [
    // GET /v1/tasks/:id
    ['GET /v1/tasks/:id', 3, (j, c) => {
      const id = j.pick([...c.world.live, ...c.world.done, ...c.world.parked, ...c.world.weird]);
      return { kind: 'get/known', method: 'GET', path: `/v1/tasks/${enc(id)}`, headers: {}, expect: { status: [200] } };
    }],
    ['GET /v1/tasks/:id', 4, (j, c) => {
      const { raw, known } = oddPathIds(j, c);
      // A name that is also a fixture (e.g. __proto__, constructor) is known.
      const isFixture = known || c.world.weird.includes(safeDecode(raw) ?? '');
      return { kind: 'get/odd-id', method: 'GET', path: `/v1/tasks/${raw}`, headers: {}, expect: isFixture ? { status: [200] } : { status: [404], error: 'not-found' } };
    }],
    ['GET /v1/tasks/:id', 1, (j) => ({
      kind: 'get/undecodable-id', method: 'GET', path: `/v1/tasks/${j.pick(['%zz', '%E0%A4%A', '%', '%C0%80', '%ED%A0%80', 'a%2'])}`, headers: {}, expect: bad('url', 'bad-request'),
    })],
    // POST /v1/tasks/:id/cancel
    ['POST /v1/tasks/:id/cancel', 2.5, (j, c) => {
      const id = j.pick([...c.world.parked, ...c.world.weird]);
      const body = j.pick([undefined, json({}), json({ reason: 'junk campaign' }), json({ reason: 'r'.repeat(1000) }), Buffer.alloc(0)]);
      return post(`/v1/tasks/${enc(id)}/cancel`, body, { status: [200] }, 'cancel/parked');
    }],
    ['POST /v1/tasks/:id/cancel', 0.5, (j, c) => post(`/v1/tasks/${enc(j.pick(c.world.done))}/cancel`, undefined, { status: [200] }, 'cancel/finished')],
    ['POST /v1/tasks/:id/cancel', 2, (j, c) => {
      const { raw } = oddPathIds(j, c);
      const fixture = c.world.weird.includes(safeDecode(raw) ?? '');
      return post(`/v1/tasks/${raw}/cancel`, undefined, fixture ? { status: [200] } : { status: [404], error: 'not-found' }, 'cancel/odd-id');
    }],
    ['POST /v1/tasks/:id/cancel', 3, (j, c) => {
      const id = j.chance(0.5) ? enc(c.uid('nobody')) : enc(j.pick(c.world.parked));
      const [body, expect] = j.pick([
        [json({ reason: 5 }), bad('reason')], [json({ reason: null }), bad('reason')], [json({ reason: 'r'.repeat(1001) }), bad('reason')],
        [json({ reason: 'h'.repeat(300 * KB) }), bad('reason')], [json({ bogus: 1 }), bad('bogus')], [json({ constructor: 1 }), bad('constructor')],
        [json([]), bad('(root)')], [json('stop'), bad('(root)')], [text('{"reason":'), BODY_ERR()], [text('{"__proto__":{"polluted":"yes"}}'), BODY_ERR()],
        [Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), BODY_ERR()], [text(`{"reason":${nested(5000, true)}}`), bad('reason')],
      ] as [Buffer, HttpExpect][]);
      return post(`/v1/tasks/${id}/cancel`, body, expect, 'cancel/bad-body');
    }],
    // POST /v1/tasks/:id/complete
    ['POST /v1/tasks/:id/complete', 2.5, (j, c) => {
      const id = c.nextLive();
      if (id === undefined) return post(`/v1/tasks/${enc(j.pick(c.world.live))}/complete`, json({ agentId: c.world.worker, attempt: 7, outcome: 'succeeded' }), { status: [409], error: 'stale-attempt' }, 'complete/stale-attempt');
      const body: Record<string, unknown> = { agentId: c.world.worker, attempt: 1, outcome: 'succeeded' };
      if (j.chance(0.5)) body.result = j.json();
      return post(`/v1/tasks/${enc(id)}/complete`, json(body), { status: [200] }, 'complete/valid');
    }],
    ['POST /v1/tasks/:id/complete', 2, (j, c) => post(`/v1/tasks/${enc(j.pick(c.world.done))}/complete`,
      json({ agentId: c.world.worker, attempt: 1, outcome: 'succeeded', ...(j.chance(0.5) ? { result: j.json() } : {}) }), { status: [200] }, 'complete/duplicate')],
    ['POST /v1/tasks/:id/complete', 3, (j, c) => {
      const [id, body] = j.pick([
        [j.pick(c.world.done), { agentId: c.world.worker, attempt: 1, outcome: 'failed', error: 'late' }],
        [j.pick(c.world.done), { agentId: c.world.worker, attempt: 2, outcome: 'succeeded' }],
        [j.pick(c.world.live), { agentId: c.world.worker, attempt: 2 + j.int(1000), outcome: 'succeeded' }],
        [j.pick(c.world.live), { agentId: 'fx-other', attempt: 1, outcome: j.pick(['succeeded', 'failed']) }],
        [j.pick(c.world.live), { agentId: c.world.left, attempt: 1, outcome: 'succeeded' }],
        [j.pick(c.world.parked), { agentId: c.world.worker, attempt: 1, outcome: 'succeeded' }],
      ] as [string, Record<string, unknown>][]);
      return post(`/v1/tasks/${enc(id)}/complete`, json(body), { status: [409], error: 'stale-attempt' }, 'complete/stale');
    }],
    ['POST /v1/tasks/:id/complete', 1.5, (j, c) => {
      const { raw } = oddPathIds(j, c);
      const fixture = c.world.weird.includes(safeDecode(raw) ?? '');
      // A weird fixture is parked (never assigned): a completion of it is stale.
      return post(`/v1/tasks/${raw}/complete`, json({ agentId: c.world.worker, attempt: 1, outcome: 'succeeded' }),
        fixture ? { status: [409], error: 'stale-attempt' } : { status: [404], error: 'not-found' }, 'complete/unknown-task');
    }],
    ['POST /v1/tasks/:id/complete', 4, (j, c) => {
      const id = j.chance(0.5) ? enc(c.uid('nobody')) : enc(j.pick(c.world.live));
      const ok = { agentId: c.world.worker, attempt: 1, outcome: 'succeeded' };
      const [body, expect] = j.pick([
        [json({ ...ok, attempt: j.pick([0, -1, 1.5, 2 ** 53, 1e308, '1', 'NaN', 'Infinity', null, [1], true]) }), bad('attempt')],
        [json({ ...ok, outcome: j.pick(['success', 'SUCCEEDED', '', 'done', null, 1]) }), bad('outcome')],
        [json({ ...ok, agentId: j.pick(['', 'a'.repeat(257), 'h'.repeat(300 * KB), 1, null, ['fx-worker']]) }), bad('agentId')],
        [json({ ...ok, error: j.pick([1, 'e'.repeat(10_001), 'h'.repeat(300 * KB), null, {}]) }), bad('error')],
        [json({ ...ok, retryable: j.pick(['yes', 'true', 1, 0, null]) }), bad('retryable')],
        [json({ attempt: 1, outcome: 'succeeded' }), bad('agentId')],
        [json({ agentId: c.world.worker, outcome: 'succeeded' }), bad('attempt')],
        [json({ ...ok, taskId: 'x' }), bad('taskId')], [json({ ...ok, constructor: 'x' }), bad('constructor')], [json({ ...ok, kind: 'complete' }), bad('kind')],
        [text(withMembers(ok, `"result":${nested(j.pick([MAX_DEPTH, 5000]), j.chance(0.5))}`)), bad('result')],
        [text(withMembers(ok, `"result":${protoAt(j.int(4), j.pick(['__proto__', 'constructor'] as const))}`)), BODY_ERR()],
        [text(withMembers(ok, '"attempt2":NaN')), BODY_ERR()], [text(j.pick(NOT_JSON)), BODY_ERR()], [text(j.pick(NOT_OBJECTS)), bad('(root)')],
        [undefined, bad('(root)')], [Buffer.from([0x7b, 0x22, 0x61, 0xc0, 0xaf, 0x22, 0x3a, 0x31, 0x7d]), BODY_ERR()],
      ] as [Buffer | undefined, HttpExpect][]);
      return post(`/v1/tasks/${id}/complete`, body, expect, 'complete/bad-body');
    }],
  ];
}

function agentRouteMakers(): [HttpRoute, number, Maker][] {
  const readyBody = (j: Junk): Record<string, unknown> => ({
    capabilities: Array.from({ length: j.int(4) }, () => j.pick(['gpu', 'browser', 'aws-mcp', 'constructor', '__proto__', 'ünï'])),
    ...(j.chance(0.6) ? { capacity: j.pick([1, 2, 8, 10_000]) } : {}),
  });
  return [
    ['POST /v1/agents/:id/ready', 2.5, (j, c) => {
      const id = j.chance(0.8) ? c.uid('ja') : `${c.uid('ja')}${j.pick(['/x', ' ', '😀', '..', '%', '__proto__', 'constructor'])}`;
      return post(`/v1/agents/${enc(id)}/ready`, json(readyBody(j)), { status: [200] }, 'ready/valid');
    }],
    ['POST /v1/agents/:id/ready', 4, (j, c) => {
      const id = enc(c.uid('ja-bad'));
      const [body, expect] = j.pick([
        [json({}), bad('capabilities')], [json({ capabilities: 'gpu' }), bad('capabilities')], [json({ capabilities: [''] }), bad('capabilities.0')],
        [json({ capabilities: ['h'.repeat(300 * KB)] }), bad('capabilities.0')], [json({ capabilities: Array.from({ length: 257 }, (_, i) => `c${i}`) }), bad('capabilities')],
        [json({ capabilities: [], capacity: j.pick([0, -1, 10_001, 1.5, 'NaN', null, '2', 1e308]) }), bad('capacity')],
        [json({ capabilities: [], agentId: 'x' }), bad('agentId')], [json({ capabilities: [], kind: 'ready' }), bad('kind')],
        [json({ capabilities: [], prototype: {} }), bad('prototype')], [text('{"capabilities":[],"__proto__":{"polluted":"yes"}}'), BODY_ERR()],
        [text('{"capabilities":[],"constructor":{"prototype":{"polluted":"yes"}}}'), BODY_ERR()],
        [text(`{"capabilities":${nested(5000, true)}}`), bad('capabilities')], [text(j.pick(NOT_JSON)), BODY_ERR()], [text(j.pick(NOT_OBJECTS)), bad('(root)')],
        [undefined, bad('(root)')], [Buffer.from([0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x3a, 0x31, 0x7d]), BODY_ERR()],
      ] as [Buffer | undefined, HttpExpect][]);
      return post(`/v1/agents/${id}/ready`, body, expect, 'ready/bad-body');
    }],
    ['POST /v1/agents/:id/ready', 1, (j) => post(`/v1/agents/${j.pick(['a'.repeat(257), 'x'.repeat(10 * KB), '%F0%9F%98%80'.repeat(300)])}/ready`, json({ capabilities: [] }), bad('id'), 'ready/bad-id')],
    ['POST /v1/agents/:id/heartbeat', 1.5, (j, c) => post(`/v1/agents/${enc(c.world.worker)}/heartbeat`, j.pick([undefined, json({}), json({ any: 'thing' })]), { status: [200] }, 'heartbeat/alive')],
    ['POST /v1/agents/:id/heartbeat', 1, (j, c) => post(`/v1/agents/${enc(c.world.left)}/heartbeat`, undefined, { status: [409], error: 'agent-not-alive' }, 'heartbeat/left')],
    ['POST /v1/agents/:id/heartbeat', 1.5, (j, c) => {
      const raw = j.chance(0.5) ? enc(c.uid('nobody')) : j.pick(['x'.repeat(10 * KB), 'a%2Fb', '%00', '__proto__', 'constructor', '%20']);
      return post(`/v1/agents/${raw}/heartbeat`, undefined, { status: [404], error: 'not-found' }, 'heartbeat/unknown');
    }],
    ['POST /v1/agents/:id/heartbeat', 1, (j, c) => {
      const [body, expect, ct] = j.pick([
        [text('{"x":'), BODY_ERR(), 'application/json'], [text('{"__proto__":{"polluted":"yes"}}'), BODY_ERR(), 'application/json'],
        [Buffer.from([0xff, 0xfe]), BODY_ERR(), 'application/json'], [text('<beat/>'), { status: [415] }, 'application/xml'],
      ] as [Buffer, HttpExpect, string][]);
      return post(`/v1/agents/${enc(c.world.worker)}/heartbeat`, body, expect, 'heartbeat/bad-body', { 'content-type': ct });
    }],
    ['POST /v1/agents/:id/leave', 0.7, (j, c) => post(`/v1/agents/${enc(c.uid('nobody'))}/leave`, undefined, { status: [404], error: 'not-found' }, 'leave/unknown')],
    ['POST /v1/agents/:id/leave', 0.5, (j, c) => post(`/v1/agents/${enc(c.world.left)}/leave`, undefined, { status: [200] }, 'leave/left-again')],
    ['GET /v1/agents/:id/assignments', 3, (j, c) => {
      const agent = j.pick([c.world.worker, c.uid('nobody'), c.world.left]);
      const q = j.pick(BAD_WAITS);
      return { kind: 'assignments/bad-wait', method: 'GET', path: `/v1/agents/${enc(agent)}/assignments?waitMs=${q}`, headers: {}, expect: bad('waitMs') };
    }],
    ['GET /v1/agents/:id/assignments', 2, (j, c) => {
      const [agent, expect] = j.pick([
        [c.world.worker, { status: [200, 204] }], [c.world.left, { status: [200, 204] }], [c.uid('nobody'), { status: [404], error: 'not-found' }],
      ] as [string, HttpExpect][]);
      const q = j.pick(['', '?waitMs=0', '?waitMs=1', '?waitMs=20', '?waitMs=00005', '?waitMs=0&other=1']);
      return { kind: 'assignments/valid-wait', method: 'GET', path: `/v1/agents/${enc(agent)}/assignments${q}`, headers: {}, expect };
    }],
  ];
}

function otherMakers(): [HttpRoute, number, Maker][] {
  return [
    ['other', 1, (j) => {
      const [method, path] = j.pick([['GET', '/v1/nope'], ['GET', '/v2/tasks'], ['DELETE', '/v1/tasks/fx-parked-0'], ['PUT', '/v1/tasks'], ['PATCH', '/v1/agents/fx-worker/ready'],
        ['GET', '/v1/tasks/a/b/c'], ['POST', '/v1/dashboard'], ['GET', '/'], ['GET', '/v1/tasks'], ['POST', '/v1/agents/fx-worker'], ['GET', '/.env'], ['GET', '/v1/agents/x/y']] as const);
      return { kind: 'other/unknown-route', method, path, headers: {}, expect: { status: [404], error: 'not-found' } };
    }],
    ['other', 0.6, (j) => ({ kind: 'other/read', method: 'GET', path: j.pick(['/v1/agents', '/v1/dashboard', '/healthz', '/metrics']), headers: {}, expect: { status: [200] } })],
  ];
}

function safeDecode(s: string): string | undefined {
  try { return decodeURIComponent(s); } catch { return undefined; }
}

/** `count` HTTP cases spread over every route, from `seed`. */
export function httpCases(seed: number, count: number, world: World): HttpCase[] {
  const j = new Junk(seed);
  const table: [HttpRoute, number, Maker][] = [
    ...submitMakers().map(([w, m]) => ['POST /v1/tasks', w, m] as [HttpRoute, number, Maker]),
    ...taskRouteMakers(), ...agentRouteMakers(), ...otherMakers(),
  ];
  const total = table.reduce((a, [, w]) => a + w, 0);
  let uid = 0;
  let live = 0;
  const cases: HttpCase[] = [];
  for (let n = 0; n < count; n++) {
    const ctx: Ctx = {
      world, n,
      uid: (p) => `${p}-${seed.toString(36)}-${(uid++).toString(36)}`,
      nextLive: () => (live < world.live.length ? world.live[live++] : undefined),
    };
    let x = j.float() * total;
    let k = 0;
    while (x >= table[k][1]) { x -= table[k][1]; k++; }
    const [route, , make] = table[k];
    const c = make(j, ctx);
    cases.push({ n, route, server: c.server ?? 'main', kind: c.kind, method: c.method, path: c.path, headers: c.headers, body: c.body, expect: c.expect });
  }
  return cases;
}

// --- HTTP runner -----------------------------------------------------------------------------

export interface HttpReply { status: number; headers: http.IncomingHttpHeaders; body: Buffer; json?: unknown; error?: string }

export function httpClient(base: string, maxSockets = 32) {
  const url = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const request = (method: string, path: string, headers: Record<string, string> = {}, body?: Buffer, timeoutMs = 30_000): Promise<HttpReply> =>
    new Promise((resolve) => {
      let settled = false;
      const done = (r: HttpReply): void => { if (!settled) { settled = true; resolve(r); } };
      const req = http.request({
        host: url.hostname, port: url.port, method, path, agent, timeout: timeoutMs,
        headers: body === undefined ? headers : { ...headers, 'content-length': String(body.length) },
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          let parsed: unknown;
          if (String(res.headers['content-type'] ?? '').startsWith('application/json') && buf.length > 0) {
            try { parsed = JSON.parse(buf.toString('utf8')); } catch { parsed = undefined; }
          }
          done({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json: parsed });
        });
        res.on('error', (e) => done({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0), error: e.message }));
      });
      req.on('timeout', () => { req.destroy(new Error(`no answer in ${timeoutMs} ms`)); });
      req.on('error', (e) => done({ status: 0, headers: {}, body: Buffer.alloc(0), error: e.message }));
      req.end(body);
    });
  return {
    request,
    async json<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
      const r = await request(method, path, body === undefined ? {} : JSON_CT, body === undefined ? undefined : json(body));
      if (r.error) throw new Error(`${method} ${path}: ${r.error}`);
      return { status: r.status, body: r.json as T };
    },
    close(): void { agent.destroy(); },
  };
}
export type HttpClient = ReturnType<typeof httpClient>;

const isObject = (x: unknown): x is Record<string, unknown> => x !== null && typeof x === 'object' && !Array.isArray(x);

/** What is wrong with one answer, judged against its case; [] when nothing is. */
export function judgeHttp(c: HttpCase, r: HttpReply): string[] {
  const p: string[] = [];
  if (r.error) p.push(`no answer: ${r.error}`);
  if (!c.expect.status.includes(r.status)) p.push(`status ${r.status}, expected ${c.expect.status.join(' or ')}`);
  if (r.status >= 500) p.push(`server error ${r.status}`);
  const b = r.json;
  if (r.status >= 400) {
    if (!String(r.headers['content-type'] ?? '').startsWith('application/json')) p.push(`error answer is not JSON (${r.headers['content-type'] ?? 'no content-type'})`);
    if (!isObject(b) || typeof b.error !== 'string' || b.error === '' || typeof b.message !== 'string' || b.message === '') {
      p.push(`error body does not name the problem: ${r.body.toString('utf8').slice(0, 200)}`);
    } else {
      if (c.expect.error !== undefined && b.error !== c.expect.error) p.push(`error "${b.error}", expected "${c.expect.error}"`);
      if (r.status === 400) {
        const issues = b.issues;
        const ok = Array.isArray(issues) && issues.length > 0
          && issues.every((i) => isObject(i) && typeof i.path === 'string' && typeof i.message === 'string' && i.message !== '');
        if (!ok) p.push(`400 without a list of issues {path, message}: ${JSON.stringify(issues)?.slice(0, 200)}`);
        else if (c.expect.issue !== undefined) {
          const want = c.expect.issue;
          const named = (issues as { path: string }[]).some((i) => i.path === want || i.path.startsWith(`${want}.`) || i.path.split(', ').includes(want));
          if (!named) p.push(`issues do not name "${want}": ${JSON.stringify(issues).slice(0, 300)}`);
        }
      }
      if (r.status === 429 && r.headers['retry-after'] === undefined) p.push('429 without retry-after');
    }
  }
  if (r.status === 202) {
    if (!isObject(b) || typeof b.id !== 'string' || typeof b.status !== 'string' || !TASK_STATUSES.includes(b.status)) p.push(`202 body is not {id, status}: ${r.body.toString('utf8').slice(0, 200)}`);
    else if (c.expect.id !== undefined && b.id !== c.expect.id) p.push(`202 for id "${b.id}", expected "${c.expect.id}"`);
  }
  if (r.status === 200 && c.route === 'GET /v1/tasks/:id' && !(isObject(b) && typeof b.status === 'string' && TASK_STATUSES.includes(b.status))) {
    p.push(`task without a valid status: ${r.body.toString('utf8').slice(0, 200)}`);
  }
  if (r.status === 204 && r.body.length > 0) p.push('204 with a body');
  return p;
}

export interface CaseResult { n: number; status: number; problems: string[] }

export interface HttpCampaign {
  results: CaseResult[];
  /** Task ids answered 202, with the case that got each. */
  accepted: Map<string, number>;
  /** `status → count`, and per route. */
  statuses: Map<number, number>;
  byRoute: Map<string, Map<number, number>>;
  violations: string[];
  ms: number;
}

function describeCase(c: HttpCase): string {
  const path = c.path.length > 80 ? `${c.path.slice(0, 80)}…(${c.path.length})` : c.path;
  const body = c.body === undefined ? '' : ` body ${c.body.length > 120 ? `${c.body.subarray(0, 120).toString('utf8')}…(${c.body.length} B)` : c.body.toString('utf8')}`;
  return `#${c.n} ${c.kind} ${c.method} ${path}${body}`;
}

/** Send every case (at most `concurrency` at once) and judge each answer. */
export async function runHttpCases(o: { main: HttpClient; shed?: HttpClient; cases: readonly HttpCase[]; concurrency?: number }): Promise<HttpCampaign> {
  const t0 = performance.now();
  const results: CaseResult[] = new Array(o.cases.length);
  const accepted = new Map<string, number>();
  const statuses = new Map<number, number>();
  const byRoute = new Map<string, Map<number, number>>();
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < o.cases.length; i = next++) {
      const c = o.cases[i];
      const client = c.server === 'shed' ? o.shed : o.main;
      if (!client) throw new Error(`case #${c.n} needs the shed server`);
      const r = await client.request(c.method, c.path, c.headers, c.body);
      const problems = judgeHttp(c, r);
      results[i] = { n: c.n, status: r.status, problems };
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      let m = byRoute.get(c.route);
      if (!m) byRoute.set(c.route, (m = new Map()));
      m.set(r.status, (m.get(r.status) ?? 0) + 1);
      if (r.status === 202 && c.server === 'main' && isObject(r.json) && typeof r.json.id === 'string') accepted.set(r.json.id, c.n);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 16 }, worker));
  const violations = results.flatMap((r) => r.problems.map((p) => `${describeCase(o.cases[r.n])}: ${p}`));
  return { results, accepted, statuses, byRoute, violations, ms: performance.now() - t0 };
}

/** Every accepted task is found, with a valid status. */
export async function checkAccepted(client: HttpClient, accepted: ReadonlyMap<string, number>, concurrency = 16): Promise<string[]> {
  const ids = [...accepted.keys()];
  const problems: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    for (let i = next++; i < ids.length; i = next++) {
      const id = ids[i];
      const r = await client.request('GET', `/v1/tasks/${enc(id)}`);
      const b = r.json;
      if (r.status !== 200 || !isObject(b) || b.id !== id || typeof b.status !== 'string' || !TASK_STATUSES.includes(b.status)) {
        problems.push(`accepted task ${JSON.stringify(id).slice(0, 80)} (case #${accepted.get(id)}): GET answered ${r.status} ${r.body.toString('utf8').slice(0, 160)}`);
      }
    }
  }));
  return problems;
}

/** `/healthz` answers 200 `{ok: true}`. */
export async function checkHealth(client: HttpClient): Promise<string[]> {
  const r = await client.request('GET', '/healthz');
  return r.status === 200 && isObject(r.json) && r.json.ok === true ? [] : [`/healthz answered ${r.status} ${r.body.toString('utf8').slice(0, 200)}`];
}

// --- the world, set up ----------------------------------------------------------------------------

async function must<T>(what: string, p: Promise<{ status: number; body: T }>, ok: number[]): Promise<T> {
  const r = await p;
  if (!ok.includes(r.status)) throw new Error(`setting up the world: ${what} answered ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/**
 * Set the world up on a server (over its HTTP API), and keep its agents alive until `stop()`:
 * an agent silent for agentTimeoutMs is timed out and its tasks requeued (attempt 2), which
 * would turn the valid completions into stale ones.
 */
export async function prepareWorld(client: HttpClient, w: World): Promise<{ stop(): void }> {
  await must('ready worker', client.json('POST', `/v1/agents/${enc(w.worker)}/ready`, { capabilities: ['fx-cap'], capacity: 10_000 }), [200]);
  await must('ready left', client.json('POST', `/v1/agents/${enc(w.left)}/ready`, { capabilities: ['fx-left-cap'] }), [200]);
  await must('leave left', client.json('POST', `/v1/agents/${enc(w.left)}/leave`), [200]);
  for (const id of [...w.live, ...w.done]) {
    await must(`submit ${id}`, client.json('POST', '/v1/tasks', { id, tenant: 'fx', source: 'api', type: 'fixture', requires: ['fx-cap'] }), [202]);
  }
  for (const id of [...w.parked, ...w.weird]) {
    await must(`submit ${id}`, client.json('POST', '/v1/tasks', { id, tenant: 'fx', source: 'api', type: 'fixture', requires: ['fx-none'] }), [202]);
  }
  await must('fill the quota', client.json('POST', '/v1/tasks', { id: 'fx-quota-0', tenant: w.quotaTenant, source: 'api', type: 'fixture', requires: ['fx-none'] }), [202]);
  for (const id of [...w.live, ...w.done]) {
    const t = await must(`get ${id}`, client.json<{ status: string; attempt: number; agent: string }>('GET', `/v1/tasks/${enc(id)}`), [200]);
    if (t.status !== 'assigned' || t.attempt !== 1 || t.agent !== w.worker) throw new Error(`setting up the world: ${id} is ${JSON.stringify(t)}, not assigned to ${w.worker} at attempt 1`);
  }
  for (const id of w.done) {
    await must(`complete ${id}`, client.json('POST', `/v1/tasks/${enc(id)}/complete`, { agentId: w.worker, attempt: 1, outcome: 'succeeded' }), [200]);
  }
  // Take the worker's deliveries, so its mailbox does not grow for nothing.
  await client.request('GET', `/v1/agents/${enc(w.worker)}/assignments?waitMs=0`);
  const beat = setInterval(() => {
    void client.request('POST', `/v1/agents/${enc(w.worker)}/heartbeat`);
    void client.request('POST', `/v1/agents/${enc(w.finalAgent)}/heartbeat`);
  }, 2000);
  beat.unref();
  return { stop: () => clearInterval(beat) };
}

/** Overload the shed server: three high tasks nobody can run (waiting 3 ≥ every threshold but critical's). */
export async function prepareShed(client: HttpClient): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await must('overload', client.json('POST', '/v1/tasks', { id: `shed-fill-${i}`, tenant: 'fx', source: 'api', type: 'fixture', priority: 'high', requires: ['fx-none'] }), [202]);
  }
}

// --- prototypes -----------------------------------------------------------------------------------

const PROTOS: [string, object][] = [['Object', Object.prototype], ['Array', Array.prototype], ['Function', Function.prototype], ['String', String.prototype]];
const fingerprint = (): string[] => PROTOS.map(([name, p]) => `${name}: ${Reflect.ownKeys(p).map(String).sort().join(',')}`);
const BASELINE = fingerprint();

/** Anything added to the built-in prototypes since this module loaded (the server runs in-process: it is covered too). */
export function prototypeProblems(): string[] {
  const p: string[] = [];
  const probe = {} as Record<string, unknown>;
  for (const k of ['polluted', 'isAdmin', 'a']) if (probe[k] !== undefined) p.push(`({}).${k} is ${String(probe[k])}`);
  const now = fingerprint();
  now.forEach((f, i) => { if (f !== BASELINE[i]) p.push(`${PROTOS[i][0]}.prototype changed: ${f}`); });
  if (Object.getPrototypeOf({}) !== Object.prototype) p.push('({}) has another prototype');
  return p;
}

// --- Kafka cases ------------------------------------------------------------------------------

export type KafkaExpect =
  | { dead: true; code: string; error: RegExp }
  | { dead: false; task?: string | 'derived'; agent?: string };

export interface KafkaCase {
  n: number;
  kind: string;
  topic: 'tasks' | 'agents';
  key: string | null;
  value: Buffer | null;
  expect: KafkaExpect;
}

type KafkaMaker = (j: Junk, c: Ctx) => Omit<KafkaCase, 'n'>;

const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const invalid = (field: string): KafkaExpect => ({ dead: true, code: 'validation', error: new RegExp(`(^|; |, )${esc(field)}[.:,]`) });
const deadFor = (code: string, error: RegExp): KafkaExpect => ({ dead: true, code, error });
/** The value of a huge record: `size` bytes in all. */
function hugeValue(size: number, valid: boolean, tag: string): Buffer {
  const head = valid ? `{"id":"${tag}","tenant":"acme","source":"api","type":"huge","requires":["fx-none"],"payload":"` : '{"tenant":"acme","source":"api","type":"huge","bogus":"';
  return text(head + 'h'.repeat(size - head.length - 2) + '"}');
}

function kafkaTaskMakers(): [number, KafkaMaker][] {
  const t = (kind: string, value: Buffer | null, expect: KafkaExpect, key: string | null = 'acme') => ({ kind, topic: 'tasks' as const, key, value, expect });
  return [
    [12, (j, c) => {
      const v = validTask(j, c, { tenant: j.chance(0.8) ? j.pick(TENANTS) : 'acme' });
      return t('task/valid', json(v), { dead: false, task: (v.id as string | undefined) ?? 'derived' }, j.chance(0.9) ? String(v.tenant) : null);
    }],
    [1.5, (j, c) => { const id = j.pick([...c.world.live, ...c.world.done, ...c.world.parked]); return t('task/resubmit-known-id', json(validTask(j, c, { id })), { dead: false, task: id }); }],
    [4, (j, c) => {
      const field = j.pick(Object.keys(WRONG_TYPES));
      return t('task/wrong-type', json({ ...validTask(j, c, { id: null }), [field]: j.pick(WRONG_TYPES[field]) }), invalid(field));
    }],
    [3, (j, c) => { const v = validTask(j, c); const field = j.pick(['tenant', 'source', 'type']); delete v[field]; return t('task/missing-field', json(v), invalid(field)); }],
    [3, (j, c) => {
      const field = j.pick(['bogus', 'Tenant', 'constructor', 'prototype', 'toString', 'kind', 'polluted']);
      return t('task/unknown-field', json({ ...validTask(j, c, { id: null }), [field]: j.pick([1, 'x', null, { polluted: true }]) }), invalid(field));
    }],
    [2, (j, c) => {
      const [field, values] = j.pick([['source', ['USER', 'robot', '']], ['priority', ['urgent', 'CRITICAL']], ['affinity', ['sticky', '']]] as const);
      return t('task/bad-enum', json({ ...validTask(j, c, { id: null }), [field]: j.pick(values) }), invalid(field));
    }],
    [2, (j, c) => t('task/bad-date', json({ ...validTask(j, c, { id: null }), deadline: j.pick(BAD_DATES) }), invalid('deadline'))],
    [2, (j, c) => t('task/bad-number', json({ ...validTask(j, c, { id: null }), estimatedDurationMs: j.pick([...BAD_NUMBERS, ...NAN_LIKE]) }), invalid('estimatedDurationMs'))],
    [1, (j, c) => t('task/number-overflows-to-infinity', text(withMembers(validTask(j, c, { id: null }), `"estimatedDurationMs":${j.pick(HUGE_NUMBER_TOKENS)}`)), invalid('estimatedDurationMs'))],
    [2, (j, c) => {
      const field = j.pick(STRING_FIELDS);
      return t('task/bad-length-string', json({ ...validTask(j, c, { id: null }), [field]: j.pick(['', 's'.repeat(257), 'h'.repeat(300 * KB)]) }), invalid(field));
    }],
    [1.5, (j, c) => t('task/unknown-dependency', json({ ...validTask(j, c, { id: null }), dependsOn: [c.uid('ghost')] }), deadFor('validation', /dependsOn\.0: unknown task id/))],
    [1.5, (j, c) => t('task/over-quota', json(validTask(j, c, { id: c.uid('q'), tenant: c.world.quotaTenant })), deadFor('quota', /maxQueued/))],
    [2, (j, c) => t('task/deep-payload', text(withMembers({ ...validTask(j, c, { id: null }), payload: undefined }, `"payload":${nested(j.pick([MAX_DEPTH, 3000, 5000, 50_000]), j.chance(0.5))}`)), deadFor('validation', /payload: is nested more than/))],
    [1, (j, c) => { const v = validTask(j, c, { id: c.uid('deep-ok') }); return t('task/deep-at-limit', text(withMembers({ ...v, payload: undefined }, `"payload":${nested(MAX_DEPTH - 1, true)}`)), { dead: false, task: v.id as string }); }],
    [2.5, (j, c) => {
      const key = j.pick(['__proto__', 'constructor'] as const);
      const v = validTask(j, c, { id: null });
      const top = j.chance(0.4);
      const raw = top ? withMembers(v, key === '__proto__' ? '"__proto__":{"polluted":"yes"}' : '"constructor":{"prototype":{"polluted":"yes"}}')
        : withMembers({ ...v, payload: undefined }, `"payload":${protoAt(j.int(6), key)}`);
      return t(`task/${key}-key`, text(raw), deadFor('validation', key === '__proto__' ? /__proto__: is a forbidden key/ : /constructor\.prototype: is a forbidden key/));
    }],
    [2, (j, c) => {
      const s = JSON.stringify(validTask(j, c, { id: null }));
      const at = s.indexOf('"', s.indexOf(':') + 1) + 1;
      return t('task/invalid-utf8', Buffer.concat([text(s.slice(0, at)), Buffer.from(j.pick(BAD_UTF8)), text(s.slice(at))]), deadFor('validation', /value: is not valid UTF-8/));
    }],
    [2, (j) => t('task/not-json', text(j.pick([...NOT_JSON, ...NOT_JSON_NUMBERS])), deadFor('validation', /value: is not JSON/))],
    [1, (j) => t('task/not-an-object', text(j.pick(NOT_OBJECTS)), invalid('(root)'))],
    [0.5, (j, c) => { const v = validTask(j, c, { id: c.uid('bom') }); return t('task/byte-order-mark', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), json(v)]), { dead: false, task: v.id as string }); }],
    [0.7, () => t('task/tombstone', null, deadFor('validation', /value: is empty/))],
    [0.5, () => t('task/empty-value', Buffer.alloc(0), deadFor('validation', /value: is not JSON/))],
    [1.2, (j, c) => {
      const size = j.pick([300 * KB, 700 * KB, 1_000_000, 1_048_000]);
      const valid = j.chance(0.3);
      const id = c.uid('huge');
      return t(`task/huge-${valid ? 'valid' : 'invalid'}`, hugeValue(size, valid, id), valid ? { dead: false, task: id } : invalid('bogus'));
    }],
    [0.5, (j) => t('task/huge-not-json', text(`{"tenant":"${'t'.repeat(j.pick([300 * KB, 1_000_000]))}`), deadFor('validation', /value: is not JSON/))],
  ];
}

function kafkaAgentMakers(): [number, KafkaMaker][] {
  const a = (kind: string, value: Buffer | null, expect: KafkaExpect, key: string | null = 'agent') => ({ kind, topic: 'agents' as const, key, value, expect });
  return [
    [3, (j, c) => {
      const agentId = c.uid('ka');
      return a('agent/ready-valid', json({ kind: 'ready', agentId, capabilities: Array.from({ length: j.int(3) }, () => j.pick(['gpu', 'browser', '__proto__'])), ...(j.chance(0.5) ? { capacity: j.pick([1, 4, 10_000]) } : {}) }), { dead: false, agent: agentId }, agentId);
    }],
    [3, (j, c) => {
      const [body, expect] = j.pick([
        [{ kind: 'ready', agentId: c.uid('ka'), capabilities: 'gpu' }, invalid('capabilities')],
        [{ kind: 'ready', agentId: c.uid('ka'), capabilities: [], capacity: j.pick([0, 10_001, 1.5, '2', null]) }, invalid('capacity')],
        [{ kind: 'ready', capabilities: [] }, invalid('agentId')],
        [{ kind: 'ready', agentId: j.pick(['', 'a'.repeat(257), 'h'.repeat(300 * KB)]), capabilities: [] }, invalid('agentId')],
        [{ kind: 'ready', agentId: c.uid('ka'), capabilities: [], bogus: 1 }, invalid('bogus')],
      ] as [Record<string, unknown>, KafkaExpect][]);
      return a('agent/ready-invalid', json(body), expect);
    }],
    [2, (j, c) => a('agent/heartbeat-alive', json({ kind: 'heartbeat', agentId: c.world.worker }), { dead: false }, c.world.worker)],
    [1.5, (j, c) => a('agent/heartbeat-unknown', json({ kind: 'heartbeat', agentId: c.uid('nobody') }), deadFor('not-found', /unknown agent nobody-/))],
    [1, (j, c) => a('agent/heartbeat-left', json({ kind: 'heartbeat', agentId: c.world.left }), deadFor('agent-not-alive', /timed out or left/))],
    [0.8, (j, c) => a('agent/leave-unknown', json({ kind: 'leave', agentId: c.uid('nobody') }), deadFor('not-found', /unknown agent nobody-/))],
    [0.5, (j, c) => a('agent/leave-left-again', json({ kind: 'leave', agentId: c.world.left }), { dead: false })],
    [3, (j, c) => {
      const id = c.nextLive();
      if (id === undefined) return a('agent/complete-stale', json({ kind: 'complete', agentId: c.world.worker, taskId: j.pick(c.world.live), attempt: 9, outcome: 'succeeded' }), deadFor('stale-attempt', /is not current/));
      return a('agent/complete-valid', json({ kind: 'complete', agentId: c.world.worker, taskId: id, attempt: 1, outcome: 'succeeded', ...(j.chance(0.5) ? { result: j.json() } : {}) }), { dead: false, task: id });
    }],
    [2, (j, c) => a('agent/complete-duplicate', json({ kind: 'complete', agentId: c.world.worker, taskId: j.pick(c.world.done), attempt: 1, outcome: 'succeeded' }), { dead: false })],
    [3, (j, c) => {
      const [taskId, agentId, attempt, outcome] = j.pick([
        [j.pick(c.world.done), c.world.worker, 1, 'failed'], [j.pick(c.world.live), c.world.worker, 2 + j.int(100), 'succeeded'],
        [j.pick(c.world.live), 'fx-other', 1, 'succeeded'], [j.pick(c.world.parked), c.world.worker, 1, 'failed'],
      ] as [string, string, number, string][]);
      return a('agent/complete-stale', json({ kind: 'complete', agentId, taskId, attempt, outcome }), deadFor('stale-attempt', /is not current/));
    }],
    [2, (j, c) => a('agent/complete-unknown-task', json({ kind: 'complete', agentId: c.world.worker, taskId: c.uid('nobody'), attempt: 1, outcome: 'succeeded' }), deadFor('not-found', /unknown task nobody-/))],
    [4, (j, c) => {
      const ok = { kind: 'complete', agentId: c.world.worker, taskId: j.pick(c.world.live), attempt: 1, outcome: 'succeeded' };
      const [body, expect] = j.pick([
        [{ ...ok, attempt: j.pick([0, -1, 1.5, '1', null, 1e308]) }, invalid('attempt')], [{ ...ok, outcome: j.pick(['ok', '', null]) }, invalid('outcome')],
        [{ ...ok, taskId: j.pick(['', 1, null, 'h'.repeat(300 * KB)]) }, invalid('taskId')], [{ ...ok, error: 'e'.repeat(10_001) }, invalid('error')],
        [{ ...ok, retryable: 'yes' }, invalid('retryable')], [{ ...ok, bogus: true }, invalid('bogus')], [{ ...ok, capabilities: [] }, invalid('capabilities')],
      ] as [Record<string, unknown>, KafkaExpect][]);
      return a('agent/complete-invalid', json(body), expect);
    }],
    [2.5, (j) => a('agent/bad-kind', json({ ...j.pick([{}, { kind: 'dance' }, { kind: 'READY' }, { kind: '' }, { kind: null }, { kind: ['ready'] }, { kind: '__proto__' }, { kind: 'constructor' }]), agentId: 'x' }), invalid('kind'))],
    [1, (j, c) => a('agent/deep', text(`{"kind":"complete","agentId":"${c.world.worker}","taskId":"x","attempt":1,"outcome":"succeeded","result":${nested(5000, j.chance(0.5))}}`), deadFor('validation', /result: is nested more than/))],
    [1.5, (j) => {
      const key = j.pick(['__proto__', 'constructor'] as const);
      return a(`agent/${key}-key`, text(`{"kind":"heartbeat","agentId":"fx-worker",${key === '__proto__' ? '"__proto__":{"polluted":"yes"}' : '"constructor":{"prototype":{"polluted":"yes"}}'}}`),
        deadFor('validation', key === '__proto__' ? /__proto__: is a forbidden key/ : /constructor\.prototype: is a forbidden key/));
    }],
    [1.5, (j) => a('agent/invalid-utf8', Buffer.concat([text('{"kind":"heartbeat","agentId":"'), Buffer.from(j.pick(BAD_UTF8)), text('"}')]), deadFor('validation', /value: is not valid UTF-8/))],
    [1.5, (j) => a('agent/not-json', text(j.pick(NOT_JSON)), deadFor('validation', /value: is not JSON/))],
    [0.5, () => a('agent/tombstone', null, deadFor('validation', /value: is empty/))],
    [0.7, (j) => a('agent/huge', text(`{"kind":"heartbeat","agentId":"fx-worker","bogus":"${'h'.repeat(j.pick([300 * KB, 700 * KB, 1_000_000]))}"}`), invalid('bogus'))],
  ];
}

/** `count` raw records for `<prefix>.tasks` and `<prefix>.agents`, from `seed`. */
export function kafkaCases(seed: number, count: number, world: World): KafkaCase[] {
  const j = new Junk(seed);
  const table = [...kafkaTaskMakers(), ...kafkaAgentMakers()];
  const total = table.reduce((s, [w]) => s + w, 0);
  let uid = 0;
  let live = 0;
  const out: KafkaCase[] = [];
  for (let n = 0; n < count; n++) {
    const ctx: Ctx = {
      world, n,
      uid: (p) => `${p}-k${seed.toString(36)}-${(uid++).toString(36)}`,
      nextLive: () => (live < world.live.length ? world.live[live++] : undefined),
    };
    let x = j.float() * total;
    let k = 0;
    while (x >= table[k][0]) { x -= table[k][0]; k++; }
    out.push({ n, ...table[k][1](j, ctx) });
  }
  return out;
}

// --- Kafka runner ------------------------------------------------------------------------------------

export interface KafkaTopics { tasks: string; agents: string; deadLetter: string }

export interface DeadLetter { key: string | null; value: Buffer; headers: Record<string, string> }

export interface KafkaCampaign {
  sent: number;
  deadLetters: number;
  /** `validation → count`, … */
  codes: Map<string, number>;
  accepted: number;
  finalAssigned: boolean;
  violations: string[];
  ms: number;
}

const { Kafka: KafkaClient, logLevel } = kafkajs;

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function describeKafkaCase(c: KafkaCase, topic: string, offset: string | undefined): string {
  const v = c.value === null ? 'null' : c.value.length > 120 ? `${c.value.subarray(0, 120).toString('utf8')}…(${c.value.length} B)` : c.value.toString('utf8');
  return `#${c.n} ${c.kind} ${topic}@${offset ?? '?'} ${v}`;
}

/**
 * Send every case as a raw record (kafkajs, not our client), then a valid agent and a valid task;
 * read `<prefix>.dead-letter`; judge: each invalid record is there once with its original bytes,
 * key and a reason naming the problem, no valid one is, the valid ones took effect (looked up
 * over HTTP), and the last task was assigned.
 */
export async function runKafkaCases(o: {
  brokers: string[]; topics: KafkaTopics; cases: readonly KafkaCase[]; world: World; http: HttpClient; timeoutMs?: number; log?: (l: string) => void;
}): Promise<KafkaCampaign> {
  const t0 = performance.now();
  const kafka: Kafka = new KafkaClient({ clientId: 'junk', brokers: o.brokers, logLevel: logLevel.NOTHING });
  const producer: Producer = kafka.producer({ allowAutoTopicCreation: false });
  const dlq: Consumer = kafka.consumer({ groupId: `junk-dlq-${Date.now()}-${Math.floor(Math.random() * 1e9)}`, maxWaitTimeInMs: 100, maxBytes: 64 * 1024 * 1024 });
  const dead = new Map<string, DeadLetter[]>();
  let deadCount = 0;
  const violations: string[] = [];
  try {
    await producer.connect();
    await dlq.connect();
    await dlq.subscribe({ topics: [o.topics.deadLetter], fromBeginning: true });
    await dlq.run({
      eachMessage: async ({ message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
        const at = `${headers['switchyard-source-topic']}#${headers['switchyard-source-offset']}`;
        const list = dead.get(at) ?? [];
        list.push({ key: message.key?.toString('utf8') ?? null, value: message.value ?? Buffer.alloc(0), headers });
        dead.set(at, list);
        deadCount++;
      },
    });

    // Send, in order within each topic, in requests of at most ~768 KiB (a huge record alone).
    const offsets: (string | undefined)[] = new Array(o.cases.length);
    const topicOf = (c: KafkaCase): string => (c.topic === 'tasks' ? o.topics.tasks : o.topics.agents);
    for (const topic of ['tasks', 'agents'] as const) {
      const mine = o.cases.filter((c) => c.topic === topic);
      for (let i = 0; i < mine.length;) {
        const chunk: KafkaCase[] = [];
        let bytes = 0;
        while (i < mine.length && (chunk.length === 0 || (bytes + (mine[i].value?.length ?? 0) < 768 * KB && chunk.length < 500))) {
          bytes += mine[i].value?.length ?? 0;
          chunk.push(mine[i++]);
        }
        const sent = await producer.send({ topic: topicOf(chunk[0]), acks: -1, messages: chunk.map((c) => ({ key: c.key, value: c.value })) });
        const base = BigInt(sent[0].baseOffset ?? '0');
        chunk.forEach((c, k) => { offsets[c.n] = (base + BigInt(k)).toString(); });
      }
    }
    o.log?.(`  sent ${o.cases.length} records in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // After all the junk: a valid agent, then a valid task only it can run.
    const finalTask = `final-${Date.now()}`;
    await producer.send({ topic: o.topics.agents, acks: -1, messages: [{ key: o.world.finalAgent, value: JSON.stringify({ kind: 'ready', agentId: o.world.finalAgent, capabilities: [o.world.finalCap], capacity: 10_000 }) }] });
    await producer.send({ topic: o.topics.tasks, acks: -1, messages: [{ key: 'fx', value: JSON.stringify({ id: finalTask, tenant: 'fx-final', source: 'api', type: 'after-the-junk', priority: 'critical', requires: [o.world.finalCap] }) }] });

    const expectedDead = o.cases.filter((c) => c.expect.dead).length;
    const timeoutMs = o.timeoutMs ?? 60_000;
    let finalAssigned = false;
    const settled = await waitFor(async () => {
      if (!finalAssigned) {
        const r = await o.http.request('GET', `/v1/tasks/${enc(finalTask)}`);
        finalAssigned = r.status === 200 && isObject(r.json) && r.json.status === 'assigned' && r.json.agent === o.world.finalAgent;
      }
      return finalAssigned && deadCount >= expectedDead;
    }, timeoutMs);
    // Anything that would come after (a dead letter for a valid record) has had its batch committed by now: the final task came after it.
    if (!settled) violations.push(`after ${timeoutMs} ms: ${deadCount} of ${expectedDead} dead letters; the task sent after the junk ${finalAssigned ? 'was' : 'was NOT'} assigned to ${o.world.finalAgent}`);

    const codes = new Map<string, number>();
    const agents = new Set<string>();
    const list = await o.http.request('GET', '/v1/agents');
    if (Array.isArray(list.json)) for (const x of list.json) if (isObject(x) && typeof x.id === 'string') agents.add(x.id);
    let accepted = 0;
    const seen = new Set<string>();
    for (const c of o.cases) {
      const topic = topicOf(c);
      const offset = offsets[c.n];
      const at = `${topic}#${offset}`;
      seen.add(at);
      const got = dead.get(at) ?? [];
      const say = (p: string): void => { violations.push(`${describeKafkaCase(c, topic, offset)}: ${p}`); };
      if (c.expect.dead) {
        if (got.length === 0) { say('no dead letter'); continue; }
        const d = got[0];
        codes.set(d.headers['switchyard-error-code'], (codes.get(d.headers['switchyard-error-code']) ?? 0) + 1);
        if (got.length > 1) say(`${got.length} dead letters`);
        if (!d.value.equals(c.value ?? Buffer.alloc(0))) say(`dead letter value differs (${d.value.length} B, sent ${c.value?.length ?? 0} B)`);
        if (d.key !== c.key && !(c.key === null && d.key === '')) say(`dead letter key ${JSON.stringify(d.key)}, sent ${JSON.stringify(c.key)}`);
        if (d.headers['switchyard-error-code'] !== c.expect.code) say(`switchyard-error-code ${d.headers['switchyard-error-code']}, expected ${c.expect.code} (${d.headers['switchyard-error']?.slice(0, 200)})`);
        if (!c.expect.error.test(d.headers['switchyard-error'] ?? '')) say(`switchyard-error "${(d.headers['switchyard-error'] ?? '').slice(0, 300)}" does not match ${c.expect.error}`);
        if (d.headers['switchyard-source-partition'] !== '0') say(`switchyard-source-partition ${d.headers['switchyard-source-partition']}`);
      } else {
        if (got.length > 0) { say(`valid record dead-lettered: ${got[0].headers['switchyard-error-code']} ${got[0].headers['switchyard-error']?.slice(0, 200)}`); continue; }
        accepted++;
        const task = c.expect.task === 'derived' ? `${topic}-0-${offset}` : c.expect.task;
        if (task !== undefined) {
          const r = await o.http.request('GET', `/v1/tasks/${enc(task)}`);
          if (r.status !== 200 || !isObject(r.json) || typeof r.json.status !== 'string' || !TASK_STATUSES.includes(r.json.status)) say(`accepted task ${task} not found: ${r.status} ${r.body.toString('utf8').slice(0, 160)}`);
        }
        if (c.expect.agent !== undefined && !agents.has(c.expect.agent)) say(`agent ${c.expect.agent} not registered`);
      }
    }
    for (const [at, ds] of dead) if (!seen.has(at) && ds.some((d) => d.headers['switchyard-source-topic'] !== undefined)) violations.push(`a dead letter for ${at} that no case sent: ${ds[0].headers['switchyard-error']?.slice(0, 200)}`);
    return { sent: o.cases.length + 2, deadLetters: deadCount, codes, accepted, finalAssigned, violations, ms: performance.now() - t0 };
  } finally {
    await dlq.disconnect().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
  }
}
