import { env, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { AccountState } from '../../src/access/account-state.ts';
import type { ResourceId } from '../../src/ids.ts';
import { DOMAIN_TABLES } from '../../src/tables.ts';
import type { AccountDO } from '../../workers/account/account-do.ts';
import type { ObjectContext } from '../../workers/account/object-context.ts';
import { attachmentOf } from '../../workers/account/sockets.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect, type Frame } from './support/device.ts';
import { holderOf } from './support/relays.ts';
import { database } from './support/world.ts';

const sql = database();

describe('hibernation (docs/architecture.md#9-hibernation-safe)', () => {
  it('an evicted object rebuilds its state from SQLite and attachments, and still sends exactly the diff', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const { device } = await connect('client', s.token);
    const stub = env.ACCOUNT.get(env.ACCOUNT.idFromName(account.id));
    const memoryOf = () => runInDurableObject(stub, (instance: AccountDO) => (instance as unknown as { memory: unknown }).memory);
    // The field read below is the one the object keeps its state in (so that undefined after eviction means something).
    expect(await memoryOf()).toBeDefined();
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    // A new instance, with nothing in memory yet.
    expect(await memoryOf()).toBeUndefined();
    // Nothing changed in the view: the digests it was sent come back from SQLite, so nothing is sent.
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { description: 'reworded' }));
    expect(await device.drain()).toEqual([]);
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki (after eviction)' }));
    const [f, ...rest] = await device.drain();
    expect(rest).toEqual([]);
    expect(f).toMatchObject({ event: 'resource_created_or_updated', payload: { id: s.resource.id, name: 'Wiki (after eviction)' } });
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    await account.apply((t) => t.softDelete('policies', { id: s.policy.id }));
    expect(await device.drain()).toEqual([{ event: 'resource_deleted', payload: { id: s.resource.id } }]);
    // The socket survived every eviction and still answers frames.
    device.send({ event: 'nope', payload: {} });
    expect((await device.next('error')).payload.reason).toBe('unknown event: nope');
  });

  it('the first batch after a wake gives every socket exactly its frames; digests of connections gone meanwhile reach no new connection and are dropped soon after', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    // A second actor in a second group: it sees only the second resource, which the first actor sees too.
    let other = '';
    let second = '';
    let secondPolicy = '';
    await account.apply(async (t) => {
      const actor = await account.actor(t, { name: 'Bo' });
      const group = await account.group(t, { name: 'Sales' });
      await account.membership(t, actor.id, group.id);
      const resource = await account.resource(t, { name: 'CRM', address: 'crm.example.com' });
      second = resource.id as string;
      await account.connection(t, resource.id, s.site.id);
      secondPolicy = (await account.policy(t, group.id, resource.id)).id as string;
      await account.policy(t, s.group.id, resource.id);
      other = (await account.clientToken(t, actor.id)).token;
    });
    const ids = (init: Frame) => (init.payload.resources as { id: string }[]).map((r) => r.id).sort();
    const a1 = await connect('client', s.token, { externalId: 'a1' });
    const b1 = await connect('client', other, { externalId: 'b1' });
    const b2 = await connect('client', other, { externalId: 'b2' });
    expect(ids(a1.init)).toEqual([s.resource.id as string, second].sort());
    expect(ids(b1.init)).toEqual([second]);
    const stub = env.ACCOUNT.get(env.ACCOUNT.idFromName(account.id));
    type Inner = { object: ObjectContext };
    const viewRows = () =>
      runInDurableObject(stub, (_: AccountDO, state) =>
        state.storage.sql
          .exec<{ conn: number; n: number }>('select conn, count(*) as n from client_views group by conn order by conn')
          .toArray()
          .map((r) => [r.conn, r.n]),
      );
    // A connection that closed while no instance ran (its close handler never ran): its digests stay behind.
    const stale = await runInDurableObject(stub, (instance: AccountDO, state) => {
      const { object } = instance as unknown as Inner;
      const conn = object.meta.nextConnection();
      state.storage.transactionSync(() => {
        object.views.set(conn, s.resource.id as ResourceId, 1);
        object.views.set(conn, second as ResourceId, 2);
      });
      return conn;
    });
    const live = await viewRows();
    expect(live.map(([conn]) => conn)).toContain(stale);
    await evictDurableObject(stub, { webSockets: 'hibernate' });

    // One batch that reaches every socket: the second resource renamed, and the first actor's policy on the first one deleted.
    await account.apply(async (t) => {
      await t.update('resources', { id: second }, { name: 'CRM (renamed)' });
      await t.softDelete('policies', { id: s.policy.id });
    });
    const renamed = { event: 'resource_created_or_updated', payload: expect.objectContaining({ id: second, name: 'CRM (renamed)' }) };
    const a1Frames = await a1.device.drain();
    expect(a1Frames).toHaveLength(2);
    expect(a1Frames).toEqual(expect.arrayContaining([renamed, { event: 'resource_deleted', payload: { id: s.resource.id } }]));
    for (const b of [b1, b2]) expect(await b.device.drain()).toEqual([renamed]);

    // A new connection gets a number of its own, never the stale one, and only its own digests.
    const a2 = await connect('client', s.token, { externalId: 'a2' });
    expect(ids(a2.init)).toEqual([second]);
    const conns = await runInDurableObject(stub, (instance: AccountDO, state) => {
      const { object } = instance as unknown as Inner;
      return state.getWebSockets().map((ws) => {
        const conn = attachmentOf(ws)!.conn;
        return { conn, views: object.views.of(conn).size };
      });
    });
    expect(conns).toHaveLength(4);
    expect(conns.map((c) => c.conn)).not.toContain(stale);
    // a1 lost the first resource: each socket now holds one view (the second resource).
    expect(conns.map((c) => c.views)).toEqual([1, 1, 1, 1]);

    // A moment after the wake the stale digests go, and only those, with no alarm set for it (nothing is due).
    let after = await viewRows();
    for (const deadline = Date.now() + 5_000; after.some(([conn]) => conn === stale) && Date.now() < deadline; after = await viewRows()) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(after.map(([conn]) => conn)).not.toContain(stale);
    expect(after.map(([conn]) => conn).sort()).toEqual(conns.map((c) => c.conn).sort());
    expect(await runInDurableObject(stub, (_: AccountDO, state) => state.storage.getAlarm())).toBeNull();
    // The live digests survived: a change that leaves every view as it was sends nothing.
    await account.apply((t) => t.update('policies', { id: secondPolicy }, { description: 'reworded' }));
    for (const d of [a1, a2, b1, b2]) expect(await d.device.drain()).toEqual([]);
  });

  it("a woken object's first batch reads only the tables it needs; a token that expired while its alarm was late closes its socket instead of getting the batch", async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const expiresAt = Date.now() + 1_500;
    let soon = '';
    await account.apply(async (t) => {
      soon = (await account.clientToken(t, s.actor.id, { expires_at: new Date(expiresAt) })).token;
    });
    const lasting = await connect('client', s.token, { externalId: 'lasting' });
    const expiring = await connect('client', soon, { externalId: 'expiring' });
    const stub = holderOf(account.id);
    const loaded = () =>
      runInDurableObject(stub, (instance: AccountDO) => {
        const memory = (instance as unknown as { memory?: { state: AccountState } }).memory;
        return memory && DOMAIN_TABLES.filter((t) => memory.state.loaded(t));
      });
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    expect(await loaded()).toBeUndefined();
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki (woken)' }));
    const renamed = (name: string) => [{ event: 'resource_created_or_updated', payload: expect.objectContaining({ id: s.resource.id, name }) }];
    for (const d of [lasting, expiring]) expect(await d.device.drain()).toEqual(renamed('Wiki (woken)'));
    // The rename needed the resource's access path; no actor, client, token or gateway was read.
    expect(await loaded()).toEqual(['accounts', 'actor_groups', 'actor_group_memberships', 'sites', 'resources', 'resource_connections', 'policies']);

    // The alarm that would close the expiring socket at its token's expiry is late (deleted here),
    // and the object wakes with the token expired: the next batch must close it, not diff it.
    await runInDurableObject(stub, (_: AccountDO, state) => state.storage.deleteAlarm());
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now() + 50)));
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki (expired)' }));
    expect(await expiring.device.waitClosed(200)).toEqual({ code: 4001, reason: 'token deleted or expired' });
    expect(await expiring.device.drain()).toEqual([]);
    expect(await lasting.device.drain()).toEqual(renamed('Wiki (expired)'));
  });

  it('connection numbers are never handed out twice, across instances and a connect that rolled back, and a connect seldom writes one', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connect('client', s.token);
    const stub = holderOf(account.id);
    type Inner = { object: ObjectContext };
    const stored = () =>
      runInDurableObject(stub, (_: AccountDO, state) => Number(state.storage.sql.exec<{ value: string }>("select value from meta where key = 'next_conn'").one().value));
    const take = (n: number) => runInDurableObject(stub, (instance: AccountDO) => Array.from({ length: n }, () => (instance as unknown as Inner).object.meta.nextConnection()));
    const before = await stored();
    const first = await take(3_000);
    // Storage moved once a block, not once a number.
    expect(await stored()).toBeGreaterThan(Math.max(...first));
    expect((await stored()) - before).toBeLessThan(first.length);
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    const second = await take(10);
    // A connect whose transaction rolls back spends its number all the same.
    const spent = await runInDurableObject(stub, (instance: AccountDO, state) => {
      const { object } = instance as unknown as Inner;
      const conn = object.meta.nextConnection();
      try {
        state.storage.transactionSync(() => {
          object.views.set(conn, s.resource.id as ResourceId, 1);
          throw new Error('rolled back (test)');
        });
      } catch {
        object.views.reset();
      }
      return conn;
    });
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    const third = await take(10);
    const all = [...first, ...second, spent, ...third];
    expect(new Set(all).size).toBe(all.length);
    expect(Math.min(...second)).toBeGreaterThan(Math.max(...first));
    expect(Math.min(...third)).toBeGreaterThan(spent);
  });
});
