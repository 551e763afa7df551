import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { AccountDO } from '../../workers/account/account-do.ts';
import type { ObjectContext } from '../../workers/account/object-context.ts';
import { connect } from './support/device.ts';
import { authorized, flowWorld, sql } from './support/flows.ts';
import { holderOf } from './support/relays.ts';

type Stub = DurableObjectStub<AccountDO>;

/**
 * The one fault injected: the push's digest writes fail (as a full disk would) the next `times`
 * times (Infinity: every time), on this instance only, after the push did its work in memory; the
 * storage transaction rolls back around it. Everything else is the real object. `at`: when the
 * last one failed (the object's clock).
 */
async function failPushes(stub: Stub, times: number): Promise<{ failed: number; at: number }> {
  const seen = { failed: 0, at: 0 };
  await runInDurableObject(stub, (instance: AccountDO) => {
    const views = (instance as unknown as { object: ObjectContext }).object.views as unknown as { flush: (pending: unknown) => void };
    const flush = views.flush.bind(views);
    views.flush = (pending) => {
      if (seen.failed >= times) return flush(pending);
      seen.failed++;
      seen.at = Date.now();
      throw new Error('injected: SQLITE_FULL while writing view digests');
    };
  });
  return seen;
}

/** A client and a gateway with a live flow on each of two resources, and a second client under its own token. */
async function world() {
  const w = await flowWorld();
  let r2 = '';
  let second = '';
  await w.account.apply(async (t) => {
    const r = await w.account.resource(t, { name: 'Git', address: 'git.example.com' });
    await w.account.connection(t, r.id, w.s.site.id);
    await w.account.policy(t, w.s.group.id, r.id);
    r2 = r.id as string;
    second = (await w.account.clientToken(t, w.s.actor.id)).token;
  });
  await w.client.drain();
  await authorized(w, w.s.resource.id);
  await authorized(w, r2);
  await w.client.drain();
  const other = (await connect('client', second)).device;
  const stub = holderOf(w.account.id) as Stub;
  // One batch: R1's filters change (resource_updated), R2's address (its flow rejected), the second client's token goes (4001).
  const changes = await w.account.commit(async (t) => {
    await t.update('resources', { id: w.s.resource.id }, { filters: t.tx.json([{ protocol: 'udp', ports: ['53'] }]) });
    await t.update('resources', { id: r2 }, { address: 'moved.example.com' });
    await t.softDelete('tokens', { id: second.split('.')[1] });
  });
  return { w, r2, other, stub, changes };
}

const pendingResync = (stub: Stub) => runInDurableObject(stub, (instance: AccountDO) => (instance as unknown as { object: ObjectContext }).object.meta.resync);

describe('a push that fails after its batch was stored (docs/architecture.md#the-path-of-a-change)', () => {
  it('keeps the batch applied, and the devices still get exactly its frames, at once', async () => {
    const { w, r2, other, stub, changes } = await world();
    const injected = await failPushes(stub, 1);
    const answer = await w.account.deliver(changes);
    const delivered = Date.now();
    expect(injected.failed).toBe(1);
    // Stored: the replicator must not resend it (it would be skipped as stale).
    expect(answer).toMatchObject({ applied: changes.length, skipped: 0 });
    const updated = [await w.client.next('resource_created_or_updated', 1000), await w.client.next('resource_created_or_updated', 1000)];
    // The alarm was set at once: the frames follow the answer by milliseconds.
    expect(Date.now() - delivered).toBeLessThan(100);
    expect(updated.map((f) => f.payload.id).sort()).toEqual([w.s.resource.id, r2].sort());
    expect(await other.waitClosed(1000)).toEqual({ code: 4001, reason: 'token deleted or expired' });
    expect(await w.client.drain()).toEqual([]);
    const gateway = await w.gateway.drain();
    expect(gateway).toHaveLength(2);
    expect(gateway).toContainEqual({ event: 'reject_access', payload: { client_id: w.clientId, resource_id: r2 } });
    expect(gateway.find((f) => f.event === 'resource_updated')?.payload).toMatchObject({ id: w.s.resource.id, filters: [{ protocol: 'udp', ports: ['53'] }] });
    expect(await pendingResync(stub)).toBeNull();
    // The replayed batch is stale and changes nothing.
    expect(await w.account.deliver(changes)).toMatchObject({ applied: 0, skipped: changes.length });
    expect([...(await w.client.drain()), ...(await w.gateway.drain())]).toEqual([]);
    // The flow log holds both flows; the live flows are R1's only.
    const reconnected = await connect('gateway', w.siteToken, {
      externalId: (await sql`select external_id from gateways where id = ${w.gatewayInit.payload.gateway_id as string}`)[0]!.external_id as string,
    });
    expect((reconnected.init.payload.flows as { resource_id: string }[]).map((f) => f.resource_id)).toEqual([w.s.resource.id]);
  });

  it('survives the instance: a resync left pending is redone by the alarm of the next instance', async () => {
    const { w, r2, other, stub, changes } = await world();
    // Every push of this instance fails: the batch's, the alarm's retry at once, and the retries
    // after it with backoff. Only the next instance can redo the push.
    const injected = await failPushes(stub, Number.POSITIVE_INFINITY);
    await w.account.deliver(changes);
    for (const deadline = Date.now() + 2000; injected.failed < 2; ) {
      if (Date.now() > deadline) throw new Error('the alarm did not retry the push');
      await new Promise((r) => setTimeout(r, 10));
    }
    // Read at once in the object (no alarm runs meanwhile): what is pending, and the retry the last
    // failure set. That retry is then held back, so that it does not fire by itself (on this
    // instance or the next) before the test runs it below.
    const { resync, failed, failedAt, retryAt } = await runInDurableObject(stub, async (instance: AccountDO, state) => {
      const read = {
        resync: (instance as unknown as { object: ObjectContext }).object.meta.resync,
        failed: injected.failed,
        failedAt: injected.at,
        retryAt: await state.storage.getAlarm(),
      };
      await state.storage.setAlarm(Date.now() + 3_600_000);
      return read;
    });
    expect(resync).toEqual({ breaking: [r2], reshaped: [w.s.resource.id] });
    // From the second failure on, the retry waits with backoff: 1 s, longer after later failures.
    expect(failed).toBeGreaterThanOrEqual(2);
    expect(retryAt).not.toBeNull();
    expect(retryAt! - failedAt).toBeGreaterThanOrEqual(1000);
    expect(await w.client.drain()).toEqual([]);
    await evictDurableObject(stub, { webSockets: 'hibernate' });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const client = await w.client.drain();
    expect(client.map((f) => [f.event, f.payload.id]).sort()).toEqual(
      [
        ['resource_created_or_updated', w.s.resource.id],
        ['resource_created_or_updated', r2],
      ].sort(),
    );
    const gateway = await w.gateway.drain();
    expect(gateway.map((f) => f.event).sort()).toEqual(['reject_access', 'resource_updated']);
    expect(await other.waitClosed(1000)).toMatchObject({ code: 4001 });
    expect(await pendingResync(stub)).toBeNull();
  });
});
