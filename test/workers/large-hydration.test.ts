import { env, runInDurableObject, SELF } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { AccountState } from '../../src/access/account-state.ts';
import { signBody } from '../../src/signature.ts';
import { DOMAIN_TABLES } from '../../src/tables.ts';
import type { AccountDO } from '../../workers/account/account-do.ts';
import type { CacheStore } from '../../workers/account/cache-store.ts';
import { CACHE_TABLES } from '../../workers/account/cache-tables.ts';
import { HYDRATION_PAGE_ROWS } from '../../workers/account/hydrate.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect } from './support/device.ts';
import { BASE, database, SECRET } from './support/world.ts';

const sql = database();

/** The basic setup's rows, committed and not delivered: the first connect hydrates them. */
async function undelivered(account: TestAccount): Promise<{ group: string; token: string }> {
  let out: { group: string; token: string } | undefined;
  await account.commit(async (t) => {
    const actor = await account.actor(t);
    const group = await account.group(t);
    await account.membership(t, actor.id, group.id);
    const site = await account.site(t);
    const resource = await account.resource(t);
    await account.connection(t, resource.id, site.id);
    await account.policy(t, group.id, resource.id);
    out = { group: group.id as string, token: (await account.clientToken(t, actor.id)).token };
  });
  return out!;
}

/** Actors in the basic setup's group, written in bulk and not delivered: the object hydrates them. */
async function addActors(accountId: string, groupId: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1000) {
    const actors = await sql<{ id: string }[]>`
      insert into actors ${sql(Array.from({ length: Math.min(1000, count - i) }, (_, k) => ({ account_id: accountId, name: `A${i + k}`, type: 'account_user' })))}
      returning id`;
    await sql`insert into actor_group_memberships ${sql(actors.map((a) => ({ account_id: accountId, actor_id: a.id, group_id: groupId })))}`;
  }
}

const stubOf = (accountId: string) => env.ACCOUNT.get(env.ACCOUNT.idFromName(accountId));

/** Every record of the object's model, and of its SQLite cache read back, per table, in a stable order. */
function contents(instance: AccountDO): { model: string[][]; cache: string[][]; tables: Record<string, number>; staged: string[] } {
  const inner = instance as unknown as { memory: { state: AccountState }; object: { caches: CacheStore; ctx: DurableObjectState } };
  const dump = (state: AccountState) =>
    DOMAIN_TABLES.map((t) =>
      state
        .all(t)
        .map((c) => JSON.stringify(c.record))
        .sort(),
    );
  const { sql: storage } = inner.object.ctx.storage;
  const tables = Object.fromEntries(DOMAIN_TABLES.map((t) => [t, storage.exec<{ n: number }>(`select count(*) as n from ${CACHE_TABLES[t].name}`).one().n]));
  const staged = storage
    .exec<{ name: string }>("select name from sqlite_master where type = 'table' and name like 's\\_%' escape '\\'")
    .toArray()
    .map((r) => r.name);
  return { model: dump(inner.memory.state), cache: dump(inner.object.caches.load(inner.memory.state.accountId)), tables, staged };
}

async function rehydrate(accountId: string): Promise<Response> {
  const body = '{}';
  return await SELF.fetch(`${BASE}/v1/accounts/${accountId}/rehydrate`, {
    method: 'POST',
    body,
    headers: { 'x-edgeplane-signature': await signBody(SECRET, body, Math.floor(Date.now() / 1000)) },
  });
}

