import { availableParallelism } from 'node:os';
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

// One value for the projects that run side by side (vitest requires it of a group): at least two
// files at once, so that the long and mostly idle outage test (edge-outage.pg.test.ts, 5 minutes)
// runs beside the others even on two cores.
const workers = Math.max(2, availableParallelism() - 1);

/**
 * The Worker and its objects in workerd, with the test Postgres behind the Hyperdrive binding;
 * `relays`: the same files with every device placed on a relay object of at most two sockets
 * (docs/architecture.md#relays), so that each guarantee is also tested through relays.
 */
function workersProject(name: string, relays: Record<string, string>) {
  return {
    plugins: [
      cloudflareTest(({ inject }) => ({
        wrangler: { configPath: './wrangler.toml' },
        miniflare: {
          hyperdrives: { DB: inject('workersPgUrl') },
          // A local run (docs/protocol.md#worker-configuration); the secret is a known development value.
          // docs/protocol.md#limits, at values the tests can reach: a burst above the 300 requests of
          // the replacement test, a slow refill, a cap of 8 flows per client, and a flow log that
          // holds 1,000 flows at most.
          bindings: {
            REPLICATOR_SECRET: 'edgeplane-test-replicator-secret-0123456789abcdef',
            EDGEPLANE_ENV: 'local',
            FLOW_RATE_PER_SECOND: '2',
            FLOW_BURST: '400',
            FLOW_MAX_PER_CLIENT: '8',
            FLOW_LOG_BACKLOG_MAX: '1000',
            // A stalled database operation fails after 3 s rather than 8 (docs/architecture.md#database-stalls).
            DATABASE_STALL_MS: '3000',
            ...relays,
          },
          // A limiter as tight as a test of the account limit needs (test/workers/front-door.test.ts).
          ratelimits: { TEST_TIGHT_CONNECTS: { namespace_id: '1299', simple: { limit: 5, period: 10 } } },
        },
      })),
    ],
    test: {
      name,
      root: '.',
      maxWorkers: workers,
      include: ['test/workers/**/*.test.ts'],
      ...(name === 'workers' ? {} : { testNamePattern: new RegExp(`^(?!.*(?:${NOT_WITH_RELAYS.map(literal).join('|')}))`) }),
      testTimeout: 60_000,
      hookTimeout: 60_000,
    },
  };
}

/**
 * Tests that read what one object holds when it is the only one, not what relays must preserve:
 * left out of the workers-relays run by name, each with why.
 */
const NOT_WITH_RELAYS = [
  // Counts the Postgres clients of one connect: a relay's own hydration is one more, by design.
  'on an existing database, a shard loads its ids from Postgres once',
  // Reads the writer's cache for the connected client's row, which reaches the writer only through
  // the stream (these tests have no replicator; the relay that accepted the client has it).
  'reads an account of several pages',
  // Reads the writer's token cache before any device connects: with relays, tokens expire (and leave
  // the cache) on the relay that holds the sockets; the writer's alarm does not run for them.
  'expired tokens leave memory and SQLite when the alarm',
  // A new account's first connect through a relay waits for the relay's own hydration (a Postgres
  // read after the writer's), which the 200 ms bound after the batch does not leave room for.
  'an account and its token committed a moment ago connect as soon as the account is delivered',
  // Counts the statements of one object's group commit: with relays of two sockets, each relay
  // writes its own two devices (batching is per object; the workers project tests it on one).
  'simultaneous new devices are written in fewer statements than devices',
  // Reads one object's view digests for its four sockets: with two sockets a relay they are on two objects.
  'the first batch after a wake gives every socket exactly its frames',
];
const literal = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The whole system: the run's Postgres, the replicator and the local Worker as child processes,
 * WebSocket devices (`ws`). One stack per file; files run one after the other, after the other
 * projects (groups of their own: their timing bounds need the machine to itself).
 */
function e2eProject(name: string, groupOrder: number, env: Record<string, string>, include: string[]) {
  return {
    test: {
      name,
      root: '.',
      sequence: { groupOrder },
      include,
      env,
      globalSetup: ['test/support/e2e-global-setup.ts'],
      maxWorkers: 1,
      testTimeout: 180_000,
      hookTimeout: 180_000,
    },
  };
}

export default defineConfig({
  test: {
    // One Postgres for the whole run (every project that needs it reads its URL with inject).
    globalSetup: ['test/support/global-setup.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          root: '.',
          maxWorkers: workers,
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'pg',
          root: '.',
          include: ['test/**/*.pg.test.ts'],
          exclude: ['test/workers/**'],
          maxWorkers: workers,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      workersProject('workers', {}),
      workersProject('workers-relays', { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: '2' }),
      e2eProject('e2e', 1, {}, ['test/e2e/**/*.e2e.test.ts']),
      // The stack with every device on relays of two sockets: the files about devices and delivery
      // (the others start the local run or the image, which place devices as the Worker does).
      e2eProject('e2e-relays', 2, { EDGEPLANE_E2E_RELAYS: '1', EDGEPLANE_E2E_SOCKETS: '400' }, [
        'test/e2e/scenarios.e2e.test.ts',
        'test/e2e/faults.e2e.test.ts',
        'test/e2e/postgres-restart.e2e.test.ts',
        'test/e2e/local-worker.e2e.test.ts',
      ]),
    ],
  },
});
