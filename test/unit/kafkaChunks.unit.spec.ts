import { describe, expect, it } from 'vitest';
import { chunkTopicMessages, messageBytes } from '../../src/adapters/kafka/ensureTopics.js';

describe('chunkTopicMessages: produce requests small enough for any topic limit', () => {
  const msg = (topic: string, i: number, bytes: number) => ({ topic, message: { key: `k${i}`, value: 'v'.repeat(bytes), headers: { i: String(i) } } });

  it('keeps every request under the limit unless one message alone is larger, and keeps each topic in order', () => {
    const sizes = [300, 500, 200, 2000, 100, 100, 900, 50];
    const input = sizes.map((b, i) => msg(i % 2 === 0 ? 'a' : 'b', i, b));
    const requests = chunkTopicMessages(input, 1000);
    for (const r of requests) {
      const all = r.flatMap((t) => t.messages);
      const bytes = all.reduce((n, m) => n + messageBytes(m), 0);
      if (all.length > 1) expect(bytes).toBeLessThanOrEqual(1000);
    }
    // The 2000-byte message goes alone.
    expect(requests.some((r) => r.length === 1 && r[0].messages.length === 1 && r[0].messages[0].key === 'k3')).toBe(true);
    // Nothing lost, nothing duplicated, each topic's messages in submission order.
    for (const topic of ['a', 'b']) {
      const sent = requests.flatMap((r) => r.filter((t) => t.topic === topic).flatMap((t) => t.messages.map((m) => m.key)));
      expect(sent).toEqual(input.filter((m) => m.topic === topic).map((m) => m.message.key));
    }
  });

  it('sends small messages together in one request', () => {
    const requests = chunkTopicMessages([msg('a', 1, 10), msg('b', 2, 10), msg('a', 3, 10)]);
    expect(requests).toHaveLength(1);
    expect(requests[0].map((t) => [t.topic, t.messages.length])).toEqual([['a', 2], ['b', 1]]);
    expect(chunkTopicMessages([])).toEqual([]);
  });
});
