import { Agent, request } from 'node:http';

/**
 * A keep-alive HTTP/JSON caller for the benchmark clients that talk to Switchyard's API: one
 * socket pool for every simulated agent and producer, failures counted by status (`error` for a
 * transport error) rather than thrown, so a run finishes and reports them.
 */
export interface HttpCaller {
  call(method: string, path: string, body?: unknown): Promise<{ status: number; text: string }>;
  /** Non-2xx answers and transport errors, by status ('error' for transport). */
  failures: Record<string, number>;
  readonly requests: number;
}

export function httpCaller(url: string): HttpCaller {
  const base = new URL(url);
  const httpAgent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 4096 });
  const failures: Record<string, number> = {};
  let requests = 0;
  function call(method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
    const data = body === undefined ? undefined : JSON.stringify(body);
    requests++;
    return new Promise((resolve) => {
      const req = request({
        host: base.hostname, port: base.port, method, path, agent: httpAgent,
        headers: data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { text += c; });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 300) failures[status] = (failures[status] ?? 0) + 1;
          resolve({ status, text });
        });
      });
      req.on('error', () => {
        failures.error = (failures.error ?? 0) + 1;
        resolve({ status: 0, text: '' });
      });
      req.end(data);
    });
  }
  return { call, failures, get requests() { return requests; } };
}
