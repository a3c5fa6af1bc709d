import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify';
import type { z } from 'zod';
import { DomainError } from '../../domain/errors.js';
import {
  AgentReadySchema, CancelSchema, CompletionSchema, TaskSubmissionSchema, fieldIssues, type FieldIssue,
} from '../../domain/inputs.js';
import { DispatchError, type RuntimeErrorCode } from '../../runtime/errors.js';
import type { DispatchService } from '../../runtime/service.js';

/** What the HTTP app needs besides the service: read models, kept behind functions. */
export interface AppDeps {
  service: DispatchService;
  /** The task's status, attempt, agent and history; undefined when unknown. */
  task(id: string): Promise<unknown>;
  dashboard(): unknown;
  /** Prometheus text exposition. */
  metrics(): string;
  health(): { ok: boolean; [k: string]: unknown };
  /** Largest accepted body in bytes (413 above). Default 1 MiB. */
  bodyLimit?: number;
  /** Longest long-poll wait a client may ask for. Default 30000. */
  maxWaitMs?: number;
  logger?: FastifyServerOptions['logger'] | false;
  loggerInstance?: FastifyServerOptions['loggerInstance'];
}

const STATUS: Record<RuntimeErrorCode, number> = {
  validation: 400,
  'not-found': 404,
  'stale-attempt': 409,
  'agent-not-alive': 409,
  conflict: 409,
  quota: 429,
  shed: 429,
  unavailable: 503,
};

const utf8 = new TextDecoder('utf-8', { fatal: true });

class BadRequest extends Error {
  /** `kind`: 'validation' (the schemas), or 'bad-request' (a body that is not UTF-8 JSON). */
  constructor(readonly issues: FieldIssue[], readonly kind: 'validation' | 'bad-request' = 'validation') {
    super(issues.map((i) => `${i.path}: ${i.message}`).join('; '));
  }
}

/**
 * Deepest nesting of arrays and objects a body or a Kafka record may have. z.json() and
 * JSON.stringify recurse: a payload a few thousand levels deep overflowed the stack in the
 * validator (500; on Kafka it crashed the ingress) or, past it, in the log append (the dispatcher stopped).
 */
export const MAX_JSON_DEPTH = 128;

/**
 * A parsed JSON value's first problem no schema sees, or undefined: nesting deeper than
 * {@link MAX_JSON_DEPTH}, or a `__proto__` key or a `constructor.prototype` (the shapes fastify's
 * JSON parser refuses; zod silently drops `__proto__`). Walks the value without recursion.
 */
export function unsafeJson(value: unknown): FieldIssue | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  interface Node { v: object; depth: number; key: string; up?: Node }
  const pathOf = (n: Node, last?: string): string => {
    const parts = last === undefined ? [] : [last];
    for (let x: Node | undefined = n; x?.up; x = x.up) parts.unshift(x.key);
    return parts.join('.') || '(root)';
  };
  const todo: Node[] = [{ v: value, depth: 1, key: '' }];
  for (let n = todo.pop(); n; n = todo.pop()) {
    if (n.depth > MAX_JSON_DEPTH) {
      // Name the top-level field: the full path is as long as the nesting.
      let top = n;
      while (top.up?.up) top = top.up;
      return { path: pathOf(top), message: `is nested more than ${MAX_JSON_DEPTH} levels deep` };
    }
    if (Array.isArray(n.v)) {
      for (let i = n.v.length - 1; i >= 0; i--) {
        const c: unknown = n.v[i];
        if (c !== null && typeof c === 'object') todo.push({ v: c, depth: n.depth + 1, key: String(i), up: n });
      }
      continue;
    }
    if (Object.hasOwn(n.v, '__proto__')) return { path: pathOf(n, '__proto__'), message: 'is a forbidden key' };
    const ctor = Object.hasOwn(n.v, 'constructor') ? (n.v as { constructor: unknown }).constructor : undefined;
    if (ctor !== null && typeof ctor === 'object' && Object.hasOwn(ctor, 'prototype')) {
      return { path: pathOf(n, 'constructor.prototype'), message: 'is a forbidden key' };
    }
    const keys = Object.keys(n.v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const c: unknown = (n.v as Record<string, unknown>)[keys[i]];
      if (c !== null && typeof c === 'object') todo.push({ v: c, depth: n.depth + 1, key: keys[i], up: n });
    }
  }
  return undefined;
}

function parse<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const unsafe = unsafeJson(body);
  if (unsafe) throw new BadRequest([unsafe]);
  const r = schema.safeParse(body);
  if (!r.success) throw new BadRequest(fieldIssues(r.error));
  return r.data;
}

