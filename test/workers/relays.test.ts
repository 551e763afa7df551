import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it, vi } from 'vitest';
import type { AccountDO } from '../../workers/account/account-do.ts';
import { MAX_ROW_CHARS } from '../../replicator/config.ts';
import { readRelayConfig } from '../../workers/account/relay-config.ts';
import { REGION_HEADER, relayName } from '../../workers/account/relay-placement.ts';
import { RELAY_NAME_HEADER } from '../../workers/account/relay-writer.ts';
import type { RemoteGateway } from '../../workers/account/remote-gateways.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect, websocketUrl } from './support/device.ts';
import { connectFrom, cutRelays, positionOf, relayOf, relaysOfWriter, stallRelay, stallRelays, writerOf } from './support/relays.ts';
import { database } from './support/world.ts';

const sql = database();
const RETIRE_AFTER_MS = readRelayConfig(env as unknown as Record<string, unknown>).retireAfterMs;

/** When the relay noted it held no socket, once it has (it tells the writer its count once closes settle, within about 1 s). */
async function idleSince(relay: DurableObjectStub<AccountDO>): Promise<number> {
  return await vi.waitFor(
    async () => {
      const v = await runInDurableObject(
        relay,
        (_: AccountDO, state) => state.storage.sql.exec<{ value: string }>("select value from relay_facts where key = 'idle_since'").toArray()[0]?.value,
      );
      expect(v).toBeDefined();
      return Number(v);
    },
    { timeout: 2_000, interval: 20 },
  );
}

/** As if RELAY_RETIRE_AFTER_MS passed since the relay went idle: its idle start moves back by that much, and its alarm runs. */
async function idleLongEnough(relay: DurableObjectStub<AccountDO>, since: number): Promise<void> {
  await runInDurableObject(relay, (_: AccountDO, state) => {
    state.storage.sql.exec("update relay_facts set value = ? where key = 'idle_since'", String(since - RETIRE_AFTER_MS));
  });
  // The fact is cached in the instance: a new one reads the stored value.
  await evictDurableObject(relay);
  expect(await runDurableObjectAlarm(relay)).toBe(true);
}

/** An account of the basic setup, and a token of its site. */
async function withSiteToken() {
  const account = await TestAccount.create(sql);
  const s = await basicSetup(account);
  let siteToken = '';
  await account.apply(async (t) => {
    siteToken = (await account.siteToken(t, s.site.id)).token;
  });
  return { account, s, siteToken };
}

/** An account with a client on the first region's object and a gateway of its site on NA's relay. */
async function clientAndGateway() {
  const { account, s, siteToken } = await withSiteToken();
  const home = await connectFrom('local', 'client', s.token);
  const gateway = await connectFrom('NA', 'gateway', siteToken);
  return { account, s, siteToken, home, gateway };
}

