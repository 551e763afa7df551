import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../migrations/migrate.ts';
import { DOMAIN_TABLES } from '../../src/tables.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const COMMON = ['account_id', 'inserted_at', 'updated_at'];
// PROTOCOL.md section 1, table by table: the columns besides the common ones.
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
  change_logs: ['id', ...COMMON, 'lsn', 'seq', 'xid', 'table_name', 'op', 'old_data', 'data', 'vsn'],
};

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase('schema');
});
afterAll(async () => {
  await db.drop();
});

describe('migrations', () => {
  it('creates every table of PROTOCOL section 1 with exactly its columns', async () => {
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
    expect(again.skipped.length).toBeGreaterThan(0);
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from schema_migrations`;
    expect(row?.n).toBe(again.skipped.length);
  });

});