describe('hydration of a large account (docs/architecture.md#hydration)', () => {
  it(`reads an account of several pages (${HYDRATION_PAGE_ROWS} rows each): the cache and the model hold every live row, and agree`, async () => {
    const account = await TestAccount.create(sql);
    const s = await undelivered(account);
    const extra = Math.ceil((2.5 * HYDRATION_PAGE_ROWS) / 2);
    await addActors(account.id, s.group, extra);
    // The first connect hydrates the object.
    const { device, init } = await connect('client', s.token);
    expect((init.payload.resources as unknown[]).length).toBe(1);
    const c = await runInDurableObject(stubOf(account.id), contents);
    expect(c.tables).toMatchObject({ actors: extra + 1, actor_group_memberships: extra + 1, tokens: 1, clients: 1, policies: 1 });
    expect(c.model.flat()).toHaveLength(Object.values(c.tables).reduce((a, b) => a + b, 0));
    // What was built in memory while paging is what SQLite gives back after a wake.
    expect(c.model).toEqual(c.cache);
    expect(c.staged).toEqual([]);
    device.close();
  });

  it('a re-hydration that fails half-way leaves the cache as it was; the object starts again from it, and the next one succeeds', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await addActors(account.id, s.group.id as string, 6 * HYDRATION_PAGE_ROWS);
    expect((await rehydrate(account.id)).status).toBe(200);
    const laptop = { externalId: 'laptop', name: 'Laptop', publicKey: 'key', version: '1.4.2' };
    (await connect('client', s.token, laptop)).device.close();
    let before = await runInDurableObject(stubOf(account.id), contents);
    // Rows the failed re-hydration must not bring in.
    await addActors(account.id, s.group.id as string, 10);
    let interrupted = false;
    for (let attempt = 0; attempt < 5 && !interrupted; attempt++) {
      const answer = rehydrate(account.id);
      // The hydration's backend, once it has streamed for a while: ended as by a failover.
      let pid: number | undefined;
      for (let i = 0; i < 400 && pid === undefined; i++) {
        const [row] = await sql<{ pid: number }[]>`select pid from pg_stat_activity where query like '%pg_current_snapshot()::text%' and pid <> pg_backend_pid()`;
        pid = row?.pid;
        if (pid === undefined) await new Promise((r) => setTimeout(r, 5));
      }
      if (pid !== undefined) {
        await new Promise((r) => setTimeout(r, 300));
        await sql`select pg_terminate_backend(${pid})`;
      }
      const res = await answer;
      if (res.status === 200) {
        // The kill came after the hydration ended: it brought those rows in. What is live now is
        // what the next attempt must leave, with new rows it must not bring in.
        before = await runInDurableObject(stubOf(account.id), contents);
        await addActors(account.id, s.group.id as string, 10);
        continue;
      }
      expect(res.status).toBe(503);
      // A fresh stub: the failed attempt may have left the instance or reset it.
      const after = await runInDurableObject(stubOf(account.id), (instance: AccountDO) => {
        const { storage } = (instance as unknown as { object: { ctx: DurableObjectState } }).object.ctx;
        const count = (table: string) => storage.sql.exec<{ n: number }>(`select count(*) as n from ${table}`).one().n;
        return { staged: count(`s_${CACHE_TABLES.actors.name}`), live: count(CACHE_TABLES.actors.name) };
      });
      // Pages were staged before the failure (else this attempt proves nothing): it failed half-way.
      if (after.staged === 0) continue;
      interrupted = true;
      expect(after.live).toBe(before.tables.actors);
    }
    expect(interrupted, 'a re-hydration ended half-way').toBe(true);
    // The new instance's model comes from the live cache, as it was before the failed attempt.
    const { device, init } = await connect('client', s.token, laptop);
    expect((init.payload.resources as unknown[]).length).toBe(1);
    // With relays forced the connect may go to its relay on the Worker's lease, not through the writer: its model is read here.
    const rebuilt = await runInDurableObject(stubOf(account.id), async (instance: AccountDO) => {
      await (instance as unknown as { readyStored(): Promise<unknown> }).readyStored();
      return contents(instance);
    });
    expect(rebuilt.tables).toEqual(before.tables);
    expect(rebuilt.model).toEqual(before.model);
    expect((await rehydrate(account.id)).status).toBe(200);
    const done = await runInDurableObject(stubOf(account.id), contents);
    expect(done.tables.actors).toBe(before.tables.actors! + 10);
    expect(done.model).toEqual(done.cache);
    expect(done.staged).toEqual([]);
    device.close();
  });
});