/** docs/architecture.md#relays */
describe('relay objects', () => {
  it("a device on a relay gets the same init and the same frames as one on the writer, and the relay follows the writer's position", async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const home = await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    // With RELAY_PLACEMENT=always (the workers-relays project) the first region's device is on a relay too.
    expect(await relaysOfWriter(account.id)).toContainEqual(expect.objectContaining({ name: relayName(account.id, 'EU', 0), sockets: 1 }));
    const without = (f: { payload: Record<string, unknown> }) => ({ ...f.payload, client_id: undefined });
    expect(without(far.init)).toEqual(without(home.init));
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki 2' }));
    await account.apply(async (t) => {
      const r = await account.resource(t, { name: 'Docs', address: 'docs.example.com' });
      await account.connection(t, r.id, s.site.id);
      await account.policy(t, s.group.id, r.id);
    });
    await account.apply((t) => t.softDelete('policies', { id: s.policy.id }));
    const seen = await home.device.drain();
    expect(seen.map((f) => f.event)).toEqual(['resource_created_or_updated', 'resource_created_or_updated', 'resource_deleted']);
    expect(await far.device.drain()).toEqual(seen);
    expect(await positionOf(relayOf(account.id, 'EU'))).toBe(await positionOf(writerOf(account.id)));
  });

  it('a device the writer places on a relay is connected to the relay itself: evicting the writer, its own sockets closed, leaves the device open and served', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    // Through the Worker, as devices connect: the first continent's device on the writer, the next one's on a relay.
    const home = await connect('client', s.token, { externalId: 'home', continent: 'NA' });
    const far = await connect('client', s.token, { externalId: 'far', continent: 'EU' });
    // The Worker reports the relay's count to the writer after the 101 (waitUntil): it lands within moments.
    await vi.waitFor(async () => expect(await relaysOfWriter(account.id)).toContainEqual(expect.objectContaining({ name: relayName(account.id, 'EU', 0), sockets: 1 })), {
      timeout: 1_000,
      interval: 20,
    });
    // The writer answers a connect it places on a relay with the relay's name, never with the relay's
    // socket: on the platform a socket passed back through the writer would carry every frame
    // through the writer's location, and keep it from hibernating.
    const placed = await writerOf(account.id).fetch(websocketUrl('client', s.token, { externalId: 'placed' }), { headers: { upgrade: 'websocket', [REGION_HEADER]: 'EU' } });
    // (With a cap of 2, the first relay's room is the Worker's lease: the writer names the next.)
    expect({ status: placed.status, relay: placed.headers.get(RELAY_NAME_HEADER), socket: placed.webSocket }).toEqual({
      status: 307,
      relay: expect.stringMatching(new RegExp(`^${account.id}/relay/EU/[01]$`)),
      socket: null,
    });
    await evictDurableObject(writerOf(account.id), { webSockets: 'close' });
    // A socket that ran through the writer would have ended with it.
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'After the eviction' }));
    expect((await far.device.next('resource_created_or_updated')).payload.name).toBe('After the eviction');
    expect(await far.device.drain()).toEqual([]);
    expect(far.device.closed).toBeUndefined();
    home.device.close();
    far.device.close();
  });

  it("clients connecting through the Worker go straight to their relay on the writer's placement lease: the writer is asked once a lease, and no relay goes over the cap", async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connect('client', s.token, { externalId: 'home', continent: 'NA' });
    await connect('client', s.token, { externalId: 'eu-0', continent: 'EU' });
    // From here on the writer counts the connects that reach it.
    await runInDurableObject(writerOf(account.id), (instance: AccountDO) => {
      const seam = instance as unknown as { fetch: (r: Request) => Promise<Response>; asked: number };
      const real = seam.fetch.bind(instance);
      seam.asked = 0;
      seam.fetch = (r: Request) => {
        seam.asked++;
        return real(r);
      };
    });
    for (let i = 1; i <= 8; i++) await connect('client', s.token, { externalId: `eu-${i}`, continent: 'EU' });
    const asked = await runInDurableObject(writerOf(account.id), (instance: AccountDO) => (instance as unknown as { asked: number }).asked);
    const cap = Number((env as unknown as Record<string, unknown>).RELAY_MAX_SOCKETS ?? 30_000);
    // A lease covers the room left under the cap, up to 64 connects: with a cap of 2, each relay's
    // second client is leased and the next asks the writer again.
    expect(asked).toBe(cap >= 9 ? 0 : 4);
    const held = [];
    for (let n = 0; n < Math.ceil(9 / Math.min(cap, 9)); n++)
      held.push(await runInDurableObject(relayOf(account.id, 'EU', n), (_: AccountDO, state) => state.getWebSockets().length));
    expect(held).toEqual(cap >= 9 ? [9] : [2, 2, 2, 2, 1]);
  });

  it('clients connecting through the Worker at once, on leases, never put a relay over the cap', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connect('client', s.token, { externalId: 'home', continent: 'NA' });
    const many = await Promise.all(Array.from({ length: 24 }, (_, i) => connect('client', s.token, { externalId: `eu-${i}`, continent: 'EU' })));
    expect(many.every((d) => d.init.event === 'init')).toBe(true);
    const cap = Number((env as unknown as Record<string, unknown>).RELAY_MAX_SOCKETS ?? 30_000);
    const eu = (await relaysOfWriter(account.id)).filter((r) => r.name.startsWith(`${account.id}/relay/EU/`));
    const held = await Promise.all(eu.map((r) => runInDurableObject(env.ACCOUNT.get(env.ACCOUNT.idFromName(r.name)), (_: AccountDO, state) => state.getWebSockets().length)));
    expect(held.reduce((n, h) => n + h, 0)).toBe(24);
    expect(Math.max(...held)).toBeLessThanOrEqual(cap);
  });

  it('connects in flight together respect the socket cap: each relay gets at most RELAY_MAX_SOCKETS, and a new relay is adopted once', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    // The account's first region (the writer holds it under RELAY_PLACEMENT=auto), then eight of another at once.
    await connectFrom('local', 'client', s.token);
    const far = await Promise.all(Array.from({ length: 8 }, () => connectFrom('EU', 'client', s.token)));
    expect(far.every((d) => d.init.event === 'init')).toBe(true);
    const cap = Number((env as unknown as Record<string, unknown>).RELAY_MAX_SOCKETS ?? 30_000);
    const perRelay = Math.min(cap, 8);
    const eu = (await relaysOfWriter(account.id)).filter((r) => r.name.startsWith(relayName(account.id, 'EU', 0).slice(0, -1)));
    expect(eu.map((r) => r.sockets)).toEqual(Array.from({ length: 8 / perRelay }, () => perRelay));
  });

  it('a relay that missed batches (forwards failing, the last one too) catches up by position from the alarm, in order, after an eviction', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    const restore = await cutRelays(account.id);
    for (let i = 1; i <= 5; i++) await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: `Wiki ${i}` }));
    // Nothing reached the relay: it is behind, and the writer logged what it missed.
    expect(await far.device.drain()).toEqual([]);
    await evictDurableObject(relayOf(account.id, 'EU'), { webSockets: 'hibernate' });
    await restore();
    // No batch comes after the last one missed: the writer's retry (its alarm, with backoff) alone brings the relay up.
    await far.device.waitFor(() => far.device.frames.length >= 6, 'the batches the relay missed', 15_000);
    const names = (await far.device.drain()).map((f) => f.payload.name);
    expect(names).toEqual(['Wiki 1', 'Wiki 2', 'Wiki 3', 'Wiki 4', 'Wiki 5']);
    expect(await positionOf(relayOf(account.id, 'EU'))).toBe(await positionOf(writerOf(account.id)));
    const [peer] = await relaysOfWriter(account.id);
    expect(peer!.acked).toBe(await positionOf(writerOf(account.id)));
    // Acknowledged: the log kept for the relay is pruned.
    expect(await runInDurableObject(writerOf(account.id), (_: AccountDO, state) => state.storage.sql.exec<{ n: number }>('select count(*) as n from relay_batches').one().n)).toBe(
      0,
    );
  });

  it("a relay that hangs costs the account's stream one forward timeout, not one per batch: the next batches are answered at once and reach the other relays, and it catches up once it answers", async () => {
    const { account, s, siteToken } = await withSiteToken();
    await connectFrom('local', 'client', s.token);
    const eu = await connectFrom('EU', 'client', s.token);
    const na = await connectFrom('NA', 'client', s.token);
    const restore = await stallRelay(account.id, relayName(account.id, 'EU', 0));
    // The first batch waits out the forward timeout (2 s) for EU's relay, then is answered.
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki 1' }));
    const started = Date.now();
    for (let i = 2; i <= 4; i++) await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: `Wiki ${i}` }));
    // Three more batches in less time than half of one timeout: none waited for the hung relay.
    expect(Date.now() - started).toBeLessThan(1_000);
    await na.device.waitFor(() => na.device.frames.length >= 4, "the other relay's frames", 1_000);
    expect((await na.device.drain()).map((f) => f.payload.name)).toEqual(['Wiki 1', 'Wiki 2', 'Wiki 3', 'Wiki 4']);
    expect(await eu.device.drain()).toEqual([]);
    // A gateway's connect, which every object must know of before its 101, does not wait for it either.
    const connecting = Date.now();
    const gateway = await connectFrom('NA', 'gateway', siteToken);
    expect(Date.now() - connecting).toBeLessThan(1_000);
    await restore();
    // Its retry (at most the 5 s backoff cap and one timeout away) brings everything it missed, in order, and the gateway list.
    await eu.device.waitFor(() => eu.device.frames.length >= 4, 'the batches the hung relay missed', 8_000);
    expect((await eu.device.drain()).map((f) => f.payload.name)).toEqual(['Wiki 1', 'Wiki 2', 'Wiki 3', 'Wiki 4']);
    await vi.waitFor(
      async () =>
        expect(
          await runInDurableObject(
            relayOf(account.id, 'EU'),
            (_: AccountDO, state) => state.storage.sql.exec<{ value: string }>("select value from relay_facts where key = 'presence'").one().value,
          ),
        ).toContain(String(gateway.init.payload.gateway_id)),
      { timeout: 1_000, interval: 20 },
    );
    eu.device.send({ event: 'create_flow', ref: 'f', payload: { resource_id: s.resource.id, connected_gateway_ids: [] } });
    expect((await gateway.device.next('authorize_flow')).payload).toMatchObject({ resource: { id: s.resource.id } });
    expect((await eu.device.next('flow_created')).payload).toMatchObject({ gateway_id: gateway.init.payload.gateway_id });
  });

  it('a writer that stored a batch but ended before its relays acknowledged it (its instance aborted mid-forward): the redelivery wakes it and the relay catches up, with no further batch', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    const before = await positionOf(writerOf(account.id));
    await stallRelays(account.id);
    const revoked = await account.commit((t) => t.softDelete('policies', { id: s.policy.id }));
    // The replicator's request: stored by the writer, never answered (the forward hangs).
    const unanswered = account.deliver(revoked).catch((err: unknown) => err);
    await vi.waitFor(async () => expect(await positionOf(writerOf(account.id))).not.toBe(before), { timeout: 2_000, interval: 10 });
    // The instance ends at once (a crash or a deploy), its forward unfinished.
    await runInDurableObject(writerOf(account.id), (_: AccountDO, state) => state.abort('ended mid-forward (test)')).catch(() => undefined);
    expect(await unanswered).toBeInstanceOf(Error);
    expect(await far.device.drain()).toEqual([]);
    // The replicator had no answer: it sends the batch again, which the writer has (all stale, nothing to forward).
    expect((await account.deliver(revoked)).applied).toBe(0);
    expect(await far.device.next('resource_deleted', 1_000)).toEqual({ event: 'resource_deleted', payload: { id: s.resource.id } });
    expect(await positionOf(relayOf(account.id, 'EU'))).toBe(await positionOf(writerOf(account.id)));
  });

  it('the largest change the replicator sends whole (old and new rows at FORWARD_MAX_ROW_BYTES, 3-byte characters) is logged for a relay that missed it, and reaches it', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    const [change] = await account.commit((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki, annotated' }));
    // A column the object does not read, sized so that each row's JSON is at the bound.
    const padded = (row: Record<string, unknown>) => {
      const bare = JSON.stringify({ ...row, notes: '' });
      return { ...row, notes: '€'.repeat(MAX_ROW_CHARS - bare.length) };
    };
    if (change?.op !== 'update') throw new Error(`expected an update, got ${change?.op}`);
    const big = { ...change, old: padded(change.old!), data: padded(change.data) };
    expect(JSON.stringify(big.data).length).toBe(MAX_ROW_CHARS);
    expect(new TextEncoder().encode(JSON.stringify(big)).byteLength).toBeGreaterThan(1_500_000);
    const restore = await cutRelays(account.id);
    expect((await account.deliver([big])).applied).toBe(1);
    const logged = await runInDurableObject(
      writerOf(account.id),
      (_: AccountDO, state) => state.storage.sql.exec<{ n: number }>('select count(*) as n from relay_changes').one().n,
    );
    expect(logged).toBe(1);
    await restore();
    const frame = await far.device.next('resource_created_or_updated', 5_000);
    expect(await far.device.drain()).toEqual([]);
    expect(frame).toMatchObject({ event: 'resource_created_or_updated', payload: { id: s.resource.id, name: 'Wiki, annotated' } });
    expect(await positionOf(relayOf(account.id, 'EU'))).toBe(await positionOf(writerOf(account.id)));
  });

  it("a relay whose position the writer's log no longer covers re-hydrates and converges", async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    const restore = await cutRelays(account.id);
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Lost from the log' }));
    await account.apply((t) => t.softDelete('policies', { id: s.policy.id }));
    await runInDurableObject(writerOf(account.id), (_: AccountDO, state) => void state.storage.sql.exec('delete from relay_batches'));
    await restore();
    await far.device.waitFor(() => far.device.frames.length >= 2, 'the relay re-hydrated', 15_000);
    // Whatever the path, the client ends with the writer's view: the resource is gone.
    const frames = await far.device.drain();
    expect(frames.at(-1)).toEqual({ event: 'resource_deleted', payload: { id: s.resource.id } });
    expect(await positionOf(relayOf(account.id, 'EU'))).toBe(await positionOf(writerOf(account.id)));
  });

  it('revocation reaches sockets on every relay: 4001 for a deleted token, 4003 for a disabled actor and a deleted site', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    let second = '';
    let siteToken = '';
    await account.apply(async (t) => {
      second = (await account.clientToken(t, s.actor.id)).token;
      siteToken = (await account.siteToken(t, s.site.id)).token;
    });
    const home = await connectFrom('local', 'client', s.token);
    const eu = await connectFrom('EU', 'client', s.token);
    const as = await connectFrom('AS', 'client', second);
    const gateway = await connectFrom('NA', 'gateway', siteToken);
    expect((await relaysOfWriter(account.id)).length).toBeGreaterThanOrEqual(3);
    await account.apply((t) => t.softDelete('tokens', { id: s.tokenRow.id }));
    expect(await home.device.waitClosed()).toMatchObject({ code: 4001 });
    expect(await eu.device.waitClosed()).toMatchObject({ code: 4001 });
    expect(as.device.closed).toBeUndefined();
    await account.apply((t) => t.update('actors', { id: s.actor.id }, { disabled_at: new Date() }));
    expect(await as.device.waitClosed()).toMatchObject({ code: 4003 });
    await account.apply((t) => t.softDelete('sites', { id: s.site.id }));
    expect(await gateway.device.waitClosed()).toMatchObject({ code: 4003 });
  });

  it('an object named as a relay but never adopted serves no one: a connect gets 503 and it does not hydrate as a writer; adoption under another name is refused', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const stray = relayOf(account.id, 'EU', 9);
    const res = await stray.fetch(websocketUrl('client', s.token), { headers: { upgrade: 'websocket' } });
    expect({ status: res.status, body: await res.json() }).toEqual({ status: 503, body: { error: 'relay unavailable, retry later' } });
    const held = await runInDurableObject(stray, (_: AccountDO, state) => state.storage.sql.exec<{ n: number }>("select count(*) as n from meta where key = 'account_id'").one().n);
    expect(held).toBe(0);
    const adopted = await stray.relayAdopt(account.id, relayName(account.id, 'EU', 8)).then(
      () => 'adopted',
      (err: Error) => err.message,
    );
    expect(adopted).toMatch(/cannot become relay/);
  });

  it('a relay serves no other account: connects, batches and adoption naming another account are refused', async () => {
    const a = await TestAccount.create(sql, 'alpha');
    const b = await TestAccount.create(sql, 'bravo');
    const sa = await basicSetup(a);
    const sb = await basicSetup(b);
    await connectFrom('local', 'client', sa.token);
    await connectFrom('EU', 'client', sa.token);
    const relay = relayOf(a.id, 'EU');
    const res = await relay.fetch(websocketUrl('client', sb.token), { headers: { upgrade: 'websocket' } });
    expect(res.status).toBe(401);
    const ack = await relay.relayBatch(b.id, relayName(b.id, 'EU', 0), { stream: 'x', after: null, position: '0/1:0', changes: [] });
    expect(ack.ok).toBe(false);
    const adopted = await relay.relayAdopt(b.id, relayName(b.id, 'EU', 0)).then(
      () => 'adopted',
      (err: Error) => err.message,
    );
    expect(adopted).toMatch(/cannot become relay/);
    // The writer of B answers no relay call naming A's relay.
    const joined = await writerOf(b.id)
      .relayJoin(a.id, relayName(a.id, 'EU', 0))
      .then(
        () => 'joined',
        (err: Error) => err.message,
      );
    expect(joined).toMatch(/not its writer/);
  });

  it("flows across relays: the client's relay decides, the gateway's relay authorizes, logs, and sends reject_access; a displaced flow is dropped by its owner", async () => {
    const { account, s, siteToken } = await withSiteToken();
    await connectFrom('local', 'client', s.token);
    const gateway = await connectFrom('NA', 'gateway', siteToken, { publicKey: 'gateway-key' });
    const client = await connectFrom('EU', 'client', s.token, { publicKey: 'client-key' });
    client.device.send({ event: 'create_flow', ref: 'x', payload: { resource_id: s.resource.id, connected_gateway_ids: [] } });
    const authorize = await gateway.device.next('authorize_flow');
    const created = await client.device.next('flow_created');
    expect(authorize.payload).toMatchObject({ client: { id: client.init.payload.client_id, public_key: 'client-key' }, resource: { id: s.resource.id } });
    expect(created.payload).toMatchObject({ gateway_id: gateway.init.payload.gateway_id, gateway_public_key: 'gateway-key', preshared_key: authorize.payload.preshared_key });
    expect(await client.device.next('reply')).toEqual({ event: 'reply', ref: 'x', payload: { status: 'ok', flow_id: authorize.payload.flow_id } });
    // Owned by the gateway's relay: it logs the flow to Postgres, and a reconnecting gateway's init lists it.
    const ownerFlows = () =>
      runInDurableObject(relayOf(account.id, 'NA'), (_: AccountDO, state) => state.storage.sql.exec<{ n: number }>('select count(*) as n from flows').one().n);
    expect(await ownerFlows()).toBe(1);
    for (let i = 0; i < 50 && (await sql`select 1 from flows where id = ${authorize.payload.flow_id as string}`).length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await sql`select gateway_id from flows where id = ${authorize.payload.flow_id as string}`).toEqual([{ gateway_id: gateway.init.payload.gateway_id }]);
    // A second create_flow for the pair replaces the first on the same gateway: the owner drops it, no reject_access (the pair still has a flow).
    client.device.send({ event: 'create_flow', payload: { resource_id: s.resource.id, connected_gateway_ids: [] } });
    const second = await gateway.device.next('authorize_flow');
    expect(second.payload.flow_id).not.toBe(authorize.payload.flow_id);
    expect(await ownerFlows()).toBe(1);
    // Revocation: the owner reviews its flows with the batch and sends reject_access once.
    await account.apply((t) => t.softDelete('policies', { id: s.policy.id }));
    expect((await gateway.device.drain()).filter((f) => f.event === 'reject_access')).toEqual([
      { event: 'reject_access', payload: { client_id: client.init.payload.client_id, resource_id: s.resource.id } },
    ]);
    expect(await ownerFlows()).toBe(0);
  });

  it('a relay that held no socket and no flow for RELAY_RETIRE_AFTER_MS retires: the writer forgets it, its storage is dropped, and the next device of its region adopts it anew, with the current state', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const home = await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    const name = relayName(account.id, 'EU', 0);
    const relay = relayOf(account.id, 'EU');
    far.device.close();
    await far.device.waitClosed();
    const since = await idleSince(relay);
    // Its alarm is set for the end of the idle period (no token or time window of this account comes sooner).
    expect(await runInDurableObject(relay, (_: AccountDO, state) => state.storage.getAlarm())).toBe(since + RETIRE_AFTER_MS);
    await idleLongEnough(relay, since);
    expect((await relaysOfWriter(account.id)).map((r) => r.name)).not.toContain(name);
    // Its instance resets once the alarm answered (a stub of the old one stays broken); the next one finds nothing stored.
    const stored = await vi.waitFor(
      () =>
        runInDurableObject(relayOf(account.id, 'EU'), async (_: AccountDO, state) => ({
          rows: ['relay_facts', 'meta', 'relay_peers'].map((t) => state.storage.sql.exec<{ n: number }>(`select count(*) as n from ${t}`).one().n),
          alarm: await state.storage.getAlarm(),
        })),
      { timeout: 1_000, interval: 20 },
    );
    expect(stored).toEqual({ rows: [0, 0, 0], alarm: null });
    // A change while it is retired reaches no relay of EU; the next EU device adopts the relay again, hydrated now.
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'While retired' }));
    expect((await home.device.next('resource_created_or_updated')).payload.name).toBe('While retired');
    const back = await connectFrom('EU', 'client', s.token);
    expect(back.init.payload.resources).toEqual([expect.objectContaining({ id: s.resource.id, name: 'While retired' })]);
    expect(await relaysOfWriter(account.id)).toContainEqual(expect.objectContaining({ name, sockets: 1 }));
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'After' }));
    expect((await back.device.next('resource_created_or_updated')).payload.name).toBe('After');
    expect(await positionOf(relayOf(account.id, 'EU'))).toBe(await positionOf(writerOf(account.id)));
    home.device.close();
    back.device.close();
  });

  it('a relay whose sockets a deploy closed unseen (no close event) learns from the next batch that it is idle', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const home = await connectFrom('local', 'client', s.token);
    const far = await connectFrom('EU', 'client', s.token);
    const relay = relayOf(account.id, 'EU');
    await evictDurableObject(relay, { webSockets: 'close' });
    await far.device.waitClosed();
    const idleFact = () =>
      runInDurableObject(relayOf(account.id, 'EU'), (_: AccountDO, state) => state.storage.sql.exec("select value from relay_facts where key = 'idle_since'").toArray());
    // Past the relay's report delay: no close reached it, so nothing says it is idle.
    await new Promise((r) => setTimeout(r, 1_200));
    expect(await idleFact()).toEqual([]);
    const before = Date.now();
    await account.apply((t) => t.update('resources', { id: s.resource.id }, { name: 'Wiki 2' }));
    await home.device.next('resource_created_or_updated');
    const since = await idleSince(relayOf(account.id, 'EU'));
    expect(since).toBeGreaterThanOrEqual(before);
    expect(await runInDurableObject(relayOf(account.id, 'EU'), (_: AccountDO, state) => state.storage.getAlarm())).toBe(since + RETIRE_AFTER_MS);
    home.device.close();
  });

  it("a relay that holds a gateway's flows does not retire while they live, nor one that holds a socket: it stays the writer's, idle again from then", async () => {
    const { account, s, siteToken, home, gateway } = await clientAndGateway();
    home.device.send({ event: 'create_flow', ref: 'f', payload: { resource_id: s.resource.id, connected_gateway_ids: [] } });
    await gateway.device.next('authorize_flow');
    const relay = relayOf(account.id, 'NA');
    gateway.device.close();
    await gateway.device.waitClosed();
    const since = await idleSince(relay);
    await idleLongEnough(relay, since);
    expect((await relaysOfWriter(account.id)).map((r) => r.name)).toContain(relayName(account.id, 'NA', 0));
    const after = await idleSince(relay);
    expect(after).toBeGreaterThan(since - RETIRE_AFTER_MS);
    expect(await runInDurableObject(relay, (_: AccountDO, state) => state.storage.sql.exec<{ n: number }>('select count(*) as n from flows').one().n)).toBe(1);
    // A socket again: not idle any more.
    const again = await connectFrom('NA', 'gateway', siteToken);
    expect(again.init.event).toBe('init');
    expect(await runInDurableObject(relay, (_: AccountDO, state) => state.storage.sql.exec("select value from relay_facts where key = 'idle_since'").toArray())).toEqual([]);
    home.device.close();
    again.device.close();
  });

  it('a gateway that left its relay is offline to clients on every other object', async () => {
    const { account, s, home, gateway } = await clientAndGateway();
    gateway.device.close();
    await gateway.device.waitClosed();
    for (let i = 0; i < 50; i++) {
      const online = await runInDurableObject(
        writerOf(account.id),
        (_: AccountDO, state) => state.storage.sql.exec<{ value: string }>("select value from relay_facts where key = 'presence'").one().value,
      );
      if (online === '[]') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    home.device.send({ event: 'create_flow', payload: { resource_id: s.resource.id, connected_gateway_ids: [] } });
    expect((await home.device.next('flow_creation_failed')).payload).toMatchObject({ reason: 'offline' });
  });

  it("a gateway listed on an object that no longer holds it (a deploy closes sockets unseen) is offline, and that object corrects the account's list", async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    let gateway: Record<string, unknown> = {};
    await account.apply(async (t) => {
      gateway = await t.insert('gateways', { account_id: account.id, site_id: s.site.id, external_id: 'gone', name: 'gw', public_key: 'pk', last_seen_version: '1.4.2' });
    });
    await connectFrom('local', 'client', s.token);
    await connectFrom('NA', 'client', s.token);
    const client = await connectFrom('EU', 'client', s.token);
    const holder = relayName(account.id, 'NA', 0);
    const id = String(gateway.id) as RemoteGateway['id'];
    const siteId = String(s.site.id) as RemoteGateway['siteId'];
    const entry: Omit<RemoteGateway, 'holder'> = { id, siteId, version: '1.4.2', record: { id, siteId, externalId: 'gone', name: 'gw', publicKey: 'pk', version: '1.4.2' } };
    // As the list stands after a deploy: the gateway was on NA's relay, and no close was seen.
    await writerOf(account.id).gatewayPresence(account.id, holder, entry, true);
    const presence = () =>
      runInDurableObject(
        writerOf(account.id),
        (_: AccountDO, state) => state.storage.sql.exec<{ value: string }>("select value from relay_facts where key = 'presence'").one().value,
      );
    expect(JSON.parse(await presence())).toHaveLength(1);
    client.device.send({ event: 'create_flow', payload: { resource_id: s.resource.id, connected_gateway_ids: [] } });
    expect((await client.device.next('flow_creation_failed')).payload).toMatchObject({ reason: 'offline' });
    expect(await presence()).toBe('[]');
  });
});
