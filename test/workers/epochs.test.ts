import { env, runInDurableObject, SELF } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { Change } from '../../src/change.ts';
import type { Row } from '../../src/json.ts';
import { SIGNATURE_HEADER, signBody } from '../../src/signature.ts';
import type { AccountDO } from '../../workers/account/account-do.ts';
import { TestAccount } from './support/account.ts';
import { connect } from './support/device.ts';
import { type Applied, BASE, database, postChanges, randomText, SECRET } from './support/world.ts';

// docs/architecture.md#12-epochs in the object: a batch or a re-hydration of another epoch makes it
// reload its account and forget its position, so that the new stream's positions, which may be
// lower, are applied and not skipped as stale.

const sql = database();

async function deliverIn(epoch: string, accountId: string, changes: readonly Change[]): Promise<Applied> {
  const res = await postChanges(accountId, [], { body: JSON.stringify({ epoch, changes }) });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as Applied;
}

async function rehydrate(accountId: string, body: string): Promise<{ status: number; json: unknown }> {
  const res = await SELF.fetch(`${BASE}/v1/accounts/${accountId}/rehydrate`, {
    method: 'POST',
    body,
    headers: { [SIGNATURE_HEADER]: await signBody(SECRET, body, Math.floor(Date.now() / 1000)) },
  });
  return { status: res.status, json: await res.json() };
}

/** The object's meta facts: position, epoch, stale counter, when its snapshot was taken. */
async function meta(accountId: string): Promise<{ position: string | null; epoch: string | null; staleSkipped: number; snapshotAt: string | null }> {
  return await runInDurableObject(env.ACCOUNT.get(env.ACCOUNT.idFromName(accountId)), (_: AccountDO, state) => {
    const rows = state.storage.sql.exec<{ key: string; value: string }>('select key, value from meta').toArray();
    const get = (k: string) => rows.find((r) => r.key === k)?.value ?? null;
    return { position: get('position'), epoch: get('epoch'), staleSkipped: Number(get('stale_skipped') ?? 0), snapshotAt: get('snapshot')?.split('|')[0] ?? null };
  });
}

/** Changes as another stream numbered them: every one at `lsn`, seqs as they were. */
const at = (lsn: string, changes: readonly Change[]) => changes.map((c) => ({ ...c, lsn }));

/** An actor in a group with a client token, a site, R1 and a policy granting it, delivered in `epoch` at positions FF/0:*. */
async function setupIn(epoch: string) {
  const account = await TestAccount.create(sql);
  let s: { r1: Row; token: string } | undefined;
  const changes = await account.commit(async (t) => {
    const actor = await account.actor(t);
    const group = await account.group(t);
    await account.membership(t, actor.id, group.id);
    const site = await account.site(t);
    const r1 = await account.resource(t, { name: 'R1' });
    await account.connection(t, r1.id, site.id);
    await account.policy(t, group.id, r1.id);
    s = { r1, token: (await account.clientToken(t, actor.id)).token };
  });
  await deliverIn(epoch, account.id, at('FF/0', changes));
  expect(await meta(account.id)).toMatchObject({ position: `FF/0:${changes.length - 1}`, epoch, staleSkipped: 0 });
  const { device, init } = await connect('client', s!.token);
  expect((init.payload.resources as { name: string }[]).map((r) => r.name)).toEqual(['R1']);
  return { account, device, r1: s!.r1 };
}

