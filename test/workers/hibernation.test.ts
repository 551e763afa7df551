import { env, evictDurableObject, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { AccountDO } from '../../workers/account/account-do.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect } from './support/device.ts';
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
});
