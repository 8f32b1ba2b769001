import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['node_modules/**', '.drover/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Workflow code runs in Temporal's deterministic sandbox: no Node APIs, no I/O.
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [
          { group: ['node:*', 'fs', 'path', 'os', 'child_process', 'crypto', 'net', 'http', 'https'], message: 'Workflow code must be deterministic: no Node APIs.' },
          { group: ['@temporalio/client', '@temporalio/worker', '@temporalio/activity', 'ssh2', 'fastify'], message: 'Workflow code may import only @temporalio/workflow and pure modules.' },
        ],
      }],
    },
  },
);
