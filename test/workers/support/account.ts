import type { Sql } from 'postgres';
import type { Change } from '../../../src/change.ts';
import type { Row } from '../../../src/json.ts';
import { commit, deliver, randomText, tokenValues, type Applied, type Tx } from './world.ts';

/**
 * The directory shard (an account id's first two hex digits) that accounts at random ids never fall
 * in: the workers test files share one database and create accounts at once, and
 * test/workers/account-directory.test.ts counts what this shard loads from it.
 */
export const RESERVED_SHARD = 'e7';

/** A random account id outside RESERVED_SHARD. */
export function randomAccountId(): string {
  for (;;) {
    const id = crypto.randomUUID();
    if (!id.startsWith(RESERVED_SHARD)) return id;
  }
}

/**
 * One test account in Postgres and in its object: builders for the rows access depends on, each
 * written in a real transaction and delivered to the object as the replicator would.
 */
export class TestAccount {
  private constructor(
    readonly sql: Sql,
    readonly id: string,
  ) {}

  /** Inserts the account row (not delivered: the object loads it when it hydrates); `id` to choose its id (by default a random one outside RESERVED_SHARD). */
  static async create(sql: Sql, name = 'acme', id: string = randomAccountId()): Promise<TestAccount> {
    const [row] = await sql<{ id: string }[]>`insert into accounts (id, name, slug) values (${id}, ${name}, ${`${name}-${randomText(10)}`}) returning id`;
    return new TestAccount(sql, row!.id);
  }

  /** Commits the writes of `fn` and returns the Changes without delivering them. */
  async commit(fn: (t: Tx) => Promise<unknown>): Promise<Change[]> {
    return await commit(this.sql, fn);
  }

  /** Commits and delivers. */
  async apply(fn: (t: Tx) => Promise<unknown>): Promise<Applied> {
    return await deliver(this.id, await this.commit(fn));
  }

  async deliver(changes: readonly Change[]): Promise<Applied> {
    return await deliver(this.id, changes);
  }

  // Builders: each writes one row inside the caller's transaction.
  actor(t: Tx, values: Record<string, unknown> = {}): Promise<Row> {
    return t.insert('actors', { account_id: this.id, name: 'Ann', type: 'account_user', ...values });
  }
  group(t: Tx, values: Record<string, unknown> = {}): Promise<Row> {
    return t.insert('actor_groups', { account_id: this.id, name: 'Engineering', ...values });
  }
  membership(t: Tx, actorId: unknown, groupId: unknown): Promise<Row> {
    return t.insert('actor_group_memberships', { account_id: this.id, actor_id: actorId, group_id: groupId });
  }
  site(t: Tx, values: Record<string, unknown> = {}): Promise<Row> {
    return t.insert('sites', { account_id: this.id, name: 'HQ', ...values });
  }
  resource(t: Tx, values: Record<string, unknown> = {}): Promise<Row> {
    return t.insert('resources', {
      account_id: this.id,
      type: 'dns',
      name: 'Wiki',
      address: 'wiki.example.com',
      address_description: 'the wiki',
      ip_stack: 'dual',
      filters: t.tx.json([{ protocol: 'tcp', ports: ['443'] }]),
      ...values,
    });
  }
  connection(t: Tx, resourceId: unknown, siteId: unknown): Promise<Row> {
    return t.insert('resource_connections', { account_id: this.id, resource_id: resourceId, site_id: siteId });
  }
  policy(t: Tx, groupId: unknown, resourceId: unknown, values: Record<string, unknown> = {}): Promise<Row> {
    return t.insert('policies', { account_id: this.id, actor_group_id: groupId, resource_id: resourceId, description: 'allow', ...values });
  }
  /** A client token of the actor; returns the token text devices present. */
  async clientToken(t: Tx, actorId: unknown, extra: Record<string, unknown> = {}): Promise<{ row: Row; token: string }> {
    const { values, secret } = await tokenValues(this.id, 'client', String(actorId), extra);
    const row = await t.insert('tokens', values);
    return { row, token: `${this.id}.${row.id as string}.${secret}` };
  }
  async siteToken(t: Tx, siteId: unknown, extra: Record<string, unknown> = {}): Promise<{ row: Row; token: string }> {
    const { values, secret } = await tokenValues(this.id, 'site', String(siteId), extra);
    const row = await t.insert('tokens', values);
    return { row, token: `${this.id}.${row.id as string}.${secret}` };
  }
}

export interface Basic {
  actor: Row;
  group: Row;
  site: Row;
  resource: Row;
  policy: Row;
  token: string;
  tokenRow: Row;
}

/** An actor in a group, a site, a resource connected to it and a policy granting it, and a client token. */
export async function basicSetup(account: TestAccount, resourceValues: Record<string, unknown> = {}): Promise<Basic> {
  let out: Basic | undefined;
  await account.apply(async (t) => {
    const actor = await account.actor(t);
    const group = await account.group(t);
    await account.membership(t, actor.id, group.id);
    const site = await account.site(t);
    const resource = await account.resource(t, resourceValues);
    await account.connection(t, resource.id, site.id);
    const policy = await account.policy(t, group.id, resource.id);
    const { row, token } = await account.clientToken(t, actor.id);
    out = { actor, group, site, resource, policy, token, tokenRow: row };
  });
  return out!;
}
