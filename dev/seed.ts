import type { Sql } from 'postgres';
import { createToken } from './tokens.ts';

export interface DemoResource {
  id: string;
  type: 'dns' | 'cidr' | 'ip';
  name: string;
  address: string;
  policyId: string;
}

export interface Demo {
  accountId: string;
  actorId: string;
  groupId: string;
  siteId: string;
  resources: DemoResource[];
  clientToken: string;
  siteToken: string;
}

export const DEMO_SLUG = 'demo';

const RESOURCES = [
  { type: 'dns', name: 'Wiki', address: 'wiki.demo.internal', filters: [] },
  { type: 'cidr', name: 'Office LAN', address: '10.20.0.0/16', filters: [] },
  { type: 'ip', name: 'Build server', address: '10.20.1.5', filters: [{ protocol: 'tcp', ports: ['22', '8000-8100'] }] },
] as const;

/** Whether the database holds no account at all (then `npm start` seeds the demo). */
export async function databaseIsEmpty(sql: Sql): Promise<boolean> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from accounts`;
  return row!.n === 0;
}

/**
 * The demo account, in one transaction: an actor in a group, a site, three resources (dns, cidr,
 * ip) connected to the site, one policy per resource for the group, a client token for the actor
 * and a site token for the site.
 */
export async function seedDemo(sql: Sql): Promise<Demo> {
  return await sql.begin(async (tx) => {
    const [account] = await tx<{ id: string }[]>`insert into accounts (name, slug) values ('Demo', ${DEMO_SLUG}) returning id::text`;
    const accountId = account!.id;
    const [actor] = await tx<{ id: string }[]>`
      insert into actors (account_id, name, type) values (${accountId}, 'Ada Lovelace', 'account_user') returning id::text`;
    const [group] = await tx<{ id: string }[]>`insert into actor_groups (account_id, name) values (${accountId}, 'Engineering') returning id::text`;
    await tx`insert into actor_group_memberships (account_id, actor_id, group_id) values (${accountId}, ${actor!.id}, ${group!.id})`;
    const [site] = await tx<{ id: string }[]>`insert into sites (account_id, name) values (${accountId}, 'Home lab') returning id::text`;
    const resources: DemoResource[] = [];
    for (const r of RESOURCES) {
      const [row] = await tx<{ id: string }[]>`
        insert into resources (account_id, type, name, address, ip_stack, filters)
        values (${accountId}, ${r.type}, ${r.name}, ${r.address}, ${r.type === 'dns' ? 'dual' : null}, ${tx.json(r.filters as never)})
        returning id::text`;
      await tx`insert into resource_connections (account_id, resource_id, site_id) values (${accountId}, ${row!.id}, ${site!.id})`;
      const [policy] = await tx<{ id: string }[]>`
        insert into policies (account_id, actor_group_id, resource_id, description)
        values (${accountId}, ${group!.id}, ${row!.id}, ${`Engineering may reach ${r.name}`}) returning id::text`;
      resources.push({ id: row!.id, type: r.type, name: r.name, address: r.address, policyId: policy!.id });
    }
    const client = await createToken(tx, { accountId, type: 'client', ownerId: actor!.id });
    const gateway = await createToken(tx, { accountId, type: 'site', ownerId: site!.id });
    return { accountId, actorId: actor!.id, groupId: group!.id, siteId: site!.id, resources, clientToken: client.token, siteToken: gateway.token };
  });
}
