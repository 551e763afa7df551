/**
 * Postgres for the edge benchmark: bulk builders for the accounts it measures (the writes it
 * measures go through test/support/recorded-transaction.ts, as the workers tests' do).
 */
import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import type { Row } from '../src/json.ts';
import type { TableName } from '../src/tables.ts';
import { secretHash } from '../src/tokens.ts';

type Values = Record<string, unknown>;

const text = (n: number) => randomBytes(n).toString('base64url').slice(0, n);

export async function insertOne(sql: Sql, table: TableName, values: Values): Promise<Row> {
  const [r] = await sql<{ row: Row }[]>`insert into ${sql(table)} ${sql(values as Record<string, never>)} returning to_jsonb(${sql(table)}.*) as row`;
  return r!.row;
}

async function insertMany(sql: Sql, table: TableName, rows: Values[]): Promise<Row[]> {
  const out: Row[] = [];
  for (let i = 0; i < rows.length; i += 1000) {
    const chunk = rows.slice(i, i + 1000) as Record<string, never>[];
    for (const r of await sql<{ row: Row }[]>`insert into ${sql(table)} ${sql(chunk)} returning to_jsonb(${sql(table)}.*) as row`) out.push(r.row);
  }
  return out;
}

/** Token rows and the texts devices present (`<account_id>.<token_id>.<secret>`). */
export async function insertTokens(sql: Sql, accountId: string, type: 'client' | 'site', owners: readonly string[]): Promise<string[]> {
  const secrets = owners.map(() => text(32));
  const rows = await Promise.all(
    owners.map(async (owner, i) => {
      const salt = text(16);
      return { account_id: accountId, type, [type === 'client' ? 'actor_id' : 'site_id']: owner, secret_salt: salt, secret_hash: await secretHash(salt, secrets[i]!) };
    }),
  );
  const inserted = await insertMany(sql, 'tokens', rows);
  return inserted.map((r, i) => `${accountId}.${r.id as string}.${secrets[i]!}`);
}

export interface BenchAccount {
  id: string;
  group: Row;
  site: Row;
  /** One resource per policy, each connected to the site and granted to the group. */
  resources: Row[];
  policies: Row[];
  actors: Row[];
  /** A client token for each of the first `tokens` actors, in the same order. */
  clientTokens: string[];
}

/**
 * An account with `actors` actors in one group, a site, `resources` resources connected to it and
 * each granted to the group by a policy, and client tokens for the first `tokens` actors; written
 * with plain bulk inserts (the object loads it by hydration, not by changes).
 */
export async function createAccount(sql: Sql, name: string, o: { actors: number; resources?: number; tokens?: number }): Promise<BenchAccount> {
  const { actors, resources = 1, tokens = actors } = o;
  const account = await insertOne(sql, 'accounts', { name, slug: `${name}-${text(8).toLowerCase()}` });
  const id = account.id as string;
  const group = await insertOne(sql, 'actor_groups', { account_id: id, name: 'Everyone' });
  const site = await insertOne(sql, 'sites', { account_id: id, name: 'HQ' });
  const resourceRows: Row[] = [];
  const policyRows: Row[] = [];
  for (let i = 0; i < resources; i++) {
    const resource = await insertOne(sql, 'resources', {
      account_id: id,
      type: 'dns',
      name: `Wiki ${i}`,
      address: `wiki${i}.example.com`,
      address_description: 'the wiki',
      ip_stack: 'dual',
      filters: sql.json([{ protocol: 'tcp', ports: ['443'] }]),
    });
    await insertOne(sql, 'resource_connections', { account_id: id, resource_id: resource.id, site_id: site.id });
    policyRows.push(await insertOne(sql, 'policies', { account_id: id, actor_group_id: group.id, resource_id: resource.id, description: 'allow' }));
    resourceRows.push(resource);
  }
  const actorRows = await insertMany(
    sql,
    'actors',
    Array.from({ length: actors }, (_, i) => ({ account_id: id, name: `Actor ${i}`, type: 'account_user' })),
  );
  await insertMany(
    sql,
    'actor_group_memberships',
    actorRows.map((a) => ({ account_id: id, actor_id: a.id, group_id: group.id })),
  );
  const clientTokens = await insertTokens(
    sql,
    id,
    'client',
    actorRows.slice(0, tokens).map((a) => a.id as string),
  );
  return { id, group, site, resources: resourceRows, policies: policyRows, actors: actorRows, clientTokens };
}
