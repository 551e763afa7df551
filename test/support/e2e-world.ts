import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { createToken } from '../../dev/tokens.ts';

export interface WorldResource {
  id: string;
  name: string;
  address: string;
  policyId: string;
}

/** An account as the tests build it: one actor in one group, one site, resources each with a policy for the group, tokens. */
export interface WorldAccount {
  id: string;
  actorId: string;
  groupId: string;
  siteId: string;
  resources: WorldResource[];
  clientToken: string;
  clientTokenId: string;
  siteToken: string;
}

const KINDS = [
  { type: 'dns', address: (i: number) => `svc${i}.example.internal` },
  { type: 'cidr', address: (i: number) => `10.${i % 250}.0.0/16` },
  { type: 'ip', address: (i: number) => `192.168.${i % 250}.10` },
] as const;

/** Creates an account in one transaction (with the given `id`, if any). `resources` of them get a policy; `unreachable` more have none. */
export async function createAccount(
  sql: Sql,
  options: { resources?: number; unreachable?: number; label?: string; id?: string } = {},
): Promise<WorldAccount & { extra: WorldResource[] }> {
  const label = options.label ?? randomBytes(4).toString('hex');
  return await sql.begin(async (tx) => {
    const slug = `${label}-${randomBytes(4).toString('hex')}`;
    const [account] = options.id
      ? await tx<{ id: string }[]>`insert into accounts (id, name, slug) values (${options.id}, ${label}, ${slug}) returning id::text`
      : await tx<{ id: string }[]>`insert into accounts (name, slug) values (${label}, ${slug}) returning id::text`;
    const id = account!.id;
    const [actor] = await tx<{ id: string }[]>`insert into actors (account_id, name, type) values (${id}, ${`user ${label}`}, 'account_user') returning id::text`;
    const [group] = await tx<{ id: string }[]>`insert into actor_groups (account_id, name) values (${id}, 'everyone') returning id::text`;
    await tx`insert into actor_group_memberships (account_id, actor_id, group_id) values (${id}, ${actor!.id}, ${group!.id})`;
    const [site] = await tx<{ id: string }[]>`insert into sites (account_id, name) values (${id}, 'site') returning id::text`;
    const make = async (i: number, withPolicy: boolean): Promise<WorldResource> => {
      const kind = KINDS[i % KINDS.length]!;
      const name = `${label}-r${i}`;
      const address = kind.address(i);
      const [r] = await tx<{ id: string }[]>`
        insert into resources (account_id, type, name, address) values (${id}, ${kind.type}, ${name}, ${address}) returning id::text`;
      await tx`insert into resource_connections (account_id, resource_id, site_id) values (${id}, ${r!.id}, ${site!.id})`;
      let policyId = '';
      if (withPolicy) {
        const [p] = await tx<{ id: string }[]>`insert into policies (account_id, actor_group_id, resource_id) values (${id}, ${group!.id}, ${r!.id}) returning id::text`;
        policyId = p!.id;
      }
      return { id: r!.id, name, address, policyId };
    };
    const resources: WorldResource[] = [];
    const n = options.resources ?? 3;
    for (let i = 0; i < n; i++) resources.push(await make(i, true));
    const extra: WorldResource[] = [];
    for (let i = 0; i < (options.unreachable ?? 0); i++) extra.push(await make(n + i, false));
    const client = await createToken(tx, { accountId: id, type: 'client', ownerId: actor!.id });
    const gateway = await createToken(tx, { accountId: id, type: 'site', ownerId: site!.id });
    return { id, actorId: actor!.id, groupId: group!.id, siteId: site!.id, resources, extra, clientToken: client.token, clientTokenId: client.id, siteToken: gateway.token };
  });
}

/** The commit LSN of the transaction `fn` runs in (after it committed). */
export async function commitAt(sql: Sql, fn: (tx: Sql) => Promise<unknown>): Promise<string> {
  await sql.begin(async (tx) => {
    await fn(tx as unknown as Sql);
  });
  const [row] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
  return row!.lsn;
}
