import { readdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../migrations/migrate.ts';
import { DOMAIN_TABLES } from '../../src/tables.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const COMMON = ['account_id', 'inserted_at', 'updated_at'];
// docs/protocol.md#schema, table by table: the columns besides the common ones.
const EXPECTED: Record<string, string[]> = {
  accounts: ['id', 'name', 'slug', 'disabled_at', 'deleted_at', 'inserted_at', 'updated_at'],
  actors: ['id', ...COMMON, 'name', 'type', 'disabled_at', 'deleted_at'],
  actor_groups: ['id', ...COMMON, 'name', 'deleted_at'],
  actor_group_memberships: ['id', ...COMMON, 'actor_id', 'group_id'],
  sites: ['id', ...COMMON, 'name', 'deleted_at'],
  gateways: ['id', ...COMMON, 'site_id', 'external_id', 'name', 'public_key', 'last_seen_version', 'deleted_at'],
  resources: ['id', ...COMMON, 'type', 'name', 'address', 'address_description', 'ip_stack', 'filters', 'deleted_at'],
  resource_connections: [...COMMON, 'resource_id', 'site_id'],
  policies: ['id', ...COMMON, 'actor_group_id', 'resource_id', 'description', 'conditions', 'disabled_at', 'deleted_at'],
  clients: ['id', ...COMMON, 'actor_id', 'external_id', 'name', 'public_key', 'last_seen_version', 'verified_at', 'deleted_at'],
  tokens: ['id', ...COMMON, 'type', 'actor_id', 'site_id', 'secret_salt', 'secret_hash', 'expires_at', 'deleted_at'],
  flows: ['id', ...COMMON, 'client_id', 'gateway_id', 'resource_id', 'policy_id', 'token_id', 'expires_at'],
  change_logs: ['id', ...COMMON, 'lsn', 'seq', 'xid', 'table_name', 'op', 'old_data', 'data', 'vsn', 'committed_at'],
  // Extensions (docs/protocol.md#schema): delivery cursors and the epochs the log belongs to.
  delivery_cursors: ['account_id', 'lsn', 'seq', 'needs_rehydrate', 'skip_lsn', 'skip_seq', 'updated_at'],
  replication_epochs: ['slot_name', 'epoch', 'epoch_number', 'system_identifier', 'timeline', 'started_at'],
};

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase('schema');
});
afterAll(async () => {
  await db.drop();
});

describe('migrations', () => {
  it('creates every table of docs/protocol.md#schema with exactly its columns', async () => {
    const rows = await db.sql<{ table_name: string; column_name: string }[]>`
      select table_name, column_name from information_schema.columns where table_schema = 'public'`;
    const actual: Record<string, string[]> = {};
    for (const r of rows) (actual[r.table_name] ??= []).push(r.column_name);
    for (const [table, columns] of Object.entries(EXPECTED)) {
      expect(actual[table]?.sort(), table).toEqual([...columns].sort());
    }
  });

  it('gives every published table REPLICA IDENTITY FULL and uuid ids', async () => {
    const rows = await db.sql<{ relname: string; relreplident: string }[]>`
      select relname, relreplident from pg_class where relname = any(${[...DOMAIN_TABLES]}) and relkind = 'r'`;
    expect(rows).toHaveLength(DOMAIN_TABLES.length);
    for (const r of rows) expect(r.relreplident, r.relname).toBe('f');
    const ids = await db.sql<{ table_name: string; data_type: string }[]>`
      select table_name, data_type from information_schema.columns
      where table_schema = 'public' and column_name = 'id' and table_name <> 'change_logs'`;
    for (const r of ids) expect(r.data_type, r.table_name).toBe('uuid');
  });

  it('enforces the unique keys', async () => {
    const uniques = await db.sql<{ table_name: string; columns: string[] }[]>`
      select c.conrelid::regclass::text as table_name,
             array_agg(a.attname::text order by k.ord) as columns
      from pg_constraint c
      cross join lateral unnest(c.conkey) with ordinality as k(attnum, ord)
      join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum
      where c.contype in ('u', 'p') and c.connamespace = 'public'::regnamespace
      group by c.oid, c.conrelid`;
    const keys = uniques.map((u) => `${u.table_name}(${u.columns.join(',')})`);
    expect(keys).toEqual(
      expect.arrayContaining([
        'accounts(slug)',
        'actor_group_memberships(actor_id,group_id)',
        'gateways(site_id,external_id)',
        'resource_connections(resource_id,site_id)',
        'clients(actor_id,external_id)',
        'change_logs(lsn,seq)',
      ]),
    );
  });

  it('is idempotent and records what it applied', async () => {
    const again = await migrate(db.sql);
    expect(again.applied).toEqual([]);
    expect(again.skipped).toEqual(
      readdirSync(new URL('../../migrations/', import.meta.url))
        .filter((f) => /^\d+_.*\.sql$/.test(f))
        .sort(),
    );
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from schema_migrations`;
    expect(row?.n).toBe(again.skipped.length);
  });

  it('refuses writes over the limits of docs/protocol.md#schema with the named CHECK constraint', async () => {
    const [account] = await db.sql<{ id: string }[]>`insert into accounts (name, slug) values ('Limits', 'limits') returning id`;
    const accountId = account!.id;
    const [group] = await db.sql<{ id: string }[]>`insert into actor_groups (account_id, name) values (${accountId}, 'g') returning id`;
    const [resource] = await db.sql<{ id: string }[]>`
      insert into resources (account_id, type, name, address) values (${accountId}, 'dns', 'r', 'a.example') returning id`;
    const refused = async (constraint: string, write: Promise<unknown>) => {
      await expect(write).rejects.toMatchObject({ code: '23514', constraint_name: constraint });
    };
    const long = (n: number) => 'x'.repeat(n);
    await refused('accounts_name_length', db.sql`update accounts set name = ${long(256)} where id = ${accountId}`);
    await refused('accounts_slug_length', db.sql`update accounts set slug = ${long(256)} where id = ${accountId}`);
    await refused('resources_address_description_length', db.sql`update resources set address_description = ${long(3_000_000)} where id = ${resource!.id}`);
    await refused('resources_address_length', db.sql`update resources set address = ${long(1025)} where id = ${resource!.id}`);
    const filters = Array.from({ length: 65 }, () => ({ protocol: 'tcp', ports: ['80'] }));
    await refused('resources_filters_entries', db.sql`update resources set filters = ${db.sql.json(filters)} where id = ${resource!.id}`);
    const condition = (values: number) => ({ property: 'remote_ip', operator: 'is_in_cidr', values: Array.from({ length: values }, (_, i) => `10.0.${i}.0/24`) });
    const policy = (conditions: unknown) => db.sql`
      insert into policies (account_id, actor_group_id, resource_id, conditions) values (${accountId}, ${group!.id}, ${resource!.id}, ${db.sql.json(conditions as never)})`;
    await refused('policies_conditions_entries', policy(Array.from({ length: 65 }, () => condition(1))));
    await refused('policies_conditions_entries', policy([condition(65)]));
    await refused(
      'policies_description_length',
      db.sql`
      insert into policies (account_id, actor_group_id, resource_id, description) values (${accountId}, ${group!.id}, ${resource!.id}, ${long(1025)})`,
    );
    // At the limits, writes go through.
    await policy(Array.from({ length: 64 }, () => condition(64)));
    await db.sql`update resources set name = ${long(255)}, address = ${long(1024)}, address_description = ${long(1024)}, filters = ${db.sql.json(filters.slice(1))} where id = ${resource!.id}`;
  });
});
