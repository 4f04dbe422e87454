import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const nodeBuiltins = ['fs', 'path', 'os', 'crypto', 'http', 'https', 'net', 'child_process', 'dns', 'stream', 'util', 'worker_threads', 'timers'];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'clients/typescript/dist/**', 'drizzle/**', 'test/artifacts/**', 'bench/out/**', '.tools/**', '.data/**', '*.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // The client package's examples are scripts for Node.
    files: ['clients/typescript/examples/**/*.mjs'],
    languageOptions: { globals: { console: 'readonly', process: 'readonly' } },
  },
  {
    // src/db is the layer below the ledger: the ledger imports it, never the other way (an import cycle between them).
    files: ['src/db/**/*.ts'],
    ignores: ['src/db/**/*.test.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['../credits/*', '../api/*'], message: 'src/db imports neither the ledger nor the API' }] }],
    },
  },
  {
    // The determinism wall: workflow code runs in Temporal's sandbox and is replayed; no I/O, no Node built-ins.
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...nodeBuiltins.flatMap((name) => [name, `node:${name}`]).map((name) => ({ name, message: 'workflows must be deterministic: no Node built-ins' })),
            ...['postgres', 'drizzle-orm', 'express', 'pino', '@temporalio/client', '@temporalio/worker', '@temporalio/activity'].map((name) => ({
              name,
              message: 'workflows must be deterministic: I/O belongs in activities',
            })),
          ],
          patterns: [
            {
              group: ['../db/*', '../api/*', '../backend/http-*', '../lib/logger', '../contracts/*-start', '../notifications/*', '../dispatch/*', '../wire/*'],
              message: 'workflows must not import I/O modules (the layers: scripts/lib/layers.ts)',
            },
            { group: ['../activities/*'], allowTypeImports: true, message: 'import activities as types only' },
          ],
        },
      ],
      'no-restricted-globals': ['error', { name: 'setTimeout', message: 'use sleep() from @temporalio/workflow' }, { name: 'setInterval', message: 'use sleep() in a loop' }],
    },
  },
);
