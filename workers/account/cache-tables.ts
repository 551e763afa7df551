import type { Condition } from '../../src/conditions.ts';
import { bytesToUuid, uuidToBytes, type Id } from '../../src/ids.ts';
import type { Cached, Filter, IpStack, ResourceType } from '../../src/records.ts';
import type { TableName } from '../../src/tables.ts';

/**
 * The object's SQLite caches: one table per entity, ids as 16-byte BLOBs, only the fields of
 * the compact records. Bump CACHE_SCHEMA_VERSION when a table changes: an object whose stored
 * version is older drops its caches and hydrates again.
 */
export const CACHE_SCHEMA_VERSION = 2;

export type SqlValue = ArrayBuffer | string | number | null;
type SqlRow = Record<string, SqlValue>;

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
  decode(row: SqlRow): Cached['record'];
}

const blob = (id: string): ArrayBuffer => uuidToBytes(id).buffer as ArrayBuffer;
const id = <K extends string>(v: SqlValue): Id<K> => bytesToUuid<K>(v as ArrayBuffer);
const str = (v: SqlValue): string => v as string;
const strOrNull = (v: SqlValue): string | null => (v === null ? null : (v as string));
const bool = (v: SqlValue): boolean => v === 1;

function codec<R>(name: string, columns: string[], keyColumns: string[], types: Record<string, string>, encode: (r: R) => SqlValue[], decode: (row: SqlRow) => R): TableCodec {
  const cols = columns.map((c) => `${c} ${types[c]}`).join(', ');
  return {
    name,
    columns,
    keyColumns,
    blobColumns: columns.filter((c) => types[c]!.startsWith('blob')),
    ddl: (as) => `create table if not exists ${as} (${cols}, primary key (${keyColumns.join(', ')})) without rowid`,
    encode: encode as (r: never) => SqlValue[],
    decode: decode as (row: SqlRow) => Cached['record'],
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
    (row) => ({ id: id(row.id!), disabled: bool(row.disabled!) }),
  ),
  actors: codec<Rec<'actors'>>(
    'c_actors',
    ['id', 'disabled'],
    ['id'],
    { id: 'blob not null', disabled: 'integer not null' },
    (r) => [blob(r.id), r.disabled ? 1 : 0],
    (row) => ({ id: id(row.id!), disabled: bool(row.disabled!) }),
  ),
  actor_groups: codec<Rec<'actor_groups'>>(
    'c_groups',
    ['id'],
    ['id'],
    { id: 'blob not null' },
    (r) => [blob(r.id)],
    (row) => ({ id: id(row.id!) }),
  ),
  actor_group_memberships: codec<Rec<'actor_group_memberships'>>(
    'c_memberships',
    ['group_id', 'actor_id'],
    ['group_id', 'actor_id'],
    { group_id: 'blob not null', actor_id: 'blob not null' },
    (r) => [blob(r.groupId), blob(r.actorId)],
    (row) => ({ groupId: id(row.group_id!), actorId: id(row.actor_id!) }),
  ),
  sites: codec<Rec<'sites'>>(
    'c_sites',
    ['id', 'name'],
    ['id'],
    { id: 'blob not null', name: 'text not null' },
    (r) => [blob(r.id), r.name],
    (row) => ({ id: id(row.id!), name: str(row.name!) }),
  ),
  gateways: codec<Rec<'gateways'>>(
    'c_gateways',
    ['id', 'site_id', 'external_id', 'name', 'public_key', 'version'],
    ['id'],
    { id: 'blob not null', site_id: 'blob not null', external_id: 'text not null', name: 'text not null', public_key: 'text not null', version: 'text' },
    (r) => [blob(r.id), blob(r.siteId), r.externalId, r.name, r.publicKey, r.version],
    (row) => ({
      id: id(row.id!),
      siteId: id(row.site_id!),
      externalId: str(row.external_id!),
      name: str(row.name!),
      publicKey: str(row.public_key!),
      version: strOrNull(row.version!),
    }),
  ),
  resources: codec<Rec<'resources'>>(
    'c_resources',
    ['id', 'type', 'name', 'address', 'address_description', 'ip_stack', 'filters'],
    ['id'],
    { id: 'blob not null', type: 'text not null', name: 'text not null', address: 'text', address_description: 'text', ip_stack: 'text', filters: 'text' },
    (r) => [blob(r.id), r.type, r.name, r.address, r.addressDescription, r.ipStack, r.filters.length === 0 ? null : JSON.stringify(r.filters)],
    (row) => ({
      id: id(row.id!),
      type: str(row.type!) as ResourceType,
      name: str(row.name!),
      address: strOrNull(row.address!),
      addressDescription: strOrNull(row.address_description!),
      ipStack: strOrNull(row.ip_stack!) as IpStack | null,
      filters: row.filters === null ? [] : (JSON.parse(str(row.filters!)) as Filter[]),
    }),
  ),
  resource_connections: codec<Rec<'resource_connections'>>(
    'c_connections',
    ['resource_id', 'site_id'],
    ['resource_id', 'site_id'],
    { resource_id: 'blob not null', site_id: 'blob not null' },
    (r) => [blob(r.resourceId), blob(r.siteId)],
    (row) => ({ resourceId: id(row.resource_id!), siteId: id(row.site_id!) }),
  ),
  policies: codec<Rec<'policies'>>(
    'c_policies',
    ['id', 'group_id', 'resource_id', 'disabled', 'conditions'],
    ['id'],
    { id: 'blob not null', group_id: 'blob not null', resource_id: 'blob not null', disabled: 'integer not null', conditions: 'text' },
    // Conditions were validated when decoded from the row; '!' marks invalid ones (the policy grants nothing).
    (r) => [blob(r.id), blob(r.groupId), blob(r.resourceId), r.disabled ? 1 : 0, r.conditions === null ? '!' : r.conditions.length === 0 ? null : JSON.stringify(r.conditions)],
    (row) => ({
      id: id(row.id!),
      groupId: id(row.group_id!),
      resourceId: id(row.resource_id!),
      disabled: bool(row.disabled!),
      conditions: row.conditions === '!' ? null : row.conditions === null ? [] : (JSON.parse(str(row.conditions!)) as Condition[]),
    }),
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
      id: id(row.id!),
      actorId: id(row.actor_id!),
      externalId: str(row.external_id!),
      name: str(row.name!),
      publicKey: str(row.public_key!),
      version: strOrNull(row.version!),
      verified: bool(row.verified!),
    }),
  ),
  tokens: codec<Rec<'tokens'>>(
    'c_tokens',
    ['id', 'type', 'owner_id', 'salt', 'hash', 'expires_at'],
    ['id'],
    { id: 'blob not null', type: 'text not null', owner_id: 'blob not null', salt: 'text not null', hash: 'blob not null', expires_at: 'integer' },
    (r) => [blob(r.id), r.type, blob(r.ownerId), r.salt, hexToBuffer(r.hash), r.expiresAt],
    (row) => ({
      id: id(row.id!),
      type: str(row.type!) as 'client' | 'site',
      ownerId: id(row.owner_id!),
      salt: str(row.salt!),
      hash: bufferToHex(row.hash as ArrayBuffer),
      expiresAt: row.expires_at === null ? null : Number(row.expires_at),
    }),
  ),
};

function hexToBuffer(hex: string): ArrayBuffer {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out.buffer;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Runs for every token when an object wakes: a table lookup per byte, no intermediate arrays. */
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
