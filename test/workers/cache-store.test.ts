import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { AccountState } from '../../src/access/account-state.ts';
import { randomId, type AccountId, type ResourceId } from '../../src/ids.ts';
import type { Cached } from '../../src/records.ts';
import { DOMAIN_TABLES } from '../../src/tables.ts';
import { CacheStaging } from '../../workers/account/cache-staging.ts';
import { CacheStore } from '../../workers/account/cache-store.ts';
import { CACHE_TABLES } from '../../workers/account/cache-tables.ts';
import { jsonPages } from '../../workers/account/json-pages.ts';
import { ViewStore } from '../../workers/account/view-store.ts';

/** Every record of a state, per table, as JSON in a stable order (field order included: the loaded records must be built as decoded ones are). */
const dump = (state: AccountState) =>
  DOMAIN_TABLES.map((t) =>
    state
      .all(t)
      .map((c) => JSON.stringify(c.record))
      .sort(),
  );

/** One record of every table, each field in each of its forms (null, empty, JSON, booleans both ways). */
/** The records into the live cache tables as a hydration puts them there: staged (hex JSON unpacked inside SQLite), then swapped in. */
function stage(state: DurableObjectState, records: readonly Cached[]): void {
  const staging = new CacheStaging(state.storage.sql);
  state.storage.transactionSync(() => {
    staging.begin();
    staging.put(records);
    staging.swap();
  });
}

function everyKind(accountId: AccountId): Cached[] {
  const [actor, other] = [randomId<'actor'>(), randomId<'actor'>()];
  const group = randomId<'group'>();
  const site = randomId<'site'>();
  const [filtered, open] = [randomId<'resource'>(), randomId<'resource'>()];
  return [
    { table: 'accounts', record: { id: accountId, disabled: true } },
    { table: 'actors', record: { id: actor, disabled: false } },
    { table: 'actors', record: { id: other, disabled: true } },
    { table: 'actor_groups', record: { id: group } },
    { table: 'actor_group_memberships', record: { groupId: group, actorId: actor } },
    { table: 'sites', record: { id: site, name: 'HQ "main" \u00e9' } },
    { table: 'gateways', record: { id: randomId(), siteId: site, externalId: 'gw-1', name: 'Gateway', publicKey: 'pk', version: null } },
    { table: 'gateways', record: { id: randomId(), siteId: site, externalId: 'gw-2', name: 'Gateway 2', publicKey: 'pk2', version: '1.4.2' } },
    {
      table: 'resources',
      record: {
        id: filtered,
        type: 'dns',
        name: 'Wiki',
        address: 'wiki.example.com',
        addressDescription: null,
        ipStack: 'dual',
        filters: [{ protocol: 'tcp', ports: ['443', '8000-8100'] }],
      },
    },
    { table: 'resources', record: { id: open, type: 'internet', name: 'Internet', address: null, addressDescription: 'all of it', ipStack: null, filters: [] } },
    { table: 'resource_connections', record: { resourceId: filtered, siteId: site } },
    { table: 'policies', record: { id: randomId(), groupId: group, resourceId: filtered, disabled: false, conditions: [] } },
    { table: 'policies', record: { id: randomId(), groupId: group, resourceId: open, disabled: true, conditions: null } },
    {
      table: 'policies',
      record: {
        id: randomId(),
        groupId: group,
        resourceId: open,
        disabled: false,
        conditions: [{ property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: ['M/true/UTC'] }],
      },
    },
    { table: 'clients', record: { id: randomId(), actorId: actor, externalId: 'laptop', name: 'Laptop', publicKey: 'k', version: '1.3.0', verified: true } },
    { table: 'clients', record: { id: randomId(), actorId: other, externalId: 'phone', name: 'Phone', publicKey: 'k2', version: null, verified: false } },
    { table: 'tokens', record: { id: randomId(), type: 'client', ownerId: actor, salt: 'salt', hash: '0f'.repeat(32), expiresAt: 1_893_456_000_000 } },
    { table: 'tokens', record: { id: randomId(), type: 'site', ownerId: site, salt: 'salt2', hash: 'a9'.repeat(32), expiresAt: null } },
  ];
}

