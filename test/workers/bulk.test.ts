import { describe, expect, it } from 'vitest';
import type { Row } from '../../src/json.ts';
import { secretHash } from '../../src/tokens.ts';
import { databaseStats } from '../../workers/account/database.ts';
import { TestAccount } from './support/account.ts';
import { connect, type Device } from './support/device.ts';
import { database, randomText } from './support/world.ts';

const sql = database();
const ACTORS = 10_000;
const CONNECTED = 20;
const IN_BOTH = 5;

describe('bulk changes (docs/architecture.md#8-no-n1)', () => {
  it('applies 10k membership deletions in one batch: one message per socket and resource, no database query', async () => {
    const account = await TestAccount.create(sql);
    let g1: Row | undefined;
    let r1: Row | undefined;
    let r2: Row | undefined;
    const tokens: string[] = [];
    await account.commit(async (t) => {
      g1 = await account.group(t, { name: 'Everyone' });
      const g2 = await account.group(t, { name: 'Few' });
      const site = await account.site(t);
      r1 = await account.resource(t, { name: 'R1' });
      r2 = await account.resource(t, { name: 'R2', address: 'r2.example.com' });
      await account.connection(t, r1.id, site.id);
      await account.connection(t, r2.id, site.id);
      await account.policy(t, g1.id, r1.id);
      await account.policy(t, g1.id, r2.id);
      await account.policy(t, g2.id, r1.id);
      const actors = await t.insertMany(
        'actors',
        Array.from({ length: ACTORS }, (_, i) => ({ account_id: account.id, name: `A${i}`, type: 'account_user' })),
      );
      await t.insertMany(
        'actor_group_memberships',
        actors.map((a) => ({ account_id: account.id, actor_id: a.id, group_id: g1!.id })),
      );
      await t.insertMany(
        'actor_group_memberships',
        actors.slice(0, IN_BOTH).map((a) => ({ account_id: account.id, actor_id: a.id, group_id: g2.id })),
      );
      for (const a of actors.slice(0, CONNECTED)) {
        const secret = randomText(24);
        const salt = randomText(8);
        const row = await t.insert('tokens', { account_id: account.id, type: 'client', actor_id: a.id, secret_salt: salt, secret_hash: await secretHash(salt, secret) });
        tokens.push(`${account.id}.${row.id as string}.${secret}`);
      }
    });
    const devices: Device[] = [];
    const clientsAtStart = databaseStats.clients;
    for (const token of tokens) {
      const { device, init } = await connect('client', token);
      expect((init.payload.resources as unknown[]).length).toBe(2);
      devices.push(device);
    }
    // The counter sees the object's clients: each connect upserted its client through one.
    expect(databaseStats.clients - clientsAtStart).toBeGreaterThanOrEqual(CONNECTED);
    const changes = await account.commit((t) => t.delete('actor_group_memberships', { group_id: g1!.id }));
    expect(changes).toHaveLength(ACTORS);
    const clientsBefore = databaseStats.clients;
    expect(await account.deliver(changes)).toMatchObject({ applied: ACTORS, skipped: 0 });
    expect(databaseStats.clients).toBe(clientsBefore);
    for (const [i, device] of devices.entries()) {
      const frames = await device.drain();
      const got = frames.map((f) => `${f.event} ${String(f.payload.id)}`).sort();
      const lost = i < IN_BOTH ? [r2!.id] : [r1!.id, r2!.id];
      expect(got, `client ${i}`).toEqual(lost.map((id) => `resource_deleted ${String(id)}`).sort());
    }
  });
});