/** Build the HTTP API (fastify). `server.ts` starts it; tests may `inject` or listen on a loopback port. */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    bodyLimit: deps.bodyLimit ?? 1024 * 1024,
    ...(deps.loggerInstance ? { loggerInstance: deps.loggerInstance } : { logger: deps.logger ?? false }),
    // Long-polls hold a request open; keep the socket alive longer than the longest wait.
    keepAliveTimeout: 65_000,
    return503OnClosing: true,
    // fastify's default (100) answered 414 for ids the schemas accept (up to 256 characters, more
    // once percent-encoded): such a task could be submitted but not looked up, cancelled or completed.
    // A longer id is simply unknown (404); the request line is bounded by node's header limit.
    routerOptions: { maxParamLength: 16 * 1024 },
    // A path that does not decode (`/v1/tasks/%zz`): 400 in the API's error shape.
    frameworkErrors: (err, _req, reply) => {
      const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 400;
      void (reply as FastifyReply).code(status).send({ error: 'bad-request', message: err.message, issues: [{ path: 'url', message: err.message }] });
    },
  });
  // fastify's own JSON parser (it refuses __proto__ and constructor.prototype keys), except that
  // an empty body is no body: clients that always send content-type json may POST nothing.
  // Bytes that are not UTF-8 are refused, as on Kafka: decoded leniently they became U+FFFD, so
  // two ids differing only there were one id, and the second submission was taken for a duplicate.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    const bytes = body as Buffer;
    if (bytes.length === 0) { done(null, undefined); return; }
    let text: string;
    try { text = utf8.decode(bytes); } catch {
      done(new BadRequest([{ path: '(root)', message: 'is not valid UTF-8' }], 'bad-request'), undefined);
      return;
    }
    json(req, text, (err, value) => {
      if (!err) { done(null, value); return; }
      // Say which: not JSON at all, or JSON with a forbidden key.
      let problem = 'has a forbidden key (__proto__ or constructor.prototype)';
      try { JSON.parse(text); } catch (e) { problem = `is not JSON: ${(e as Error).message}`; }
      done(new BadRequest([{ path: '(root)', message: problem }], 'bad-request'), undefined);
    });
  });
  const svc = deps.service;
  const maxWaitMs = deps.maxWaitMs ?? 30_000;

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof BadRequest) {
      return reply.code(400).send({ error: err.kind, message: err.message, issues: err.issues });
    }
    if (err instanceof DispatchError || err instanceof DomainError) {
      const code = err.code as RuntimeErrorCode;
      const body: Record<string, unknown> = { error: code, message: err.message };
      if (err.path) body.issues = [{ path: err.path.join('.'), message: err.message }];
      if (code === 'quota' || code === 'shed') reply.header('retry-after', '1');
      return reply.code(STATUS[code] ?? 500).send(body);
    }
    const e = err as { statusCode?: number; code?: string; message: string };
    if (e.statusCode === 413 || e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(413).send({ error: 'too-large', message: `body larger than ${deps.bodyLimit ?? 1024 * 1024} bytes` });
    }
    if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
      // fastify's own client errors: a wrong content type (415), a bad content-length, …
      const body: Record<string, unknown> = { error: 'bad-request', message: e.message };
      if (e.statusCode === 400) body.issues = [{ path: '(root)', message: e.message }];
      return reply.code(e.statusCode).send(body);
    }
    req.log.error({ err }, 'unhandled error');
    return reply.code(500).send({ error: 'internal', message: 'internal error' });
  });

  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'not-found', message: `no route ${req.method} ${req.url}` }));

  app.post('/v1/tasks', async (req, reply) => {
    const sub = parse(TaskSubmissionSchema, req.body);
    const r = await svc.submit(sub);
    return reply.code(202).send(r);
  });

  app.get<{ Params: { id: string } }>('/v1/tasks/:id', async (req, reply) => {
    const t = await deps.task(req.params.id);
    if (t === undefined) return reply.code(404).send({ error: 'not-found', message: `unknown task ${req.params.id}` });
    return t;
  });

  app.post<{ Params: { id: string } }>('/v1/tasks/:id/cancel', async (req) => {
    const body = parse(CancelSchema, req.body ?? {});
    return svc.cancel(req.params.id, body.reason);
  });

  app.post<{ Params: { id: string } }>('/v1/tasks/:id/complete', async (req) => {
    const c = parse(CompletionSchema, req.body);
    return svc.complete(req.params.id, c);
  });

  app.post<{ Params: { id: string } }>('/v1/agents/:id/ready', async (req) => {
    // The agent id is a name, as on the agents topic (at most 256 characters): it names the agent's Kafka topic too.
    const id = CompletionSchema.shape.agentId.safeParse(req.params.id);
    if (!id.success) throw new BadRequest(fieldIssues(id.error).map((i) => ({ path: 'id', message: i.message })));
    const body = parse(AgentReadySchema, req.body);
    return svc.ready(req.params.id, body);
  });

  app.post<{ Params: { id: string } }>('/v1/agents/:id/heartbeat', async (req) => svc.heartbeat(req.params.id));

  app.post<{ Params: { id: string } }>('/v1/agents/:id/leave', async (req) => svc.leave(req.params.id));

  app.get<{ Params: { id: string }; Querystring: { waitMs?: string } }>('/v1/agents/:id/assignments', async (req, reply) => {
    const raw = req.query.waitMs ?? '0';
    const waitMs = Number(raw);
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(waitMs)) {
      throw new BadRequest([{ path: 'waitMs', message: 'must be a non-negative integer (milliseconds)' }]);
    }
    const ac = new AbortController();
    // The client went away before an answer: stop waiting for it.
    reply.raw.on('close', () => { if (!reply.raw.writableFinished) ac.abort(); });
    const list = await svc.poll(req.params.id, Math.min(waitMs, maxWaitMs), ac.signal);
    if (list.length === 0) return reply.code(204).send();
    // An agent that hung up while its poll was being answered (the append that made the assignment
    // blocks the loop) is noticed only on the next turn: look once more, and keep its assignments
    // for its next poll rather than write them to a closed socket.
    await new Promise((r) => setImmediate(r));
    const socket = req.raw.socket;
    if (ac.signal.aborted || socket.destroyed || socket.readableEnded) {
      svc.giveBack(req.params.id, list);
      return reply.code(204).send();
    }
    return list;
  });

  app.get('/v1/agents', async () => svc.agents());
  app.get('/v1/dashboard', async () => deps.dashboard());
  app.get('/healthz', async (_req, reply) => {
    const h = deps.health();
    return reply.code(h.ok ? 200 : 503).send(h);
  });
  app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4').send(deps.metrics()));

  return app;
}
