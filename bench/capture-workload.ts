import type { Sql } from 'postgres';

/**
 * Writes a realistic mix of domain changes: accounts with actors, groups, memberships, sites,
 * resources, connections and policies (inserts), then updates (with REPLICA IDENTITY FULL, each
 * carries the old row too) and deletes. Returns the number of row changes written.
 */
export async function writeWorkload(sql: Sql, options: { accounts: number; actorsPerAccount: number }): Promise<number> {
  let changes = 0;
  for (let a = 0; a < options.accounts; a++) {
    await sql.begin(async (tx) => {
      const [account] = await tx<
        { id: string }[]
      >`insert into accounts (name, slug) values (${`Account ${a}`}, ${`bench-${a}-${Math.random().toString(36).slice(2)}`}) returning id`;
      const accountId = account!.id;
      const n = options.actorsPerAccount;
      const actors = await tx<{ id: string }[]>`
        insert into actors (account_id, name, type)
        select ${accountId}, 'Actor ' || g, case when g % 10 = 0 then 'account_admin_user' else 'account_user' end
        from generate_series(1, ${n}) g returning id`;
      const groups = await tx<{ id: string }[]>`
        insert into actor_groups (account_id, name) select ${accountId}, 'Group ' || g from generate_series(1, 10) g returning id`;
      await tx`
        insert into actor_group_memberships (account_id, actor_id, group_id)
        select ${accountId}, a.id, (${groups.map((g) => g.id)}::uuid[])[1 + (row_number() over () % 10)]
        from unnest(${actors.map((x) => x.id)}::uuid[]) as a(id)`;
      const [site] = await tx<{ id: string }[]>`insert into sites (account_id, name) values (${accountId}, 'HQ') returning id`;
      const resources = await tx<{ id: string }[]>`
        insert into resources (account_id, type, name, address, address_description, ip_stack, filters)
        select ${accountId}, 'dns', 'Service ' || g, 'svc' || g || '.internal.example.com', 'Internal service ' || g, 'dual',
               '[{"protocol":"tcp","ports":["443","8000-8080"]},{"protocol":"icmp","ports":[]}]'::jsonb
        from generate_series(1, 20) g returning id`;
      await tx`insert into resource_connections (account_id, resource_id, site_id) select ${accountId}, r, ${site!.id} from unnest(${resources.map((r) => r.id)}::uuid[]) r`;
      await tx`
        insert into policies (account_id, actor_group_id, resource_id, description, conditions)
        select ${accountId}, (${groups.map((g) => g.id)}::uuid[])[1 + (g % 10)], (${resources.map((r) => r.id)}::uuid[])[1 + (g % 20)], 'Policy ' || g,
               '[{"property":"remote_ip_location_region","operator":"is_in","values":["US","DE"]}]'::jsonb
        from generate_series(1, 20) g`;
      changes += 1 + n + 10 + n + 1 + 20 + 20 + 20;
    });
    await sql`update actors set name = name || ' (renamed)', updated_at = now() where account_id = (select id from accounts order by inserted_at desc limit 1) and name like 'Actor 1%'`.then(
      (r) => (changes += r.count),
    );
    await sql`delete from actor_group_memberships where account_id = (select id from accounts order by inserted_at desc limit 1) and actor_id in (select id from actors where name like 'Actor 2%')`.then(
      (r) => (changes += r.count),
    );
  }
  return changes;
}
