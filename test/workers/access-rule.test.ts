import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { basicSetup, TestAccount, type Basic } from './support/account.ts';
import { connect, type Device } from './support/device.ts';
import { ALARM_LATENESS_MS, database } from './support/world.ts';
import { holderOf } from './support/relays.ts';

const sql = database();

async function setup(): Promise<{ account: TestAccount; s: Basic; device: Device }> {
  const account = await TestAccount.create(sql);
  const s = await basicSetup(account);
  const { device, init } = await connect('client', s.token);
  expect((init.payload.resources as { id: string }[]).map((r) => r.id)).toEqual([s.resource.id]);
  return { account, s, device };
}

const deleted = (id: unknown) => ({ event: 'resource_deleted', payload: { id } });

/** The account object's scheduled alarm (epoch ms), or null. */
const alarmOf = (account: TestAccount) => runInDurableObject(holderOf(account.id), (_, state) => state.storage.getAlarm());
/** Runs the account object's alarm now, early: it must change nothing and re-arm the same instant. */
const runAlarmEarly = (account: TestAccount) => runDurableObjectAlarm(holderOf(account.id));

/** Each clause of docs/protocol.md#access-rule's rule, taken away and given back, with the exact frames. */
describe('the access rule, clause by clause', () => {
  it('policy deleted, then restored', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.softDelete('policies', { id: s.policy.id }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { deleted_at: null }));
    const [f, ...rest] = await device.drain();
    expect(rest).toEqual([]);
    expect(f).toMatchObject({ event: 'resource_created_or_updated', payload: { id: s.resource.id, name: 'Wiki' } });
  });

  it('policy disabled, then enabled', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { disabled_at: new Date() }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { disabled_at: null }));
    expect((await device.drain()).map((f) => f.event)).toEqual(['resource_created_or_updated']);
  });

  it('membership removed, then added', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.delete('actor_group_memberships', { actor_id: s.actor.id, group_id: s.group.id }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
    await account.apply((t) => account.membership(t, s.actor.id, s.group.id));
    expect((await device.drain()).map((f) => f.event)).toEqual(['resource_created_or_updated']);
  });

  it('group deleted', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.softDelete('actor_groups', { id: s.group.id }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('resource deleted', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.softDelete('resources', { id: s.resource.id }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('site deleted: the resource has no site left', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.softDelete('sites', { id: s.site.id }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('policy moved to another group the actor is not in', async () => {
    const { account, s, device } = await setup();
    await account.apply(async (t) => {
      const other = await account.group(t, { name: 'Other' });
      await t.update('policies', { id: s.policy.id }, { actor_group_id: other.id });
    });
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('actor disabled, actor deleted, client deleted, client moved to another actor and account disabled close the socket with 4003', async () => {
    for (const revoke of ['actor disabled', 'actor deleted', 'client deleted', 'client moved', 'account disabled', 'account deleted'] as const) {
      const { account, s, device } = await setup();
      await account.apply(async (t) => {
        // The socket's token is its old actor's: for it, the client is gone.
        if (revoke === 'client moved') await t.update('clients', { actor_id: s.actor.id }, { actor_id: (await account.actor(t, { name: 'Bo' })).id });
        if (revoke === 'actor disabled') await t.update('actors', { id: s.actor.id }, { disabled_at: new Date() });
        if (revoke === 'actor deleted') await t.softDelete('actors', { id: s.actor.id });
        if (revoke === 'client deleted') await t.softDelete('clients', { actor_id: s.actor.id });
        if (revoke === 'account disabled') await t.update('accounts', { id: account.id }, { disabled_at: new Date() });
        if (revoke === 'account deleted') await t.softDelete('accounts', { id: account.id });
      });
      expect(await device.waitClosed(), revoke).toMatchObject({ code: 4003 });
    }
  });

  it('token deleted closes the socket with 4001', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.softDelete('tokens', { id: s.tokenRow.id }));
    expect(await device.waitClosed()).toEqual({ code: 4001, reason: 'token deleted or expired' });
  });

  it('revocation: the close frame arrives within 100 ms of the batch being applied', async () => {
    for (const revoke of ['token deleted', 'actor deleted'] as const) {
      const { account, s, device } = await setup();
      const changes = await account.commit((t) => (revoke === 'token deleted' ? t.softDelete('tokens', { id: s.tokenRow.id }) : t.softDelete('actors', { id: s.actor.id })));
      const sent = Date.now();
      await account.deliver(changes);
      const applied = Date.now();
      const closed = await device.waitClosed(1000);
      expect(closed.code, revoke).toBe(revoke === 'token deleted' ? 4001 : 4003);
      expect(device.closedAt!, revoke).toBeGreaterThanOrEqual(sent);
      expect(device.closedAt! - applied, revoke).toBeLessThanOrEqual(100);
    }
  });

  it('a token that expires closes the socket with 4001 at its expiry, by the alarm', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    let token = '';
    const expires = new Date(Date.now() + 1500);
    await account.apply(async (t) => {
      token = (await account.clientToken(t, s.actor.id, { expires_at: expires })).token;
    });
    const { device } = await connect('client', token);
    expect(device.closed).toBeUndefined();
    // The alarm is set to the expiry itself (a poller's would be earlier), and running it early does nothing.
    expect(await alarmOf(account)).toBe(expires.getTime());
    expect(await runAlarmEarly(account)).toBe(true);
    expect(await device.drain()).toEqual([]);
    expect(device.closed).toBeUndefined();
    expect(await alarmOf(account)).toBe(expires.getTime());
    expect(await device.waitClosed(3000)).toEqual({ code: 4001, reason: 'token deleted or expired' });
    expect(device.closedAt!).toBeGreaterThanOrEqual(expires.getTime());
    expect(device.closedAt! - expires.getTime()).toBeLessThanOrEqual(ALARM_LATENESS_MS);
    // Nothing else expires: no alarm is left.
    expect(await alarmOf(account)).toBeNull();
  });
});

describe('conditions', () => {
  async function withConditions(conditions: unknown[], opts: { ip?: string; country?: string } = {}) {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { conditions: t.tx.json(conditions as never) }));
    const { device, init } = await connect('client', s.token, opts);
    return { account, s, device, ids: (init.payload.resources as { id: string }[]).map((r) => r.id) };
  }

  it('remote_ip: is_in_cidr and is_not_in_cidr against the connecting IP', async () => {
    const inside = [{ property: 'remote_ip', operator: 'is_in_cidr', values: ['10.0.0.0/8'] }];
    expect((await withConditions(inside, { ip: '10.1.2.3' })).ids).toHaveLength(1);
    expect((await withConditions(inside, { ip: '192.168.1.1' })).ids).toHaveLength(0);
    const outside = [{ property: 'remote_ip', operator: 'is_not_in_cidr', values: ['10.0.0.0/8'] }];
    expect((await withConditions(outside, { ip: '192.168.1.1' })).ids).toHaveLength(1);
    expect((await withConditions(outside, { ip: '10.9.9.9' })).ids).toHaveLength(0);
  });

  it('remote_ip_location_region: is_in and is_not_in against the edge country', async () => {
    const isIn = [{ property: 'remote_ip_location_region', operator: 'is_in', values: ['DE', 'FR'] }];
    expect((await withConditions(isIn, { country: 'DE' })).ids).toHaveLength(1);
    expect((await withConditions(isIn, { country: 'US' })).ids).toHaveLength(0);
    const notIn = [{ property: 'remote_ip_location_region', operator: 'is_not_in', values: ['DE'] }];
    expect((await withConditions(notIn, { country: 'US' })).ids).toHaveLength(1);
    expect((await withConditions(notIn, { country: 'DE' })).ids).toHaveLength(0);
  });

  it('invalid conditions grant nothing (fail closed)', async () => {
    expect((await withConditions([{ property: 'moon_phase', operator: 'is', values: ['full'] }])).ids).toHaveLength(0);
  });

  it('client_verified: verifying grants, unverifying revokes', async () => {
    const { account, s, device, ids } = await withConditions([{ property: 'client_verified', operator: 'is', values: ['true'] }]);
    expect(ids).toEqual([]);
    await account.apply((t) => t.update('clients', { actor_id: s.actor.id }, { verified_at: new Date() }));
    const [granted, ...none] = await device.drain();
    expect(none).toEqual([]);
    expect(granted).toMatchObject({ event: 'resource_created_or_updated', payload: { id: s.resource.id } });
    await account.apply((t) => t.update('clients', { actor_id: s.actor.id }, { verified_at: null }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('a condition change that still passes sends an update; one that fails sends a delete', async () => {
    const { account, s, device, ids } = await withConditions([{ property: 'remote_ip', operator: 'is_in_cidr', values: ['10.0.0.0/8'] }], { ip: '10.1.2.3' });
    expect(ids).toEqual([s.resource.id]);
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { conditions: t.tx.json([{ property: 'remote_ip', operator: 'is_in_cidr', values: ['10.1.0.0/16'] }]) }));
    const frames = await device.drain();
    expect(frames).toHaveLength(1);
    expect(frames[0]).toMatchObject({ event: 'resource_created_or_updated', payload: { id: s.resource.id } });
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { conditions: t.tx.json([{ property: 'remote_ip', operator: 'is_in_cidr', values: ['10.2.0.0/16'] }]) }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('a time window that opens in a second is granted by the alarm, without any change arriving', async () => {
    // Whole seconds: the window opens between 1 and 2 s from now.
    const opens = new Date(Math.ceil(Date.now() / 1000) * 1000 + 1000);
    const closes = new Date(opens.getTime() + 10 * 60_000);
    const day = 'UMTWRFS'[opens.getUTCDay()];
    const hms = (d: Date) => d.toISOString().slice(11, 19);
    const { account, s, device, ids } = await withConditions([
      { property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: [`${day}/${hms(opens)}-${hms(closes)}/UTC`] },
    ]);
    expect(ids).toEqual([]);
    // The alarm is set to the opening itself (a poller's would be earlier), and running it early does nothing.
    expect(await alarmOf(account)).toBe(opens.getTime());
    expect(await runAlarmEarly(account)).toBe(true);
    expect(await device.drain()).toEqual([]);
    expect(await alarmOf(account)).toBe(opens.getTime());
    const granted = await device.next('resource_created_or_updated', 3000);
    const at = Date.now();
    expect(granted.payload.id).toBe(s.resource.id);
    expect(at).toBeGreaterThanOrEqual(opens.getTime());
    expect(at - opens.getTime()).toBeLessThanOrEqual(ALARM_LATENESS_MS);
    // Next: the window's end (inclusive to the second).
    expect(await alarmOf(account)).toBe(closes.getTime() + 1000);
  });
});

describe('exact frames', () => {
  it('a resource reachable through two groups appears once; removing one membership sends nothing', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await account.apply(async (t) => {
      const second = await account.group(t, { name: 'Second' });
      await account.membership(t, s.actor.id, second.id);
      await account.policy(t, second.id, s.resource.id);
    });
    const { device, init } = await connect('client', s.token);
    expect((init.payload.resources as { id: string }[]).map((r) => r.id)).toEqual([s.resource.id]);
    await account.apply((t) => t.delete('actor_group_memberships', { actor_id: s.actor.id, group_id: s.group.id }));
    expect(await device.drain()).toEqual([]);
  });

  it('renaming a site updates every resource view that lists it', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    let second = '';
    await account.apply(async (t) => {
      const r = await account.resource(t, { name: 'Git', address: 'git.example.com' });
      second = r.id as string;
      await account.connection(t, r.id, s.site.id);
      await account.policy(t, s.group.id, r.id);
    });
    const { device } = await connect('client', s.token);
    await account.apply((t) => t.update('sites', { id: s.site.id }, { name: 'Berlin' }));
    const frames = await device.drain();
    expect(frames.map((f) => f.event)).toEqual(['resource_created_or_updated', 'resource_created_or_updated']);
    expect(new Set(frames.map((f) => f.payload.id))).toEqual(new Set([s.resource.id, second]));
    for (const f of frames) expect(f.payload.sites).toEqual([{ id: s.site.id, name: 'Berlin' }]);
  });

  it('a second site connection updates the view; removing the last one deletes the resource', async () => {
    const { account, s, device } = await setup();
    let siteId = '';
    await account.apply(async (t) => {
      const site = await account.site(t, { name: 'Amsterdam' });
      siteId = site.id as string;
      await account.connection(t, s.resource.id, site.id);
    });
    const [update, ...none] = await device.drain();
    expect(none).toEqual([]);
    expect(update).toMatchObject({ event: 'resource_created_or_updated', payload: { id: s.resource.id } });
    expect(update!.payload.sites).toEqual([
      { id: siteId, name: 'Amsterdam' },
      { id: s.site.id, name: 'HQ' },
    ]);
    await account.apply((t) => t.delete('resource_connections', { resource_id: s.resource.id, site_id: siteId }));
    expect((await device.drain()).map((f) => f.event)).toEqual(['resource_created_or_updated']);
    await account.apply((t) => t.delete('resource_connections', { resource_id: s.resource.id, site_id: s.site.id }));
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
  });

  it('a description-only policy update sends nothing', async () => {
    const { account, s, device } = await setup();
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { description: 'a better description' }));
    expect(await device.drain()).toEqual([]);
  });

  it('the flip-flop: a policy moved R1 -> R2 -> R1 in consecutive transactions leaves the client with R1 only', async () => {
    const { account, s, device } = await setup();
    let r2 = '';
    await account.apply(async (t) => {
      const r = await account.resource(t, { name: 'R2', address: 'r2.example.com' });
      r2 = r.id as string;
      await account.connection(t, r.id, s.site.id);
    });
    expect(await device.drain()).toEqual([]);
    // Three transactions delivered in one batch: the net change is none, so nothing is sent.
    const batch = [
      ...(await account.commit((t) => t.update('policies', { id: s.policy.id }, { resource_id: r2 }))),
      ...(await account.commit((t) => t.update('policies', { id: s.policy.id }, { resource_id: s.resource.id }))),
    ];
    await account.deliver(batch);
    expect(await device.drain()).toEqual([]);
    // The same moves one batch at a time: each step is sent, and the client ends with R1 only.
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { resource_id: r2 }));
    const toR2 = await device.drain();
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { resource_id: s.resource.id }));
    const toR1 = await device.drain();
    const key = (f: { event: string; payload: { id?: unknown } }) => `${f.event} ${String(f.payload.id)}`;
    expect(new Set(toR2.map(key))).toEqual(new Set([`resource_created_or_updated ${r2}`, `resource_deleted ${String(s.resource.id)}`]));
    expect(new Set(toR1.map(key))).toEqual(new Set([`resource_created_or_updated ${String(s.resource.id)}`, `resource_deleted ${r2}`]));
    expect(toR2).toHaveLength(2);
    expect(toR1).toHaveLength(2);
  });

  it('a change at a position already applied changes nothing', async () => {
    const { account, s, device } = await setup();
    const changes = await account.commit((t) => t.softDelete('policies', { id: s.policy.id }));
    await account.deliver(changes);
    expect(await device.drain()).toEqual([deleted(s.resource.id)]);
    const restore = await account.commit((t) => t.update('policies', { id: s.policy.id }, { deleted_at: null }));
    await account.deliver(restore);
    expect((await device.drain()).map((f) => f.event)).toEqual(['resource_created_or_updated']);
    expect(await account.deliver(changes)).toMatchObject({ applied: 0, skipped: 1 });
    expect(await device.drain()).toEqual([]);
  });
});
