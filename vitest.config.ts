import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.spec.ts'] } },
      {
        // Everything that talks to real services; a Kafka broker is started once for the run
        // (or skipped loudly where none can be had; under CI=true its absence fails).
        extends: true,
        test: {
          name: 'int',
          include: ['test/**/*.spec.ts'],
          exclude: ['test/unit/**', '**/node_modules/**'],
          globalSetup: ['test/setup/kafkaGlobalSetup.ts'],
        },
      },
    ],
  },
});