const stubOf = () => env.ACCOUNT.get(env.ACCOUNT.idFromName(`cache-store-${crypto.randomUUID()}`));

describe('CacheStore.load and ViewStore reads (the bulk reads of a woken object, workers/account/json-pages.ts)', () => {
  it('loads every field of every table as it was stored, and what a hydration stages reads back the same', async () => {
    await runInDurableObject(stubOf(), (_instance, state) => {
      const sql = state.storage.sql;
      const accountId = randomId<'account'>();
      const records = everyKind(accountId);
      const expected = new AccountState(accountId);
      for (const r of records) expected.put(r);
      // Through a hydration's staging into the live tables.
      stage(state, records);
      const caches = new CacheStore(sql);
      expect(dump(caches.load(expected.accountId))).toEqual(dump(expected));
      // And through the write path of a batch: an update and a delete.
      const client = records.find((r) => r.table === 'clients')!;
      const renamed = { table: 'clients', record: { ...client.record, name: 'Laptop (renamed)' } } as Cached;
      const membership = records.find((r) => r.table === 'actor_group_memberships')!;
      state.storage.transactionSync(() =>
        caches.write([
          { kind: 'put', cached: renamed },
          { kind: 'delete', cached: membership },
        ]),
      );
      expected.put(renamed);
      expected.remove(membership);
      expect(dump(caches.load(expected.accountId))).toEqual(dump(expected));
    });
  });

  it('reads tables and digests larger than a page, keyed by one column or two, each row once', async () => {
    await runInDurableObject(stubOf(), (_instance, state) => {
      const sql = state.storage.sql;
      const accountId = randomId<'account'>();
      // A few groups with many members each: the two-column key (group, actor) crosses pages inside a group.
      const groups = Array.from({ length: 3 }, () => randomId<'group'>());
      const records: Cached[] = [];
      for (let i = 0; i < 10_000; i++) {
        const actorId = randomId<'actor'>();
        records.push({ table: 'actors', record: { id: actorId, disabled: i % 7 === 0 } });
        records.push({ table: 'actor_group_memberships', record: { groupId: groups[i % 3]!, actorId } });
      }
      stage(state, records);
      const expected = new AccountState(accountId);
      for (const r of records) expected.put(r);
      // Every row exactly once, at any page size (a page's end is its greatest key, not its last row).
      for (const table of ['actors', 'actor_group_memberships'] as const) {
        for (const pageRows of [1, 999, 4_096, 20_000]) {
          if (pageRows === 1 && table === 'actors') continue;
          const seen = [...jsonPages(sql, CACHE_TABLES[table].read, pageRows)].flat().map((row) => JSON.stringify(row));
          expect(seen.length, `${table}, pages of ${pageRows}`).toBe(10_000);
          expect(new Set(seen).size, `${table}, pages of ${pageRows}`).toBe(10_000);
        }
      }
      const loaded = new CacheStore(sql).load(accountId);
      expect(loaded.actors.size).toBe(10_000);
      expect(dump(loaded)).toEqual(dump(expected));

      // Digests: connection numbers past 4,096 rows, several resources each.
      const views = new ViewStore(sql);
      const resources = Array.from({ length: 3 }, () => randomId<'resource'>());
      const digests = new Map<number, Map<ResourceId, number>>();
      state.storage.transactionSync(() =>
        views.batch(() => {
          for (let conn = 1; conn <= 3_000; conn++) {
            const mine = new Map<ResourceId, number>();
            for (const [k, r] of resources.entries()) {
              if ((conn + k) % 4 === 0) continue;
              const digest = (conn * 31 + k) | 0;
              views.set(conn, r, digest);
              mine.set(r, digest);
            }
            digests.set(conn, mine);
          }
        }),
      );
      const fresh = new ViewStore(sql);
      for (const [conn, mine] of digests) expect(new Map(fresh.of(conn)), `conn ${conn}`).toEqual(mine);
      expect(fresh.of(3_001).size).toBe(0);
    });
  });
});
