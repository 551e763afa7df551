import { env, evictDurableObject, runInDurableObject, SELF } from 'cloudflare:test';
import { signBody } from '../../src/signature.ts';
import { describe, expect, it } from 'vitest';
import type { Row } from '../../src/json.ts';
import { TestAccount } from './support/account.ts';
import { connect } from './support/device.ts';
import { database } from './support/world.ts';

const sql = database();

/** Commits an actor with a client token, a group, a site, R1 and a policy, without delivering anything. */
async function undelivered(account: TestAccount) {
  let out: { actor: Row; group: Row; site: Row; r1: Row; token: string } | undefined;
  await account.commit(async (t) => {
    const actor = await account.actor(t);
    const group = await account.group(t);
    await account.membership(t, actor.id, group.id);
    const site = await account.site(t);
    const r1 = await account.resource(t, { name: 'R1' });
    await account.connection(t, r1.id, site.id);
    await account.policy(t, group.id, r1.id);
    out = { actor, group, site, r1, token: (await account.clientToken(t, actor.id)).token };
  });
  return out!;
}

const ids = (init: { payload: Record<string, unknown> }) => (init.payload.resources as { id: string }[]).map((r) => r.id).sort();

describe('hydration (docs/architecture.md#4-consistent-hydration)', () => {
  it('skips a change committed before the snapshot that arrives after it', async () => {
    const account = await TestAccount.create(sql);
    const s = await undelivered(account);
    let r2: Row | undefined;
    let p2: Row | undefined;
    const granted = await account.commit(async (t) => {
      r2 = await account.resource(t, { name: 'R2', address: 'r2.example.com' });
      await account.connection(t, r2.id, s.site.id);
      p2 = await account.policy(t, s.group.id, r2.id);
    });
    const revoked = await account.commit((t) => t.softDelete('policies', { id: p2!.id }));
    // The object hydrates now: it sees the policy already deleted.
    const { device, init } = await connect('client', s.token);
    expect(ids(init)).toEqual([s.r1.id]);
    // The replicator was behind: both transactions arrive after the snapshot, which had seen them.
    expect(await account.deliver(granted)).toMatchObject({ applied: 0, skipped: 3 });
    expect(await account.deliver(revoked)).toMatchObject({ applied: 0, skipped: 1 });
    expect(await device.drain()).toEqual([]);
    // A later transaction is applied as usual.
    await account.apply((t) => t.update('resources', { id: s.r1.id }, { name: 'R1 renamed' }));
    expect((await device.next('resource_created_or_updated')).payload.name).toBe('R1 renamed');
  });

  it('applies a change whose transaction was in progress when the snapshot was taken', async () => {
    const account = await TestAccount.create(sql);
    const s = await undelivered(account);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const inside = new Promise<void>((resolve) => (started = resolve));
    let r3: Row | undefined;
    const pending = account.commit(async (t) => {
      r3 = await account.resource(t, { name: 'R3', address: 'r3.example.com' });
      await account.connection(t, r3.id, s.site.id);
      await account.policy(t, s.group.id, r3.id);
      started();
      await gate;
    });
    await inside;
    // A later transaction commits first, so the snapshot's xmax passes the open one, which lands in
    // its in-progress list (Postgres computes xmax from the latest completed transaction).
    await TestAccount.create(sql, 'bystander');
    const [current] = await sql<{ snapshot: string }[]>`select pg_current_snapshot()::text as snapshot`;
    expect(current!.snapshot.split(':')[2]).not.toBe('');
    // Hydration while the transaction is open: its rows are not in the snapshot.
    const { device, init } = await connect('client', s.token);
    expect(ids(init)).toEqual([s.r1.id]);
    release();
    const changes = await pending;
    expect(await account.deliver(changes)).toMatchObject({ applied: 3, skipped: 0 });
    const created = await device.next('resource_created_or_updated');
    expect(created.payload).toMatchObject({ id: r3!.id, name: 'R3' });
    expect(await device.drain()).toEqual([]);
  });

  it('hydrates again when the stored cache version is older than the code', async () => {
    const account = await TestAccount.create(sql);
    const s = await undelivered(account);
    const first = await connect('client', s.token);
    expect(ids(first.init)).toEqual([s.r1.id]);
    // Written to Postgres but never delivered: only a new hydration can see it.
    let r2: Row | undefined;
    await account.commit(async (t) => {
      r2 = await account.resource(t, { name: 'R2', address: 'r2.example.com' });
      await account.connection(t, r2.id, s.site.id);
      await account.policy(t, s.group.id, r2.id);
    });
    const stub = env.ACCOUNT.get(env.ACCOUNT.idFromName(account.id));
    expect((await connect('client', s.token)).init.payload.resources).toHaveLength(1);
    await runInDurableObject(stub, (_instance, state) => {
      state.storage.sql.exec("update meta set value = '0' where key = 'cache_version'");
    });
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    const after = await connect('client', s.token);
    expect(ids(after.init)).toEqual([s.r1.id, r2!.id].sort());
  });
});

describe('POST /v1/accounts/:id/rehydrate', () => {
  it('reloads the account from Postgres (changes lost for good) and sends connected clients the difference', async () => {
    const account = await TestAccount.create(sql);
    const s = await undelivered(account);
    const { device } = await connect('client', s.token);
    // Changes that will never be delivered, as after an invalidated slot.
    let r2: Row | undefined;
    await account.commit(async (t) => {
      r2 = await account.resource(t, { name: 'R2', address: 'r2.example.com' });
      await account.connection(t, r2.id, s.site.id);
      await account.policy(t, s.group.id, r2.id);
      await t.update('resources', { id: s.r1.id }, { deleted_at: new Date() });
    });
    const unsigned = await SELF.fetch(`http://edgeplane.test/v1/accounts/${account.id}/rehydrate`, { method: 'POST', body: '{}' });
    expect(unsigned.status).toBe(401);
    const body = '{}';
    const res = await SELF.fetch(`http://edgeplane.test/v1/accounts/${account.id}/rehydrate`, {
      method: 'POST',
      body,
      headers: { 'x-edgeplane-signature': await signBody(env.REPLICATOR_SECRET!, body, Math.floor(Date.now() / 1000)) },
    });
    expect(res.status).toBe(200);
    const frames = (await device.drain()).map((f) => `${f.event} ${String(f.payload.id)}`).sort();
    expect(frames).toEqual([`resource_created_or_updated ${String(r2!.id)}`, `resource_deleted ${String(s.r1.id)}`].sort());
  });
});
