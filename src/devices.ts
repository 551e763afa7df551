import type { AccountState } from './access/account-state.ts';
import type { AccountId, ActorId, SiteId } from './ids.ts';
import type { Cached, ClientRecord, GatewayRecord } from './records.ts';

/** What a connecting device presents besides its token (docs/protocol.md#websocket-routes). */
export interface DeviceInfo {
  externalId: string;
  name: string;
  publicKey: string;
  version: string;
}

/**
 * The key a device is upserted by, (actor_id, external_id) for a client and (site_id,
 * external_id) for a gateway, as one string. The owner is a uuid of fixed length, so no two keys
 * collide whatever the external id holds.
 */
export function deviceKey(ownerId: ActorId | SiteId, externalId: string): string {
  return `${ownerId}${externalId}`;
}

/**
 * The cached record of a connecting device whose upsert would change nothing the cache holds:
 * same key, name, public key and version, and live (the cache holds no deleted device, whose
 * upsert would restore it). Undefined when the device must be written. Whatever Postgres changed
 * since the cache's position reaches the object as a change and applies as usual.
 */
export function unchangedDevice(state: AccountState, kind: 'client' | 'gateway', ownerId: ActorId | SiteId, device: DeviceInfo): Cached | undefined {
  const key = deviceKey(ownerId, device.externalId);
  const same = (r: ClientRecord | GatewayRecord) => r.name === device.name && r.publicKey === device.publicKey && r.version === device.version;
  if (kind === 'client') {
    const id = state.clientsByKey.get(key);
    const record = id && state.clients.get(id);
    return record && same(record) ? { table: 'clients', record } : undefined;
  }
  const id = state.gatewaysByKey.get(key);
  const record = id && state.gateways.get(id);
  return record && same(record) ? { table: 'gateways', record } : undefined;
}

/** One device to upsert: its account, its owner (the actor of a client, the site of a gateway) and what it presented. */
export interface DeviceWrite {
  accountId: AccountId;
  ownerId: ActorId | SiteId;
  device: DeviceInfo;
}

/**
 * The rows of one multi-row upsert for `writes`: one per key (Postgres refuses an `ON CONFLICT DO
 * UPDATE` that touches a row twice), with the values of the key's last write, as if the writes
 * had run one after the other; `rowOf[i]` is the row of `writes[i]`.
 */
export function coalesceWrites(writes: readonly DeviceWrite[]): { rows: DeviceWrite[]; rowOf: number[] } {
  const index = new Map<string, number>();
  const rows: DeviceWrite[] = [];
  const rowOf = writes.map((w) => {
    const key = deviceKey(w.ownerId, w.device.externalId);
    const at = index.get(key);
    if (at !== undefined) {
      rows[at] = w;
      return at;
    }
    index.set(key, rows.length);
    rows.push(w);
    return rows.length - 1;
  });
  return { rows, rowOf };
}

/**
 * Whether Postgres refused a multi-row statement for one of its rows (a data exception, a
 * constraint, a trigger's RAISE: SQLSTATE classes 22, 23 and P0) rather than for the connection
 * or the server: then each row is tried alone, so that one device cannot fail the others it was
 * batched with.
 */
export function refusedForARow(sqlstate: string | undefined): boolean {
  return sqlstate !== undefined && ['22', '23', 'P0'].includes(sqlstate.slice(0, 2));
}
