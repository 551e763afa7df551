import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // One Postgres for the whole run (every project that needs it reads its URL with inject).
    globalSetup: ['test/support/global-setup.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          root: '.',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'pg',
          root: '.',
          include: ['test/**/*.pg.test.ts'],
          exclude: ['test/workers/**'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        // The Worker and its objects in workerd, with the test Postgres behind the Hyperdrive binding.
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              hyperdrives: { DB: inject('workersPgUrl') },
              // A local run (docs/protocol.md#worker-configuration); the secret is a known development value.
              bindings: { REPLICATOR_SECRET: 'edgeplane-test-replicator-secret-0123456789abcdef', EDGEPLANE_ENV: 'local' },
              // A limiter as tight as a test of the account limit needs (test/workers/front-door.test.ts).
              ratelimits: { TEST_TIGHT_CONNECTS: { namespace_id: '1299', simple: { limit: 5, period: 10 } } },
            },
          })),
        ],
        test: {
          name: 'workers',
          root: '.',
          include: ['test/workers/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        // The whole system: the run's Postgres, the replicator and the local Worker as child processes,
        // WebSocket devices (`ws`). One stack per file; files run one after the other.
        test: {
          name: 'e2e',
          root: '.',
          include: ['test/e2e/**/*.e2e.test.ts'],
          globalSetup: ['test/support/e2e-global-setup.ts'],
          maxWorkers: 1,
          testTimeout: 180_000,
          hookTimeout: 180_000,
        },
      },
    ],
  },
});
