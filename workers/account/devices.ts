import type { ActorId, SiteId } from '../../src/ids.ts';
import type { Row } from '../../src/json.ts';
import type { AccountId } from '../../src/ids.ts';
import { withDatabase } from './database.ts';

export interface DeviceInfo {
  externalId: string;
  name: string;
  publicKey: string;
  version: string;
}

/**
 * Upserts the connecting client by (actor_id, external_id) and returns its row. A client that
 * was deleted comes back unverified: verification belonged to the deleted one.
 */
export async function upsertClient(binding: Hyperdrive, accountId: AccountId, actorId: ActorId, device: DeviceInfo): Promise<Row> {
  return await withDatabase(binding, 'upserting a client', async (sql) => {
    const [r] = await sql<{ row: Row }[]>`
      insert into clients as c (account_id, actor_id, external_id, name, public_key, last_seen_version)
      values (${accountId}, ${actorId}, ${device.externalId}, ${device.name}, ${device.publicKey}, ${device.version})
      on conflict (actor_id, external_id) do update set
        name = excluded.name, public_key = excluded.public_key, last_seen_version = excluded.last_seen_version,
        verified_at = case when c.deleted_at is null then c.verified_at end, deleted_at = null, updated_at = now()
      returning to_jsonb(c) as row`;
    return r!.row;
  });
}

/** Upserts the connecting gateway by (site_id, external_id) and returns its row. */
export async function upsertGateway(binding: Hyperdrive, accountId: AccountId, siteId: SiteId, device: DeviceInfo): Promise<Row> {
  return await withDatabase(binding, 'upserting a gateway', async (sql) => {
    const [r] = await sql<{ row: Row }[]>`
      insert into gateways as g (account_id, site_id, external_id, name, public_key, last_seen_version)
      values (${accountId}, ${siteId}, ${device.externalId}, ${device.name}, ${device.publicKey}, ${device.version})
      on conflict (site_id, external_id) do update set
        name = excluded.name, public_key = excluded.public_key, last_seen_version = excluded.last_seen_version,
        deleted_at = null, updated_at = now()
      returning to_jsonb(g) as row`;
    return r!.row;
  });
}
