import type { Condition } from '../../src/conditions.ts';
import { uuidFromHex, uuidToBytes, type Id } from '../../src/ids.ts';
import type { Cached, Filter, IpStack, ResourceType } from '../../src/records.ts';
import type { TableName } from '../../src/tables.ts';
import { hexText, type JsonRow, type JsonTable, type JsonValue } from './json-rows.ts';

/**
 * The object's SQLite caches: one table per entity, ids as 16-byte BLOBs, only the fields of
 * the compact records. Bump CACHE_SCHEMA_VERSION when a table changes: an object whose stored
 * version is older drops its caches and hydrates again.
 */
export const CACHE_SCHEMA_VERSION = 2;

export type SqlValue = ArrayBuffer | string | number | null;

interface TableCodec {
  /** The SQLite table. */
  name: string;
  columns: readonly string[];
  keyColumns: readonly string[];
  /** Columns stored as BLOBs (ids, hashes). */
  blobColumns: readonly string[];
  /** The table's DDL under a name: its own, or a staging table's (workers/account/cache-staging.ts). */
  ddl(name: string): string;
  encode(record: never): SqlValue[];
  /** How the table is read back in bulk (workers/account/json-pages.ts): blobs as hex text, JSON columns embedded. */
  read: JsonTable;
  /** A record from its row as `read` yields it (values in column order). */
  decode(row: JsonRow): Cached['record'];
}

const blob = (id: string): ArrayBuffer => uuidToBytes(id).buffer as ArrayBuffer;
// Read back by `read`: blobs come as hex text.
const id = <K extends string>(v: JsonValue | undefined): Id<K> => uuidFromHex<K>(v as string);
const str = (v: JsonValue | undefined): string => v as string;
const strOrNull = (v: JsonValue | undefined): string | null => (v === null ? null : (v as string));
const bool = (v: JsonValue | undefined): boolean => v === 1;

/**
 * `reads`: SQL expressions for the columns not read as they are (blob columns are read as hex text).
 */
function codec<R>(
  name: string,
  columns: string[],
  keyColumns: string[],
  types: Record<string, string>,
  encode: (r: R) => SqlValue[],
  decode: (row: JsonRow) => R,
  reads: Record<string, string> = {},
): TableCodec {
  const cols = columns.map((c) => `${c} ${types[c]}`).join(', ');
  const isBlob = (c: string) => types[c]!.startsWith('blob');
  return {
    name,
    columns,
    keyColumns,
    blobColumns: columns.filter(isBlob),
    ddl: (as) => `create table if not exists ${as} (${cols}, primary key (${keyColumns.join(', ')})) without rowid`,
    encode: encode as (r: never) => SqlValue[],
    read: {
      name,
      values: columns.map((c) => reads[c] ?? (isBlob(c) ? hexText(c) : c)),
      key: keyColumns.map((c) => ({ column: c, at: columns.indexOf(c), blob: isBlob(c) })),
    },
    decode: decode as (row: JsonRow) => Cached['record'],
  };
}

type Rec<T extends TableName> = Extract<Cached, { table: T }>['record'];

