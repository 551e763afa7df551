import { abortAllDurableObjects, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { MAX_DELAY_MS, QUIET_MS } from '../../workers/account/flow-log.ts';
import { connect } from './support/device.ts';
import { authorized, createFlow, flowWorld, sql } from './support/flows.ts';
import { ALARM_LATENESS_MS } from './support/world.ts';
import { holderOf } from './support/relays.ts';

const reject = (clientId: unknown, resourceId: unknown) => ({ event: 'reject_access', payload: { client_id: clientId, resource_id: resourceId } });

/** When the object's flow log runs its retention next (docs/protocol.md#flow-log), or null. */
async function retentionAt(stub: DurableObjectStub): Promise<number | null> {
  return await runInDurableObject(stub, (_, state) => state.storage.sql.exec<{ at: number | null }>('select retention_at as at from flow_log_meta').toArray()[0]?.at ?? null);
}

describe('create_flow (issue 4)', () => {
  it('authorizes in memory: authorize_flow to the gateway, flow_created and a reply to the client, the flow logged later', async () => {
    const w = await flowWorld({ client: { publicKey: 'client-key', version: '1.4.2' }, gateway: { publicKey: 'gateway-key' } });
    expect(w.gatewayInit.payload).toMatchObject({ site_id: w.s.site.id, flows: [] });
    w.client.send({ event: 'create_flow', ref: 'abc', payload: { resource_id: w.s.resource.id, connected_gateway_ids: [] } });
    const authorize = await w.gateway.next('authorize_flow');
    const created = await w.client.next('flow_created');
    const reply = await w.client.next('reply');
    expect(authorize.payload).toMatchObject({
      client: { id: w.clientId, public_key: 'client-key', version: '1.4.2' },
      resource: { id: w.s.resource.id, name: 'Wiki', address: 'wiki.example.com', sites: [{ id: w.s.site.id, name: 'HQ' }] },
      expires_at: null,
    });
    expect(created.payload).toMatchObject({
      ref: 'abc',
      resource_id: w.s.resource.id,
      gateway_id: w.gatewayInit.payload.gateway_id,
      site_id: w.s.site.id,
      gateway_public_key: 'gateway-key',
    });
    for (const key of ['preshared_key', 'client_ice', 'gateway_ice'] as const) expect(created.payload[key]).toEqual(authorize.payload[key]);
    expect((created.payload.preshared_key as string).length).toBeGreaterThanOrEqual(40);
    expect(reply).toEqual({ event: 'reply', ref: 'abc', payload: { status: 'ok', flow_id: authorize.payload.flow_id } });
    // A second flow gets fresh credentials.
    const again = await authorized(w, w.s.resource.id);
    expect(again.payload.preshared_key).not.toEqual(authorize.payload.preshared_key);
    // The audit log reaches Postgres asynchronously.
    for (let i = 0; i < 50; i++) {
      const rows = await sql`select client_id, gateway_id, resource_id, policy_id, token_id from flows where id = ${authorize.payload.flow_id as string}`;
      if (rows.length) {
        expect(rows[0]).toEqual({
          client_id: w.clientId,
          gateway_id: w.gatewayInit.payload.gateway_id,
          resource_id: w.s.resource.id,
          policy_id: w.s.policy.id,
          token_id: w.s.tokenRow.id,
        });
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the flow never reached Postgres');
  });

  it('never waits for the database: flows are created while the flows table is locked, and logged once it is free', async () => {
    const w = await flowWorld();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const lock = sql.begin(async (tx) => {
      await tx`lock table flows in access exclusive mode`;
      locked();
      await held;
    });
    await isLocked;
    const first = await authorized(w, w.s.resource.id);
    const second = await authorized(w, w.s.resource.id);
    expect(first.payload.flow_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(second.payload.flow_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(second.payload.flow_id).not.toBe(first.payload.flow_id);
    release();
    await lock;
    for (let i = 0; i < 100; i++) {
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from flows where id in ${sql([first.payload.flow_id as string, second.payload.flow_id as string])}`;
      if (row!.n === 2) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the flows never reached Postgres after the lock was released');
  });

  it('an object that ends before its flow log is flushed still logs within the maximum delay: the alarm covers it', async () => {
    const w = await flowWorld();
    const stub = holderOf(w.account.id);
    const alarmAt = () => runInDurableObject(stub, (_, state) => state.storage.getAlarm());
    const logged = async (id: unknown) => (await sql`select id from flows where id = ${id as string}`).length;
    const before = Date.now();
    const flow = await authorized(w, w.s.resource.id);
    const after = Date.now();
    // The instance ends before the quiet timer (1 s) fired, and the timer with it (a deploy, a
    // reset; workerd does not hibernate an object while a timer is pending: evictDurableObject
    // would wait for it). Its sockets close; nothing wakes it again but the alarm.
    await abortAllDurableObjects();
    expect(Date.now() - after).toBeLessThan(QUIET_MS);
    const at = await alarmAt();
    // Exactly the oldest entry's deadline (a poller's earlier alarm fails this), so never later.
    expect(at).toBeGreaterThanOrEqual(before + MAX_DELAY_MS);
    expect(at).toBeLessThanOrEqual(after + MAX_DELAY_MS);
    expect(await logged(flow.payload.flow_id)).toBe(0);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect(await logged(flow.payload.flow_id)).toBe(1);
    // Nothing else is due (no device, no expiry): the only alarm left is the flow log's retention,
    // when the row just logged turns FLOW_RETENTION_DAYS (30) old.
    expect(await alarmAt()).toBe(await retentionAt(stub));
    expect(await alarmAt()).toBeGreaterThan(Date.now() + 29 * 86_400_000);
  });

  it('a batch that recomputes the alarm while a flush hangs keeps the flow log deadline; the flush clears it', async () => {
    const w = await flowWorld();
    const stub = holderOf(w.account.id);
    const alarmAt = () => runInDurableObject(stub, (_, state) => state.storage.getAlarm());
    // The table is locked: the flush the quiet timer starts waits, and the entry stays in the outbox.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const lock = sql.begin(async (tx) => {
      await tx`lock table flows in access exclusive mode`;
      locked();
      await held;
    });
    await isLocked;
    const before = Date.now();
    await authorized(w, w.s.resource.id);
    const after = Date.now();
    // Wait until the flush is blocked on the lock: should this instance end now, only the alarm is left.
    for (const deadline = Date.now() + 5000; ; ) {
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and query like '%insert into flows%'`;
      if (row!.n > 0) break;
      if (Date.now() > deadline) throw new Error('the flush never started');
      await new Promise((r) => setTimeout(r, 50));
    }
    await w.account.apply((t) => t.update('policies', { id: w.s.policy.id }, { description: 'reworded' }));
    const at = await alarmAt();
    expect(at).toBeGreaterThanOrEqual(before + MAX_DELAY_MS);
    expect(at).toBeLessThanOrEqual(after + MAX_DELAY_MS);
    release();
    await lock;
    // Once the outbox is empty, the alarm kept for it goes (nothing else is due but the flow log's
    // retention, when the row just logged turns 30 days old).
    const onlyRetention = async () => (await alarmAt()) === (await retentionAt(stub)) && (await alarmAt())! > Date.now() + 29 * 86_400_000;
    for (const deadline = Date.now() + 5000; !(await onlyRetention()); ) {
      if (Date.now() > deadline) throw new Error('the alarm kept for the flow log stayed after the flush');
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await sql`select count(*)::int as n from flows where client_id = ${w.clientId}`)[0]!.n).toBe(1);
  });

  it('fails with not_found, forbidden (naming the violated properties) and offline', async () => {
    const w = await flowWorld();
    expect((await createFlow(w.client, crypto.randomUUID())).payload).toMatchObject({ reason: 'not_found' });
    let hidden = '';
    let offline = '';
    let conditional = '';
    await w.account.apply(async (t) => {
      const r = await w.account.resource(t, { name: 'No policy', address: 'np.example.com' });
      await w.account.connection(t, r.id, w.s.site.id);
      hidden = r.id as string;
      const elsewhere = await w.account.site(t, { name: 'Elsewhere' });
      const r2 = await w.account.resource(t, { name: 'Offline', address: 'off.example.com' });
      await w.account.connection(t, r2.id, elsewhere.id);
      await w.account.policy(t, w.s.group.id, r2.id);
      offline = r2.id as string;
      const r3 = await w.account.resource(t, { name: 'Verified only', address: 'v.example.com' });
      await w.account.connection(t, r3.id, w.s.site.id);
      await w.account.policy(t, w.s.group.id, r3.id, { conditions: t.tx.json([{ property: 'client_verified', operator: 'is', values: ['true'] }]) });
      conditional = r3.id as string;
    });
    await w.client.drain();
    expect((await createFlow(w.client, hidden)).payload).toEqual({ resource_id: hidden, reason: 'not_found' });
    expect((await createFlow(w.client, conditional)).payload).toEqual({ resource_id: conditional, reason: 'forbidden', violated_properties: ['client_verified'] });
    expect((await createFlow(w.client, offline)).payload).toEqual({ resource_id: offline, reason: 'offline' });
    w.gateway.close();
    await new Promise((r) => setTimeout(r, 100));
    expect((await createFlow(w.client, w.s.resource.id)).payload).toMatchObject({ reason: 'offline' });
  });

  it('serves a client only with a version-compatible gateway', async () => {
    const w = await flowWorld({ client: { version: '1.4.2' }, gateway: { version: '1.1.0' } });
    expect((await createFlow(w.client, w.s.resource.id)).payload).toMatchObject({ reason: 'offline' });
    const newer = await connect('gateway', w.siteToken, { version: '1.3.7' });
    const answer = await createFlow(w.client, w.s.resource.id);
    expect(answer.payload.gateway_id).toBe(newer.init.payload.gateway_id);
    const tooNew = await flowWorld({ client: { version: '1.4.2' }, gateway: { version: '1.6.0' } });
    expect((await createFlow(tooNew.client, tooNew.s.resource.id)).payload).toMatchObject({ reason: 'offline' });
  });

  it('prefers the gateways the client already uses, and otherwise spreads flows across gateways', async () => {
    const w = await flowWorld();
    const second = await connect('gateway', w.siteToken);
    const ids = [w.gatewayInit.payload.gateway_id as string, second.init.payload.gateway_id as string];
    const resources: string[] = [w.s.resource.id as string];
    await w.account.apply(async (t) => {
      for (let i = 1; i < 6; i++) {
        const r = await w.account.resource(t, { name: `R${i}`, address: `r${i}.example.com` });
        await w.account.connection(t, r.id, w.s.site.id);
        await w.account.policy(t, w.s.group.id, r.id);
        resources.push(r.id as string);
      }
    });
    await w.client.drain();
    const chosen: string[] = [];
    for (const r of resources) chosen.push((await createFlow(w.client, r)).payload.gateway_id as string);
    expect(chosen.filter((g) => g === ids[0])).toHaveLength(3);
    expect(chosen.filter((g) => g === ids[1])).toHaveLength(3);
    for (const r of resources.slice(0, 3)) expect((await createFlow(w.client, r, [ids[1]!])).payload.gateway_id).toBe(ids[1]);
  });
});

describe('revocation (issue 4)', () => {
  const causes: Record<string, (w: Awaited<ReturnType<typeof flowWorld>>) => Promise<unknown>> = {
    'policy deleted': (w) => w.account.apply((t) => t.softDelete('policies', { id: w.s.policy.id })),
    'policy disabled': (w) => w.account.apply((t) => t.update('policies', { id: w.s.policy.id }, { disabled_at: new Date() })),
    'policy moved to another group': (w) =>
      w.account.apply(async (t) => t.update('policies', { id: w.s.policy.id }, { actor_group_id: (await w.account.group(t, { name: 'x' })).id })),
    'policy moved to another resource': (w) =>
      w.account.apply(async (t) => t.update('policies', { id: w.s.policy.id }, { resource_id: (await w.account.resource(t, { name: 'x', address: 'x.example.com' })).id })),
    'membership removed': (w) => w.account.apply((t) => t.delete('actor_group_memberships', { actor_id: w.s.actor.id, group_id: w.s.group.id })),
    'group deleted': (w) => w.account.apply((t) => t.softDelete('actor_groups', { id: w.s.group.id })),
    'resource deleted': (w) => w.account.apply((t) => t.softDelete('resources', { id: w.s.resource.id })),
    'resource disconnected from the site': (w) => w.account.apply((t) => t.delete('resource_connections', { resource_id: w.s.resource.id, site_id: w.s.site.id })),
    'a condition no longer true': (w) =>
      w.account.apply((t) =>
        t.update('policies', { id: w.s.policy.id }, { conditions: t.tx.json([{ property: 'remote_ip_location_region', operator: 'is_in', values: ['FR'] }]) }),
      ),
    'a breaking address change': (w) => w.account.apply((t) => t.update('resources', { id: w.s.resource.id }, { address: 'new.example.com' })),
    'actor disabled': (w) => w.account.apply((t) => t.update('actors', { id: w.s.actor.id }, { disabled_at: new Date() })),
    'client token deleted': (w) => w.account.apply((t) => t.softDelete('tokens', { id: w.s.tokenRow.id })),
  };
  for (const [cause, act] of Object.entries(causes)) {
    it(`${cause}: reject_access once`, async () => {
      const w = await flowWorld({ client: { country: 'DE' } });
      await authorized(w, w.s.resource.id);
      await authorized(w, w.s.resource.id);
      await act(w);
      expect(await w.gateway.drain()).toEqual([reject(w.clientId, w.s.resource.id)]);
    });
  }

  it('unverifying a client revokes its flows under client_verified policies', async () => {
    const w = await flowWorld();
    await w.account.apply(async (t) => {
      await t.update('clients', { id: w.clientId }, { verified_at: new Date() });
      await t.update('policies', { id: w.s.policy.id }, { conditions: t.tx.json([{ property: 'client_verified', operator: 'is', values: ['true'] }]) });
    });
    await authorized(w, w.s.resource.id);
    await w.account.apply((t) => t.update('clients', { id: w.clientId }, { verified_at: null }));
    expect(await w.gateway.drain()).toEqual([reject(w.clientId, w.s.resource.id)]);
  });

  it('a breaking change rejects flows while the client gets the updated resource; a filters change sends resource_updated, a rename does not', async () => {
    const w = await flowWorld();
    await authorized(w, w.s.resource.id);
    await w.client.drain();
    await w.account.apply((t) => t.update('resources', { id: w.s.resource.id }, { filters: t.tx.json([{ protocol: 'udp', ports: ['53'] }]) }));
    const [updated, ...none] = await w.gateway.drain();
    expect(none).toEqual([]);
    expect(updated).toMatchObject({ event: 'resource_updated', payload: { id: w.s.resource.id, filters: [{ protocol: 'udp', ports: ['53'] }] } });
    expect((await w.client.drain()).map((f) => f.event)).toEqual(['resource_created_or_updated']);
    // The gateway enforces filters; a name (or description) is for clients only (docs/protocol.md#gateway-frames).
    await w.account.apply((t) => t.update('resources', { id: w.s.resource.id }, { name: 'Renamed', address_description: 'renamed' }));
    expect(await w.gateway.drain()).toEqual([]);
    expect((await w.client.drain()).map((f) => [f.event, f.payload.name])).toEqual([['resource_created_or_updated', 'Renamed']]);
    await w.account.apply((t) => t.update('resources', { id: w.s.resource.id }, { name: 'Renamed again', filters: t.tx.json([]) }));
    expect((await w.gateway.drain()).map((f) => [f.event, f.payload.name, f.payload.filters])).toEqual([['resource_updated', 'Renamed again', []]]);
    expect((await w.client.drain()).map((f) => f.event)).toEqual(['resource_created_or_updated']);
    await w.account.apply((t) => t.update('resources', { id: w.s.resource.id }, { ip_stack: 'ipv4_only' }));
    expect(await w.gateway.drain()).toEqual([reject(w.clientId, w.s.resource.id)]);
    const [client] = await w.client.drain();
    expect(client).toMatchObject({ event: 'resource_created_or_updated', payload: { ip_stack: 'ipv4_only' } });
  });

  it('two policies grant the pair: deleting one updates the expiry, deleting the other rejects', async () => {
    const w = await flowWorld();
    // The flow is authorized by the only policy; a second one that lasts as long changes nothing.
    await authorized(w, w.s.resource.id);
    let second = '';
    await w.account.apply(async (t) => {
      const g = await w.account.group(t, { name: 'Second' });
      await w.account.membership(t, w.s.actor.id, g.id);
      second = (await w.account.policy(t, g.id, w.s.resource.id)).id as string;
    });
    expect(await w.gateway.drain()).toEqual([]);
    // Deleting the policy that authorized it re-authorizes it under the other one.
    await w.account.apply((t) => t.softDelete('policies', { id: w.s.policy.id }));
    expect(await w.gateway.drain()).toEqual([{ event: 'access_authorization_expiry_updated', payload: { client_id: w.clientId, resource_id: w.s.resource.id, expires_at: null } }]);
    await w.account.apply((t) => t.softDelete('policies', { id: second }));
    expect(await w.gateway.drain()).toEqual([reject(w.clientId, w.s.resource.id)]);
  });

  it('a flow takes the end of the longest-lasting policy: a longer one added extends it, its removal shortens it again', async () => {
    const w = await flowWorld();
    const window = (closes: Date) => {
      const day = 'UMTWRFS'[new Date().getUTCDay()];
      const end = closes.getUTCDate() === new Date().getUTCDate() ? closes.toISOString().slice(11, 19) : '23:59:59';
      return [{ property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: [`${day}/00:00-${end}/UTC`] }];
    };
    // The only policy grants the resource for an hour (or until the end of the day).
    await w.account.apply((t) => t.update('policies', { id: w.s.policy.id }, { conditions: t.tx.json(window(new Date(Date.now() + 3600_000))) }));
    const first = await authorized(w, w.s.resource.id);
    const shortEnd = first.payload.expires_at as string;
    expect(Date.parse(shortEnd)).toBeGreaterThan(Date.now());
    // A second policy without an end: the flow now lasts as long as it.
    let second = '';
    await w.account.apply(async (t) => {
      const g = await w.account.group(t, { name: 'Always' });
      await w.account.membership(t, w.s.actor.id, g.id);
      second = (await w.account.policy(t, g.id, w.s.resource.id)).id as string;
    });
    const update = { event: 'access_authorization_expiry_updated', payload: { client_id: w.clientId, resource_id: w.s.resource.id } };
    expect(await w.gateway.drain()).toEqual([{ ...update, payload: { ...update.payload, expires_at: null } }]);
    // A reconnecting gateway is told the same end.
    const [gw] = await sql`select external_id from gateways where id = ${w.gatewayInit.payload.gateway_id as string}`;
    const again = await connect('gateway', w.siteToken, { externalId: gw!.external_id as string });
    expect(again.init.payload.flows).toEqual([{ flow_id: first.payload.flow_id, client_id: w.clientId, resource_id: w.s.resource.id, expires_at: null }]);
    // Without it, the windowed policy is the longest again.
    await w.account.apply((t) => t.softDelete('policies', { id: second }));
    expect(await w.gateway.drain()).toEqual([{ ...update, payload: { ...update.payload, expires_at: shortEnd } }]);
  });

  it('re-authorizes under the other policy with its expiry, instead of rejecting', async () => {
    const w = await flowWorld();
    // The flow is authorized by the only policy; a second one, with a time window, is added after.
    await authorized(w, w.s.resource.id);
    const closes = new Date(Date.now() + 3600_000);
    const day = 'UMTWRFS'[new Date().getUTCDay()];
    const hms = (d: Date) => d.toISOString().slice(11, 19);
    const window = `${day}/00:00-${closes.getUTCDate() === new Date().getUTCDate() ? hms(closes) : '23:59:59'}/UTC`;
    await w.account.apply(async (t) => {
      const g = await w.account.group(t, { name: 'Windowed' });
      await w.account.membership(t, w.s.actor.id, g.id);
      await w.account.policy(t, g.id, w.s.resource.id, {
        conditions: t.tx.json([{ property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: [window] }]),
      });
    });
    expect(await w.gateway.drain()).toEqual([]);
    await w.account.apply((t) => t.softDelete('policies', { id: w.s.policy.id }));
    const [update, ...none] = await w.gateway.drain();
    expect(none).toEqual([]);
    expect(update).toMatchObject({ event: 'access_authorization_expiry_updated', payload: { client_id: w.clientId, resource_id: w.s.resource.id } });
    expect(Date.parse(update!.payload.expires_at as string)).toBeGreaterThan(Date.now());
  });

  it('the flip-flop with a live flow: R1 -> R2 -> R1 rejects R1 once when delivered apart, and nothing in one batch', async () => {
    const w = await flowWorld();
    let r2 = '';
    await w.account.apply(async (t) => {
      const r = await w.account.resource(t, { name: 'R2', address: 'r2.example.com' });
      await w.account.connection(t, r.id, w.s.site.id);
      r2 = r.id as string;
    });
    await authorized(w, w.s.resource.id);
    const batch = [
      ...(await w.account.commit((t) => t.update('policies', { id: w.s.policy.id }, { resource_id: r2 }))),
      ...(await w.account.commit((t) => t.update('policies', { id: w.s.policy.id }, { resource_id: w.s.resource.id }))),
    ];
    await w.account.deliver(batch);
    expect(await w.gateway.drain()).toEqual([]);
    await w.account.apply((t) => t.update('policies', { id: w.s.policy.id }, { resource_id: r2 }));
    await w.account.apply((t) => t.update('policies', { id: w.s.policy.id }, { resource_id: w.s.resource.id }));
    expect(await w.gateway.drain()).toEqual([reject(w.clientId, w.s.resource.id)]);
  });

  it('a flow that expires is rejected by the alarm', async () => {
    const now = new Date();
    const closes = new Date(Math.ceil(Date.now() / 1000) * 1000 + 2000);
    const day = (d: Date) => 'UMTWRFS'[d.getUTCDay()];
    const hms = (d: Date) => d.toISOString().slice(11, 19);
    const last = new Date(closes.getTime() - 1000);
    // The window runs from midnight to the second before `closes`, across midnight if need be.
    const values = day(last) === day(now) ? [`${day(now)}/00:00-${hms(last)}/UTC`] : [`${day(now)}/true/UTC`, `${day(last)}/00:00-${hms(last)}/UTC`];
    const w = await flowWorld();
    await w.account.apply((t) =>
      t.update(
        'policies',
        { id: w.s.policy.id },
        {
          conditions: t.tx.json([{ property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values }]),
        },
      ),
    );
    const authorize = await authorized(w, w.s.resource.id);
    expect(authorize.payload.expires_at).toBe(closes.toISOString());
    await w.client.drain();
    // The alarm is set to the flow's end itself (a poller's would be earlier), and running it early does nothing.
    const stub = holderOf(w.account.id);
    const alarmAt = () => runInDurableObject(stub, (_, state) => state.storage.getAlarm());
    expect(await alarmAt()).toBe(closes.getTime());
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    expect([...(await w.gateway.drain()), ...(await w.client.drain())]).toEqual([]);
    expect(await alarmAt()).toBe(closes.getTime());
    expect(await w.gateway.next('reject_access', 3000)).toEqual(reject(w.clientId, w.s.resource.id));
    const at = Date.now();
    expect(at).toBeGreaterThanOrEqual(closes.getTime());
    expect(at - closes.getTime()).toBeLessThanOrEqual(ALARM_LATENESS_MS);
  });
});

describe('gateways (issue 4)', () => {
  it('init lists live flows to a reconnecting gateway, minus those revoked while it was away', async () => {
    const w = await flowWorld();
    let r2 = '';
    await w.account.apply(async (t) => {
      const r = await w.account.resource(t, { name: 'R2', address: 'r2.example.com' });
      await w.account.connection(t, r.id, w.s.site.id);
      await w.account.policy(t, w.s.group.id, r.id);
      r2 = r.id as string;
    });
    const kept = await authorized(w, w.s.resource.id);
    await authorized(w, r2);
    const gatewayExternalId = 'gw-1';
    w.gateway.close();
    await w.account.apply((t) => t.update('resources', { id: r2 }, { address: 'moved.example.com' }));
    // Reconnecting under the same external id is the same gateway.
    const again = await connect('gateway', w.siteToken, { externalId: gatewayExternalId });
    expect(again.init.payload.gateway_id).not.toBe(w.gatewayInit.payload.gateway_id);
    const rows = await sql`select external_id from gateways where id = ${w.gatewayInit.payload.gateway_id as string}`;
    const same = await connect('gateway', w.siteToken, { externalId: rows[0]!.external_id as string });
    expect(same.init.payload.gateway_id).toBe(w.gatewayInit.payload.gateway_id);
    expect(same.init.payload.flows).toEqual([{ flow_id: kept.payload.flow_id, client_id: w.clientId, resource_id: w.s.resource.id, expires_at: null }]);
  });

  it('deleting the gateway or its site closes it with 4003, deleting its token with 4001; its flows go elsewhere', async () => {
    const w = await flowWorld();
    const other = await connect('gateway', w.siteToken);
    const first = await createFlow(w.client, w.s.resource.id, [w.gatewayInit.payload.gateway_id as string]);
    expect(first.payload.gateway_id).toBe(w.gatewayInit.payload.gateway_id);
    await w.account.apply((t) => t.softDelete('gateways', { id: w.gatewayInit.payload.gateway_id }));
    expect(await w.gateway.waitClosed()).toMatchObject({ code: 4003 });
    const next = await createFlow(w.client, w.s.resource.id, [w.gatewayInit.payload.gateway_id as string]);
    expect(next.payload.gateway_id).toBe(other.init.payload.gateway_id);

    await w.account.apply((t) => t.softDelete('tokens', { id: w.siteTokenId }));
    expect(await other.device.waitClosed()).toEqual({ code: 4001, reason: 'token deleted or expired' });

    const v = await flowWorld();
    await v.account.apply((t) => t.softDelete('sites', { id: v.s.site.id }));
    expect(await v.gateway.waitClosed()).toMatchObject({ code: 4003, reason: 'site deleted' });
  });
});
