// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  {
    // The domain is pure and deterministic: no I/O libraries, no adapters, no clock, no randomness.
    files: ['src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['node:*', 'fs', 'path', 'os', 'crypto', 'child_process', 'net', 'http', 'worker_threads'], message: 'src/domain does no I/O.' },
          { group: ['fastify', 'pino', 'kafkajs', 'better-sqlite3', '@eventstore/*', 'yaml'], message: 'src/domain imports only zod and itself.' },
          { group: ['**/adapters/**', '**/runtime/**', '**/projections/**'], message: 'Dependencies point inward: the domain imports nothing outside it.' },
        ],
      }],
      'no-restricted-properties': ['error',
        { object: 'Date', property: 'now', message: 'Time enters the domain as data (command.at).' },
        { object: 'Math', property: 'random', message: 'The domain is deterministic.' },
        { object: 'performance', property: 'now', message: 'Time enters the domain as data.' },
      ],
      'no-restricted-syntax': ['error', { selector: "NewExpression[callee.name='Date'][arguments.length=0]", message: 'Time enters the domain as data (command.at).' }],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval', 'setImmediate', 'fetch', 'process', 'console'],
    },
  },
);
