import path from 'node:path';
import { type Unstable_Config, unstable_readConfig } from 'wrangler';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../dev/root.ts';
import { configSchema } from '../../replicator/config.ts';
import { PASSED_THROUGH, REPLICATOR_INSTANCES } from '../../workers/replicator/replicator-shape.ts';

// docs/protocol.md#worker-configuration: the top level is the local run's, [env.production] the
// deployed Worker's. Wrangler environments inherit no bindings, so production repeats them.
const configPath = path.join(ROOT, 'wrangler.toml');
const local: Unstable_Config = unstable_readConfig({ config: configPath }, { hideWarnings: true });
const production: Unstable_Config = unstable_readConfig({ config: configPath, env: 'production' }, { hideWarnings: true });

describe('wrangler.toml', () => {
  it('keeps the local run free of containers and crons (no Docker engine, no account)', () => {
    expect(local.containers ?? []).toEqual([]);
    expect(local.triggers.crons ?? []).toEqual([]);
    expect(local.durable_objects.bindings.map((b) => b.class_name)).not.toContain('ReplicatorContainer');
  });

  it('repeats every local binding in production', () => {
    expect(production.name).toBe(local.name);
    for (const binding of local.durable_objects.bindings) expect(production.durable_objects.bindings).toContainEqual(binding);
    expect(production.hyperdrive.map((h) => h.binding)).toEqual(local.hyperdrive.map((h) => h.binding));
    expect(production.ratelimits).toEqual(local.ratelimits);
    // Production's migrations are the local ones, then the container's class.
    expect(production.migrations.slice(0, local.migrations.length)).toEqual(local.migrations);
    expect(production.migrations.slice(local.migrations.length)).toEqual([{ tag: 'v3', new_sqlite_classes: ['ReplicatorContainer'] }]);
  });

  it('declares the replicator container, its binding, its cron and its secrets in production', () => {
    expect(production.durable_objects.bindings).toContainEqual({ name: 'REPLICATOR', class_name: 'ReplicatorContainer' });
    const [container, ...others] = production.containers ?? [];
    expect(others).toEqual([]);
    expect(container?.class_name).toBe('ReplicatorContainer');
    expect(container?.max_instances).toBe(REPLICATOR_INSTANCES.length);
    expect(container?.image).toMatch(/^registry\.cloudflare\.com\/edgeplane-replicator:[\w.-]+$/);
    expect(production.triggers.crons).toEqual(['* * * * *']);
    expect(production.secrets?.required).toEqual(['REPLICATOR_SECRET', 'REPLICATION_DATABASE_URL']);
    expect(Object.keys(production.vars)).toEqual(['EDGE_URL', 'SLOT_NAME', 'PUBLICATION_NAME']);
  });

  it('passes every replicator variable to the container, each from somewhere', () => {
    const fromOwnSources = ['DATABASE_URL', 'EDGE_URL', 'REPLICATOR_SECRET', 'REPLICATOR_PORT'];
    expect([...fromOwnSources, ...PASSED_THROUGH].sort()).toEqual(Object.keys(configSchema.shape).sort());
  });
});
