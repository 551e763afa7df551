import { createExecutionContext, createScheduledController, waitOnExecutionContext } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, describe, expect, it, vi } from 'vitest';
import worker from '../../workers/index.ts';
import type { ReplicatorContainer, ReplicatorReport } from '../../workers/replicator/replicator-container.ts';
import { keepReplicatorsRunning } from '../../workers/replicator/keep-running.ts';
import { replicatorSettings } from '../../workers/replicator/replicator-env.ts';
import { REPLICATOR_INSTANCES } from '../../workers/replicator/replicator-shape.ts';

// docs/protocol.md#replicator-container. The container itself needs the platform (or a Docker
// engine under wrangler dev): these tests cover what the Worker decides around it.
const SECRET = 'a-production-secret-of-at-least-32-bytes-0123456789';
const deployed = {
  ...env,
  EDGEPLANE_ENV: undefined,
  REPLICATOR_SECRET: SECRET,
  REPLICATION_DATABASE_URL: 'postgres://repl:pw@db.example.net:5432/app?sslmode=require',
  EDGE_URL: 'https://edgeplane.acme.workers.dev',
  SLOT_NAME: 'edgeplane',
  PUBLICATION_NAME: 'edgeplane',
} as Env;

describe('the replicator container configuration', () => {
  it('builds the replicator environment from the Worker one', () => {
    const extra = { MAX_UNACKED: 5000, LOG_LEVEL: 'debug', UNRELATED: 'x' } as unknown as Partial<Env>;
    expect(replicatorSettings({ ...deployed, ...extra })).toEqual({
      envVars: {
        DATABASE_URL: 'postgres://repl:pw@db.example.net:5432/app?sslmode=require',
        EDGE_URL: 'https://edgeplane.acme.workers.dev',
        REPLICATOR_SECRET: SECRET,
        REPLICATOR_PORT: '9187',
        SLOT_NAME: 'edgeplane',
        PUBLICATION_NAME: 'edgeplane',
        MAX_UNACKED: '5000',
        LOG_LEVEL: 'debug',
      },
      problems: [],
    });
  });

  it('names every missing or unfit item, and starts nothing then', () => {
    const { problems } = replicatorSettings({ ...deployed, REPLICATION_DATABASE_URL: undefined, EDGE_URL: undefined, REPLICATOR_SECRET: undefined } as Env);
    expect(problems).toEqual([
      expect.stringMatching(/^REPLICATION_DATABASE_URL is not set/),
      expect.stringMatching(/^EDGE_URL is not set/),
      expect.stringMatching(/^REPLICATOR_SECRET is not set/),
    ]);
    const unfit = replicatorSettings({
      ...deployed,
      REPLICATION_DATABASE_URL: 'mysql://db/app',
      EDGE_URL: 'http://edgeplane.acme.workers.dev',
      REPLICATOR_SECRET: 'short',
    } as Env).problems;
    expect(unfit).toEqual(['REPLICATION_DATABASE_URL must be a postgres:// or postgresql:// URL', 'EDGE_URL must be a https:// URL', 'REPLICATOR_SECRET is shorter than 32 bytes']);
  });
});

describe('keeping the replicator running', () => {
  afterEach(() => vi.restoreAllMocks());

  it('does nothing in a local run, which has no REPLICATOR binding', async () => {
    expect(env.REPLICATOR).toBeUndefined();
    const ctx = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '* * * * *' }), env, ctx);
    await waitOnExecutionContext(ctx);
  });

  it('asks each instance every minute, and logs one that cannot be reached without failing the others', async () => {
    const asked: string[] = [];
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    const infos = vi.spyOn(console, 'log').mockImplementation(() => {});
    const namespace = {
      getByName: (name: string) => ({
        ensureRunning: async (trigger: string): Promise<ReplicatorReport> => {
          asked.push(`${name}:${trigger}`);
          if (name === 'replicator-b') throw new Error('object unreachable');
          return { instance: name, status: 'healthy', health: { healthy: true, state: 'streaming' } };
        },
      }),
    } as unknown as DurableObjectNamespace<ReplicatorContainer>;
    const ctx = createExecutionContext();
    worker.scheduled(createScheduledController({ cron: '* * * * *' }), { ...deployed, REPLICATOR: namespace }, ctx);
    await waitOnExecutionContext(ctx);
    expect(asked.sort()).toEqual(REPLICATOR_INSTANCES.map((n) => `${n}:cron`));
    const logged = (spy: typeof errors) => spy.mock.calls.map(([line]) => JSON.parse(String(line)) as Record<string, unknown>);
    expect(logged(infos)).toContainEqual(expect.objectContaining({ msg: 'replicator checked', instance: 'replicator-a', status: 'healthy' }));
    expect(logged(errors)).toContainEqual(expect.objectContaining({ msg: 'could not reach the replicator container', instance: 'replicator-b' }));
    // Called directly too (the same function): an unreachable instance does not throw.
    await expect(keepReplicatorsRunning({ ...deployed, REPLICATOR: namespace }, 'test')).resolves.toBeUndefined();
  });
});