export const CACHE_TABLES: { [T in TableName]: TableCodec } = {
  accounts: codec<Rec<'accounts'>>(
    'c_accounts',
    ['id', 'disabled'],
    ['id'],
    { id: 'blob not null', disabled: 'integer not null' },
    (r) => [blob(r.id), r.disabled ? 1 : 0],
    (row) => ({ id: id(row[0]), disabled: bool(row[1]) }),
  ),
  actors: codec<Rec<'actors'>>(
    'c_actors',
    ['id', 'disabled'],
    ['id'],
    { id: 'blob not null', disabled: 'integer not null' },
    (r) => [blob(r.id), r.disabled ? 1 : 0],
    (row) => ({ id: id(row[0]), disabled: bool(row[1]) }),
  ),
  actor_groups: codec<Rec<'actor_groups'>>(
    'c_groups',
    ['id'],
    ['id'],
    { id: 'blob not null' },
    (r) => [blob(r.id)],
    (row) => ({ id: id(row[0]) }),
  ),
  actor_group_memberships: codec<Rec<'actor_group_memberships'>>(
    'c_memberships',
    ['group_id', 'actor_id'],
    ['group_id', 'actor_id'],
    { group_id: 'blob not null', actor_id: 'blob not null' },
    (r) => [blob(r.groupId), blob(r.actorId)],
    (row) => ({ groupId: id(row[0]), actorId: id(row[1]) }),
  ),
  sites: codec<Rec<'sites'>>(
    'c_sites',
    ['id', 'name'],
    ['id'],
    { id: 'blob not null', name: 'text not null' },
    (r) => [blob(r.id), r.name],
    (row) => ({ id: id(row[0]), name: str(row[1]) }),
  ),
  gateways: codec<Rec<'gateways'>>(
    'c_gateways',
    ['id', 'site_id', 'external_id', 'name', 'public_key', 'version'],
    ['id'],
    { id: 'blob not null', site_id: 'blob not null', external_id: 'text not null', name: 'text not null', public_key: 'text not null', version: 'text' },
    (r) => [blob(r.id), blob(r.siteId), r.externalId, r.name, r.publicKey, r.version],
    (row) => ({
      id: id(row[0]),
      siteId: id(row[1]),
      externalId: str(row[2]),
      name: str(row[3]),
      publicKey: str(row[4]),
      version: strOrNull(row[5]),
    }),
  ),
  resources: codec<Rec<'resources'>>(
    'c_resources',
    ['id', 'type', 'name', 'address', 'address_description', 'ip_stack', 'filters'],
    ['id'],
    { id: 'blob not null', type: 'text not null', name: 'text not null', address: 'text', address_description: 'text', ip_stack: 'text', filters: 'text' },
    (r) => [blob(r.id), r.type, r.name, r.address, r.addressDescription, r.ipStack, r.filters.length === 0 ? null : JSON.stringify(r.filters)],
    (row) => ({
      id: id(row[0]),
      type: str(row[1]) as ResourceType,
      name: str(row[2]),
      address: strOrNull(row[3]),
      addressDescription: strOrNull(row[4]),
      ipStack: strOrNull(row[5]) as IpStack | null,
      filters: row[6] === null ? [] : (row[6] as unknown as Filter[]),
    }),
    // Stored as JSON text: embedded as JSON, it is parsed with the page.
    { filters: 'json(filters)' },
  ),
  resource_connections: codec<Rec<'resource_connections'>>(
    'c_connections',
    ['resource_id', 'site_id'],
    ['resource_id', 'site_id'],
    { resource_id: 'blob not null', site_id: 'blob not null' },
    (r) => [blob(r.resourceId), blob(r.siteId)],
    (row) => ({ resourceId: id(row[0]), siteId: id(row[1]) }),
  ),
  policies: codec<Rec<'policies'>>(
    'c_policies',
    ['id', 'group_id', 'resource_id', 'disabled', 'conditions'],
    ['id'],
    { id: 'blob not null', group_id: 'blob not null', resource_id: 'blob not null', disabled: 'integer not null', conditions: 'text' },
    // Conditions were validated when decoded from the row; '!' marks invalid ones (the policy grants nothing).
    (r) => [blob(r.id), blob(r.groupId), blob(r.resourceId), r.disabled ? 1 : 0, r.conditions === null ? '!' : r.conditions.length === 0 ? null : JSON.stringify(r.conditions)],
    (row) => ({
      id: id(row[0]),
      groupId: id(row[1]),
      resourceId: id(row[2]),
      disabled: bool(row[3]),
      conditions: row[4] === '!' ? null : row[4] === null ? [] : (row[4] as unknown as Condition[]),
    }),
    { conditions: "case when conditions = '!' then '!' else json(conditions) end" },
  ),
  clients: codec<Rec<'clients'>>(
    'c_clients',
    ['id', 'actor_id', 'external_id', 'name', 'public_key', 'version', 'verified'],
    ['id'],
    {
      id: 'blob not null',
      actor_id: 'blob not null',
      external_id: 'text not null',
      name: 'text not null',
      public_key: 'text not null',
      version: 'text',
      verified: 'integer not null',
    },
    (r) => [blob(r.id), blob(r.actorId), r.externalId, r.name, r.publicKey, r.version, r.verified ? 1 : 0],
    (row) => ({
      id: id(row[0]),
      actorId: id(row[1]),
      externalId: str(row[2]),
      name: str(row[3]),
      publicKey: str(row[4]),
      version: strOrNull(row[5]),
      verified: bool(row[6]),
    }),
  ),
  tokens: codec<Rec<'tokens'>>(
    'c_tokens',
    ['id', 'type', 'owner_id', 'salt', 'hash', 'expires_at'],
    ['id'],
    { id: 'blob not null', type: 'text not null', owner_id: 'blob not null', salt: 'text not null', hash: 'blob not null', expires_at: 'integer' },
    (r) => [blob(r.id), r.type, blob(r.ownerId), r.salt, hexToBuffer(r.hash), r.expiresAt],
    (row) => ({
      id: id(row[0]),
      type: str(row[1]) as 'client' | 'site',
      ownerId: id(row[2]),
      salt: str(row[3]),
      hash: str(row[4]),
      expiresAt: row[5] === null ? null : Number(row[5]),
    }),
  ),
};

function hexToBuffer(hex: string): ArrayBuffer {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out.buffer;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Runs for every blob a hydration stages: a table lookup per byte, no intermediate arrays. */
export function bufferToHex(buffer: ArrayBuffer): string {
  const bytes = new Uint8Array(buffer);
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]!];
  return s;
}

/** The values a cached record is stored as, in column order. */
export function encodeCached(cached: Cached): SqlValue[] {
  return CACHE_TABLES[cached.table].encode(cached.record as never);
}

/** Bytes of a record's stored values (blob and text lengths, 8 per integer): the cache's size measure. */
export function storedBytes(cached: Cached): number {
  let n = 0;
  for (const v of encodeCached(cached)) {
    if (v === null) continue;
    if (typeof v === 'number') n += 8;
    else if (typeof v === 'string') n += new TextEncoder().encode(v).length;
    else n += v.byteLength;
  }
  return n;
}
