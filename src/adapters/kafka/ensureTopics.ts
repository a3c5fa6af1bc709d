import type { Kafka } from 'kafkajs';

/**
 * Create topics that do not exist yet and wait for their leaders. Relying on the broker's
 * auto-creation races the first metadata request ("does not host this topic-partition").
 */
export async function ensureTopics(kafka: Kafka, topics: readonly string[], numPartitions = 1): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = [...new Set(topics)].filter((t) => !existing.has(t));
    if (missing.length === 0) return;
    try {
      await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions })), waitForLeaders: true });
    } catch (e) {
      // Another client created one first: fine, as long as they all exist now.
      const now = new Set(await admin.listTopics());
      if (missing.some((t) => !now.has(t))) throw e;
    }
  } finally {
    await admin.disconnect();
  }
}
