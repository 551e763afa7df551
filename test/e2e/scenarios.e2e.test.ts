import { describe, expect, it } from 'vitest';
import { expectConverged } from '../support/e2e-convergence.ts';
import { ConnectRefused, type Device, type Frame } from '../support/e2e-device.ts';
import { useStack } from '../support/e2e-stack.ts';
import { createAccount, type WorldAccount } from '../support/e2e-world.ts';

/**
 * The seed's scenarios through the whole system: a change committed in Postgres, decoded by the
 * replicator (a child process), posted to the real Worker (the local Worker of `npm start`), applied by the
 * account's object and pushed to WebSocket devices. After each, every client's replayed view must
 * equal what docs/protocol.md#access-rule computes from the database.
 */
const e2e = useStack({ tail: 60 });

async function client(account: WorldAccount): Promise<Device> {
  const d = e2e.stack.device('client', account.clientToken);
  await d.connect();
  return d;
}

async function gateway(account: WorldAccount): Promise<Device> {
  const d = e2e.stack.device('gateway', account.siteToken);
  await d.connect();
  return d;
}

/** What a user expects between revoking a token and the device being told, through the whole stack. */
const REVOCATION_MS = 500;

/** The device's close frame, with its code, within REVOCATION_MS of `since` (the commit). */
async function closedWithin(d: Device, since: number, code: number): Promise<void> {
  const frame = await d.waitCloseFrame(REVOCATION_MS);
  expect(frame.code).toBe(code);
  expect(frame.at - since).toBeLessThanOrEqual(REVOCATION_MS);
}

const ids = (resources: readonly { id: string }[]) => resources.map((r) => r.id).sort();
const viewIds = (d: Device) => [...d.view.keys()].sort();

async function flow(c: Device, g: Device, resourceId: string): Promise<{ created: Frame; authorized: Frame }> {
  c.send({ event: 'create_flow', ref: `flow-${resourceId}`, payload: { resource_id: resourceId, connected_gateway_ids: [] } });
  const created = await c.next('flow_created');
  const authorized = await g.next('authorize_flow');
  return { created, authorized };
}

