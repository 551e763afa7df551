import { describe, expect, it } from 'vitest';
import { coalesceWrites, refusedForARow, unchangedDevice, type DeviceWrite } from '../../src/devices.ts';
import type { AccountId, ActorId, SiteId } from '../../src/ids.ts';
import { insert, remove, rows, stateOf, update, uuid } from './support/builder.ts';

function world() {
  const account = uuid();
  const actor = rows.actor(account);
  const site = rows.site(account);
  const client = rows.client(account, actor.id, { external_id: 'laptop', name: 'Laptop', public_key: 'k1', last_seen_version: '1.4.2' });
  const gateway = rows.gateway(account, site.id, { external_id: 'gw-1', name: 'GW', public_key: 'g1', last_seen_version: '1.4.2' });
  const base = [insert('actors', actor), insert('sites', site), insert('clients', client), insert('gateways', gateway)];
  return { account, actor: actor.id as ActorId, site: site.id as SiteId, client, gateway, base };
}

const laptop = { externalId: 'laptop', name: 'Laptop', publicKey: 'k1', version: '1.4.2' };
const gw = { externalId: 'gw-1', name: 'GW', publicKey: 'g1', version: '1.4.2' };

describe('what a connect writes (docs/architecture.md#a-device-connects)', () => {
  it('finds a known, unchanged device by its key; any change of name, key or version, another owner or a deleted one needs a write', () => {
    const w = world();
    const state = stateOf(w.account, w.base);
    expect(unchangedDevice(state, 'client', w.actor, laptop)).toEqual({ table: 'clients', record: expect.objectContaining({ id: w.client.id, externalId: 'laptop' }) });
    expect(unchangedDevice(state, 'gateway', w.site, gw)).toEqual({ table: 'gateways', record: expect.objectContaining({ id: w.gateway.id, externalId: 'gw-1' }) });
    for (const changed of [{ name: 'Laptop 2' }, { publicKey: 'k2' }, { version: '1.4.3' }, { externalId: 'phone' }]) {
      expect(unchangedDevice(state, 'client', w.actor, { ...laptop, ...changed }), JSON.stringify(changed)).toBeUndefined();
      expect(unchangedDevice(state, 'gateway', w.site, { ...gw, ...changed }), JSON.stringify(changed)).toBeUndefined();
    }
    expect(unchangedDevice(state, 'client', uuid() as ActorId, laptop)).toBeUndefined();
    // The client kind does not find a gateway of the same external id, nor the other way round.
    expect(unchangedDevice(state, 'gateway', w.actor as unknown as SiteId, laptop)).toBeUndefined();
    const deleted = stateOf(w.account, [...w.base, update('clients', w.client, { deleted_at: '2026-11-22T21:00:00.000000Z' }), remove('gateways', w.gateway)]);
    expect(unchangedDevice(deleted, 'client', w.actor, laptop)).toBeUndefined();
    expect(unchangedDevice(deleted, 'gateway', w.site, gw)).toBeUndefined();
  });

  it('follows a change of a device’s key: the old key is free, the new one found', () => {
    const w = world();
    const state = stateOf(w.account, [...w.base, update('clients', w.client, { external_id: 'laptop-2' })]);
    expect(unchangedDevice(state, 'client', w.actor, laptop)).toBeUndefined();
    expect(unchangedDevice(state, 'client', w.actor, { ...laptop, externalId: 'laptop-2' })?.record).toMatchObject({ id: w.client.id });
  });

  it('coalesces writes of one key into one row with the last values, and maps every write to its row', () => {
    const account = uuid() as AccountId;
    const a = uuid() as ActorId;
    const b = uuid() as ActorId;
    const write = (ownerId: ActorId, externalId: string, name: string): DeviceWrite => ({
      accountId: account,
      ownerId,
      device: { externalId, name, publicKey: 'k', version: '1.4.2' },
    });
    const { rows: out, rowOf } = coalesceWrites([write(a, 'x', 'first'), write(b, 'x', 'other owner'), write(a, 'x', 'last'), write(a, 'y', 'y')]);
    expect(out.map((w) => `${w.ownerId === a ? 'a' : 'b'}/${w.device.externalId}/${w.device.name}`)).toEqual(['a/x/last', 'b/x/other owner', 'a/y/y']);
    expect(rowOf).toEqual([0, 1, 0, 2]);
  });

  it('retries row by row only when Postgres refused a row, not the connection or the server', () => {
    for (const code of ['22001', '23505', '23514', 'P0001']) expect(refusedForARow(code), code).toBe(true);
    for (const code of [undefined, '08006', '53300', '57P01', '40001', '42P01']) expect(refusedForARow(code), String(code)).toBe(false);
  });
});
