import type { TableName } from '../../src/tables.ts';
import type { Delivery } from './delivery.ts';

/**
 * Marks a row sent without its values because it is larger than an account's object takes
 * (docs/protocol.md#change-format): only the columns that say which record it is stay, so the
 * object drops that record (fail closed) instead of refusing the batch for good. change_logs keeps
 * the whole row.
 */
export const OVERSIZED_ROW = '_edgeplane_oversized';

const KEYS: Record<TableName, readonly string[]> = {
  accounts: ['id'],
  actors: ['id', 'account_id'],
  actor_groups: ['id', 'account_id'],
  actor_group_memberships: ['id', 'account_id', 'actor_id', 'group_id'],
  sites: ['id', 'account_id'],
  gateways: ['id', 'account_id', 'site_id'],
  resources: ['id', 'account_id'],
  resource_connections: ['account_id', 'resource_id', 'site_id'],
  policies: ['id', 'account_id', 'actor_group_id', 'resource_id'],
  clients: ['id', 'account_id', 'actor_id'],
  tokens: ['id', 'account_id', 'type', 'actor_id', 'site_id'],
};

function rowText(table: TableName, json: string | null, maxRowBytes: number): string {
  if (json === null) return 'null';
  if (json.length <= maxRowBytes) return json;
  // Rare and bounded by the row itself: parsing it once is cheaper than a permanent refusal.
  const row = JSON.parse(json) as Record<string, unknown>;
  const stub: Record<string, unknown> = { [OVERSIZED_ROW]: true };
  for (const key of KEYS[table]) if (key in row) stub[key] = row[key];
  return JSON.stringify(stub);
}

/** A Change as docs/protocol.md#change-format has it, from the pre-serialized rows. */
export function changeJson(d: Delivery, maxRowBytes: number): string {
  const old = rowText(d.table, d.oldJson, maxRowBytes);
  const data = rowText(d.table, d.dataJson, maxRowBytes);
  return `{"lsn":"${d.lsn}","seq":${d.position.seq},"xid":${d.xid},"table":"${d.table}","op":"${d.op}","old":${old},"data":${data},"committed_at":"${d.committedAt}"}`;
}

/** The body of POST /v1/accounts/:id/changes: the changes in position order and the stream's epoch. */
export function batchBody(batch: readonly Delivery[], epoch: string | null, maxRowBytes: number): string {
  let body = epoch === null ? '{"changes":[' : `{"epoch":${JSON.stringify(epoch)},"changes":[`;
  for (let i = 0; i < batch.length; i++) body += (i === 0 ? '' : ',') + changeJson(batch[i] as Delivery, maxRowBytes);
  return `${body}]}`;
}
