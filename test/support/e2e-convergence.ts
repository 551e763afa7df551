import type { Sql } from 'postgres';
import type { Device } from './e2e-device.ts';

export interface ExpectedView {
  id: string;
  type: string;
  name: string;
  address: string | null;
}

/**
 * docs/protocol.md#access-rule in one query, straight from the database: the resources the client may see.
 * A policy that is neither deleted nor disabled, of a group (not deleted) the client's actor is a
 * member of, for a resource that is not deleted and is connected to a site that is not deleted;
 * the actor, its account and the client active. The e2e tests use policies without conditions and
 * clients of version 1.4.2 (every resource type, no wildcard rewriting), so neither is evaluated
 * here; a policy with conditions counts as not granting.
 */
export const ACCESS_QUERY = `
  select distinct r.id::text, r.type, r.name, r.address
  from clients c
  join accounts a on a.id = c.account_id and a.deleted_at is null and a.disabled_at is null
  join actors ac on ac.id = c.actor_id and ac.account_id = c.account_id and ac.deleted_at is null and ac.disabled_at is null
  join actor_group_memberships m on m.actor_id = ac.id
  join actor_groups g on g.id = m.group_id and g.account_id = c.account_id and g.deleted_at is null
  join policies p on p.actor_group_id = g.id and p.account_id = c.account_id and p.deleted_at is null and p.disabled_at is null
                 and p.conditions = '[]'::jsonb
  join resources r on r.id = p.resource_id and r.account_id = c.account_id and r.deleted_at is null
  where c.id = $1 and c.deleted_at is null
    and exists (select 1 from resource_connections rc join sites s on s.id = rc.site_id and s.deleted_at is null
                where rc.resource_id = r.id)`;

export async function expectedViews(sql: Sql, clientId: string): Promise<Map<string, ExpectedView>> {
  const rows = await sql.unsafe<ExpectedView[]>(ACCESS_QUERY, [clientId]);
  return new Map(rows.map((r) => [r.id, { id: r.id, type: r.type, name: r.name, address: r.address }]));
}

/** The differences between a client's replayed view and what the database grants, as readable lines (empty: converged). */
export function viewDiff(device: Device, expected: Map<string, ExpectedView>): string[] {
  const out: string[] = [];
  for (const [id, e] of expected) {
    const got = device.view.get(id);
    if (!got) out.push(`missing ${id} (${e.name})`);
    else if (got.name !== e.name || got.address !== e.address || got.type !== e.type) {
      out.push(`stale ${id}: has ${got.type} ${got.name} ${got.address}, database says ${e.type} ${e.name} ${e.address}`);
    }
  }
  for (const [id, got] of device.view) if (!expected.has(id)) out.push(`extra ${id} (${got.name})`);
  return out;
}

/**
 * The convergence check: every client's view (its events replayed) equals, eventually, what the
 * access rule computes from the database. Fails with the differences when it does not within the time.
 */
export async function expectConverged(sql: Sql, clients: Device[], timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const problems: string[] = [];
    for (const d of clients) {
      if (!d.init) {
        problems.push(`${d.externalId}: never got init`);
        continue;
      }
      for (const p of viewDiff(d, await expectedViews(sql, d.id))) problems.push(`${d.externalId}: ${p}`);
    }
    if (problems.length === 0) return;
    if (Date.now() > deadline) throw new Error(`views did not converge within ${timeoutMs} ms:\n  ${problems.slice(0, 30).join('\n  ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