describe('replication epochs in the object', () => {
  it('a batch of another epoch makes it re-hydrate and reset its position: batches below its old position are applied, not skipped as stale', async () => {
    const e1 = `1-${randomText(8)}`;
    const e2 = `2-${randomText(8)}`;
    const { account, device, r1 } = await setupIn(e1);
    // The new stream's first batch, at a position far below FF/0: the object reloads first; the
    // change is in its new snapshot (seen, not stale), and the clients get the difference.
    const renamed = await account.commit((t) => t.update('resources', { id: r1.id }, { name: 'R1 renamed' }));
    expect(await deliverIn(e2, account.id, renamed)).toEqual({ applied: 0, skipped: 1, position: `${renamed[0]!.lsn}:0` });
    expect((await device.next('resource_created_or_updated')).payload.name).toBe('R1 renamed');
    expect(await meta(account.id)).toMatchObject({ position: `${renamed[0]!.lsn}:0`, epoch: e2, staleSkipped: 0 });
    // The next batch of the new epoch is applied, though far below the old position.
    const again = await account.commit((t) => t.update('resources', { id: r1.id }, { name: 'R1 again' }));
    expect(await deliverIn(e2, account.id, again)).toEqual({ applied: 1, skipped: 0, position: `${again[0]!.lsn}:0` });
    expect((await device.next('resource_created_or_updated')).payload.name).toBe('R1 again');
    // Within the epoch, order holds as ever: a replay is stale.
    expect(await deliverIn(e2, account.id, again)).toEqual({ applied: 0, skipped: 1, position: `${again[0]!.lsn}:0` });
    expect(await meta(account.id)).toMatchObject({ epoch: e2, staleSkipped: 1 });
    expect(await device.drain()).toEqual([]);
  });

  it('the rehydrate route with an epoch reloads the account and resets the position: the new epoch’s lower positions are applied', async () => {
    const e1 = `1-${randomText(8)}`;
    const e3 = `3-${randomText(8)}`;
    const { account, device, r1 } = await setupIn(e1);
    // Lost with the old stream: only the re-hydration brings it.
    await account.commit((t) => t.update('resources', { id: r1.id }, { name: 'R1 lost' }));
    expect(await rehydrate(account.id, JSON.stringify({ epoch: e3 }))).toEqual({ status: 200, json: { rehydrated: true, position: null } });
    expect((await device.next('resource_created_or_updated')).payload.name).toBe('R1 lost');
    expect(await meta(account.id)).toMatchObject({ position: null, epoch: e3, staleSkipped: 0 });
    const later = await account.commit((t) => t.update('resources', { id: r1.id }, { name: 'R1 later' }));
    expect(await deliverIn(e3, account.id, at('0/10', later))).toEqual({ applied: 1, skipped: 0, position: '0/10:0' });
    expect((await device.next('resource_created_or_updated')).payload.name).toBe('R1 later');
    expect(await meta(account.id)).toMatchObject({ position: '0/10:0', epoch: e3, staleSkipped: 0 });
    expect(await device.drain()).toEqual([]);
  });

  it('an object hydrates in the current epoch (replication_epochs): a batch of it applies without reloading, one of the next epoch reloads', async () => {
    const slot = `epochs_test_${randomText(8)}`;
    const current = `7-${randomText(8)}`;
    await sql`insert into replication_epochs (slot_name, epoch, epoch_number, system_identifier, timeline, started_at)
              values (${slot}, ${current}, 7, '1', 1, now() + interval '1 hour')`;
    try {
      const account = await TestAccount.create(sql);
      const created = await account.commit((t) => account.actor(t));
      // The first request hydrates it: in the epoch the snapshot saw.
      const first = await rehydrate(account.id, '{}');
      expect(first.status).toBe(200);
      const hydrated = await meta(account.id);
      expect(hydrated).toMatchObject({ epoch: current, position: null });
      const later = await account.commit((t) => account.actor(t, { name: 'Bob' }));
      expect(await deliverIn(current, account.id, [...created, ...later])).toMatchObject({ applied: 1, skipped: 1 });
      // Same snapshot: no reload for a batch of the epoch it follows.
      expect((await meta(account.id)).snapshotAt).toBe(hydrated.snapshotAt);
      const next = `8-${randomText(8)}`;
      const more = await account.commit((t) => account.actor(t, { name: 'Cy' }));
      expect(await deliverIn(next, account.id, at('0/20', more))).toMatchObject({ applied: 0, skipped: 1, position: '0/20:0' });
      expect(await meta(account.id)).toMatchObject({ epoch: next, position: '0/20:0', staleSkipped: 0 });
    } finally {
      await sql`delete from replication_epochs where slot_name = ${slot}`;
    }
  });
});