describe('end to end', () => {
  it('init: a client gets exactly the resources its policies grant', async () => {
    const a = await createAccount(e2e.stack.db.sql, { resources: 3, unreachable: 2 });
    const c = await client(a);
    expect(c.init!.payload.actor_id).toBe(a.actorId);
    expect(ids(c.init!.payload.resources as { id: string }[])).toEqual(ids(a.resources));
    await expectConverged(e2e.stack.db.sql, [c]);
  });

  it('policy deleted, restored, disabled, enabled, hard-deleted', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 3 });
    const c = await client(a);
    const [r0, r1] = a.resources;

    await sql`update policies set deleted_at = now() where id = ${r0!.policyId}`;
    expect((await c.next('resource_deleted')).payload).toEqual({ id: r0!.id });
    await expectConverged(sql, [c]);

    await sql`update policies set deleted_at = null where id = ${r0!.policyId}`;
    expect((await c.next('resource_created_or_updated')).payload.id).toBe(r0!.id);
    await expectConverged(sql, [c]);

    await sql`update policies set disabled_at = now() where id = ${r0!.policyId}`;
    expect((await c.next('resource_deleted')).payload).toEqual({ id: r0!.id });
    await expectConverged(sql, [c]);

    await sql`update policies set disabled_at = null where id = ${r0!.policyId}`;
    expect((await c.next('resource_created_or_updated')).payload.id).toBe(r0!.id);
    await expectConverged(sql, [c]);

    await sql`delete from policies where id = ${r1!.policyId}`;
    expect((await c.next('resource_deleted')).payload).toEqual({ id: r1!.id });
    await expectConverged(sql, [c]);
    expect(viewIds(c)).toEqual(ids(a.resources.filter((r) => r !== r1)));
  });

  it('membership removed and added back', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 3 });
    const c = await client(a);
    await sql`delete from actor_group_memberships where actor_id = ${a.actorId}`;
    const gone = [await c.next('resource_deleted'), await c.next('resource_deleted'), await c.next('resource_deleted')];
    expect(gone.map((f) => String(f.payload.id)).sort()).toEqual(ids(a.resources));
    await expectConverged(sql, [c]);
    expect(c.view.size).toBe(0);

    await sql`insert into actor_group_memberships (account_id, actor_id, group_id) values (${a.id}, ${a.actorId}, ${a.groupId})`;
    await expectConverged(sql, [c]);
    expect(viewIds(c)).toEqual(ids(a.resources));
  });

  it('resource soft-deleted, renamed, restored', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 2 });
    const c = await client(a);
    const r0 = a.resources[0]!;
    await sql`update resources set deleted_at = now() where id = ${r0.id}`;
    expect((await c.next('resource_deleted')).payload).toEqual({ id: r0.id });
    await expectConverged(sql, [c]);

    await sql`update resources set name = 'renamed while deleted', deleted_at = null where id = ${r0.id}`;
    const back = await c.next('resource_created_or_updated');
    expect(back.payload).toMatchObject({ id: r0.id, name: 'renamed while deleted' });
    await expectConverged(sql, [c]);
  });

  it('policy moved R1 -> R2 -> R1 quickly (and again, 20 times)', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1, unreachable: 1 });
    const r1 = a.resources[0]!;
    const r2 = a.extra[0]!;
    const c = await client(a);
    expect(viewIds(c)).toEqual([r1.id]);
    for (let i = 0; i < 20; i++) {
      await sql`update policies set resource_id = ${r2.id} where id = ${r1.policyId}`;
      await sql`update policies set resource_id = ${r1.id} where id = ${r1.policyId}`;
    }
    await expectConverged(sql, [c]);
    expect(viewIds(c)).toEqual([r1.id]);
    // A move that stays: R2 only.
    await sql`update policies set resource_id = ${r2.id} where id = ${r1.policyId}`;
    await expectConverged(sql, [c]);
    expect(viewIds(c)).toEqual([r2.id]);
  });

  it('token revoked: the close frame (4001) arrives within 500 ms of the commit, and the token no longer connects', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1 });
    const c = await client(a);
    const g = await gateway(a);
    await sql`update tokens set deleted_at = now() where id = ${a.clientTokenId}`;
    // Through the whole stack: WAL, replicator, Worker, object, socket.
    await closedWithin(c, Date.now(), 4001);
    expect(c.closeFrame?.reason).toBe('token deleted or expired');
    // The gateway's token is another one: it stays.
    expect(g.open).toBe(true);
    const again = e2e.stack.device('client', a.clientToken);
    const refused = await again.connect().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConnectRefused);
    expect((refused as ConnectRefused).status).toBe(401);

    await sql`update tokens set deleted_at = now() where account_id = ${a.id} and type = 'site'`;
    await closedWithin(g, Date.now(), 4001);
  });

  it('gateway flow: authorized, then rejected when the policy goes', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 2 });
    const g = await gateway(a);
    expect(g.init!.payload).toMatchObject({ site_id: a.siteId, flows: [] });
    const c = await client(a);
    const r0 = a.resources[0]!;
    const { created, authorized } = await flow(c, g, r0.id);
    expect(created.payload).toMatchObject({ resource_id: r0.id, gateway_id: g.id, site_id: a.siteId, gateway_public_key: g.publicKey });
    expect(authorized.payload).toMatchObject({ client: { id: c.id, public_key: c.publicKey, version: '1.4.2' }, resource: { id: r0.id } });
    expect(authorized.payload.preshared_key).toBe(created.payload.preshared_key);
    expect(await c.next((f) => f.event === 'reply')).toMatchObject({ payload: { status: 'ok' } });

    await sql`update policies set disabled_at = now() where id = ${r0.policyId}`;
    expect((await g.next('reject_access')).payload).toEqual({ client_id: c.id, resource_id: r0.id });
    expect((await c.next('resource_deleted')).payload).toEqual({ id: r0.id });
    await expectConverged(sql, [c]);

    // A flow to a resource the client no longer sees is refused.
    c.send({ event: 'create_flow', payload: { resource_id: r0.id, connected_gateway_ids: [] } });
    expect((await c.next('flow_creation_failed')).payload).toMatchObject({ resource_id: r0.id, reason: 'not_found' });
  });

  it('an authorized flow is appended to the flows audit log in Postgres', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1 });
    const g = await gateway(a);
    const c = await client(a);
    const { authorized } = await flow(c, g, a.resources[0]!.id);
    const flowId = String(authorized.payload.flow_id);
    const deadline = Date.now() + 15_000;
    let rows: { client_id: string; gateway_id: string; resource_id: string; policy_id: string }[] = [];
    while (Date.now() < deadline) {
      rows = await sql`select client_id::text, gateway_id::text, resource_id::text, policy_id::text from flows where id = ${flowId}`;
      if (rows.length > 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(rows).toEqual([{ client_id: c.id, gateway_id: g.id, resource_id: a.resources[0]!.id, policy_id: a.resources[0]!.policyId }]);
  });

  it('breaking address change: clients get the new address, live flows are rejected', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1 });
    const r0 = a.resources[0]!;
    const g = await gateway(a);
    const c = await client(a);
    await flow(c, g, r0.id);
    await sql`update resources set address = 'moved.example.internal' where id = ${r0.id}`;
    const updated = await c.next('resource_created_or_updated');
    expect(updated.payload).toMatchObject({ id: r0.id, address: 'moved.example.internal' });
    expect((await g.next('reject_access')).payload).toEqual({ client_id: c.id, resource_id: r0.id });
    await expectConverged(sql, [c]);
    // A new flow carries the new address to the gateway.
    const again = await flow(c, g, r0.id);
    expect(again.authorized.payload.resource).toMatchObject({ id: r0.id, address: 'moved.example.internal' });
  });

  it("group deleted, connection removed, site deleted: resources go, the site's gateways are closed with 4003", async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 3 });
    const c = await client(a);
    const g = await gateway(a);
    const [r0, r1] = a.resources;
    await sql`delete from resource_connections where resource_id = ${r0!.id}`;
    expect((await c.next('resource_deleted')).payload).toEqual({ id: r0!.id });
    await expectConverged(sql, [c]);

    // A second group grants r1 too: deleting the first group leaves r1, takes the rest.
    const [g2] = await sql<{ id: string }[]>`insert into actor_groups (account_id, name) values (${a.id}, 'second') returning id::text`;
    await sql`insert into actor_group_memberships (account_id, actor_id, group_id) values (${a.id}, ${a.actorId}, ${g2!.id})`;
    await sql`insert into policies (account_id, actor_group_id, resource_id) values (${a.id}, ${g2!.id}, ${r1!.id})`;
    await sql`update actor_groups set deleted_at = now() where id = ${a.groupId}`;
    await expectConverged(sql, [c]);
    expect(viewIds(c)).toEqual([r1!.id]);

    await sql`update sites set deleted_at = now() where id = ${a.siteId}`;
    await closedWithin(g, Date.now(), 4003);
    await expectConverged(sql, [c]);
    expect(c.view.size).toBe(0);
    expect(c.open).toBe(true);
  });

  it('actor disabled, account disabled: sockets closed with 4003, and refused while so', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1 });
    const c = await client(a);
    await sql`update actors set disabled_at = now() where id = ${a.actorId}`;
    await closedWithin(c, Date.now(), 4003);
    const again = e2e.stack.device('client', a.clientToken);
    const refused = await again.connect().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((refused as ConnectRefused).status).toBe(401);
    await sql`update actors set disabled_at = null where id = ${a.actorId}`;
    // The object learns of it through the replicator: connect once it has.
    const back = e2e.stack.device('client', a.clientToken);
    for (const deadline = Date.now() + 15_000; ; ) {
      try {
        await back.connect();
        break;
      } catch (err) {
        if (!(err instanceof ConnectRefused) || err.status !== 401 || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await expectConverged(sql, [back]);

    const g = await gateway(a);
    await sql`update accounts set disabled_at = now() where id = ${a.id}`;
    const disabled = Date.now();
    await closedWithin(back, disabled, 4003);
    await closedWithin(g, disabled, 4003);
  });

  it('two accounts are isolated', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 2, label: 'iso-a' });
    const b = await createAccount(sql, { resources: 2, label: 'iso-b' });
    const ca = await client(a);
    const cb = await client(b);
    ca.skip();
    await sql`update resources set name = name || ' (b changed)' where account_id = ${b.id}`;
    await sql`update policies set disabled_at = now() where account_id = ${b.id} and resource_id = ${b.resources[0]!.id}`;
    await expectConverged(sql, [ca, cb]);
    expect(cb.view.size).toBe(1);
    expect([...cb.view.values()][0]!.name).toContain('(b changed)');
    // Nothing of B reached A's client, not even a frame.
    expect(await ca.quiet(500)).toEqual([]);
    expect(viewIds(ca)).toEqual(ids(a.resources));
    // A's token presented as B's: refused (the object of B does not know it).
    const [, tokenId, secret] = a.clientToken.split('.');
    const crossed = e2e.stack.device('client', `${b.id}.${tokenId}.${secret}`);
    const refused = await crossed.connect().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((refused as ConnectRefused).status).toBe(401);
  });
});
