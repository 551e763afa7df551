import { describe, expect, it } from 'vitest';
import { TestAccount, basicSetup } from './support/account.ts';
import { connect } from './support/device.ts';
import { database } from './support/world.ts';

const sql = database();

describe('smoke', () => {
  it('connects a client, sends init, and pushes a policy deletion', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const { device, init } = await connect('client', s.token);
    expect((init.payload.resources as { id: string }[]).map((r) => r.id)).toEqual([s.resource.id]);
    await account.apply((t) => t.softDelete('policies', { id: s.policy.id }));
    const f = await device.next();
    expect(f).toEqual({ event: 'resource_deleted', payload: { id: s.resource.id } });
    device.close();
  });
});
