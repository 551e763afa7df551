import { z } from 'zod';
import { parseConditions, type Condition } from './conditions.ts';
import type { AccountId, ActorId, ClientId, GatewayId, GroupId, Id, PolicyId, ResourceId, SiteId, TokenId } from './ids.ts';
import { asId } from './ids.ts';
import type { Row } from './json.ts';
import type { TableName } from './tables.ts';

/**
 * The compact ("Cacheable") records an account object keeps: only the fields that access
 * decisions and device messages need. Rows arrive fat (every column); these are what is left.
 */
export type ResourceType = 'dns' | 'ip' | 'cidr' | 'internet';
export type IpStack = 'dual' | 'ipv4_only' | 'ipv6_only';
export interface Filter {
  protocol: 'tcp' | 'udp' | 'icmp';
  ports: string[];
}

export interface AccountRecord {
  id: AccountId;
  disabled: boolean;
}
export interface ActorRecord {
  id: ActorId;
  disabled: boolean;
}
export interface GroupRecord {
  id: GroupId;
}
export interface MembershipRecord {
  actorId: ActorId;
  groupId: GroupId;
}
export interface SiteRecord {
  id: SiteId;
  name: string;
}
export interface GatewayRecord {
  id: GatewayId;
  siteId: SiteId;
  name: string;
  publicKey: string;
  version: string | null;
}
export interface ResourceRecord {
  id: ResourceId;
  type: ResourceType;
  name: string;
  address: string | null;
  addressDescription: string | null;
  ipStack: IpStack | null;
  filters: Filter[];
}
export interface ConnectionRecord {
  resourceId: ResourceId;
  siteId: SiteId;
}
export interface PolicyRecord {
  id: PolicyId;
  groupId: GroupId;
  resourceId: ResourceId;
  disabled: boolean;
  /** null: the stored conditions are invalid, and the policy grants nothing (fail closed). */
  conditions: Condition[] | null;
}
export interface ClientRecord {
  id: ClientId;
  actorId: ActorId;
  name: string;
  publicKey: string;
  version: string | null;
  verified: boolean;
}
export interface TokenRecord {
  id: TokenId;
  type: 'client' | 'site';
  /** The actor of a client token, the site of a site token. */
  ownerId: ActorId | SiteId;
  salt: string;
  /** Lower-case hex SHA-256 of salt || secret. */
  hash: string;
  /** Epoch ms; null: never expires. */
  expiresAt: number | null;
}

/** A cached record and the table it belongs to. */
export type Cached =
  | { table: 'accounts'; record: AccountRecord }
  | { table: 'actors'; record: ActorRecord }
  | { table: 'actor_groups'; record: GroupRecord }
  | { table: 'actor_group_memberships'; record: MembershipRecord }
  | { table: 'sites'; record: SiteRecord }
  | { table: 'gateways'; record: GatewayRecord }
  | { table: 'resources'; record: ResourceRecord }
  | { table: 'resource_connections'; record: ConnectionRecord }
  | { table: 'policies'; record: PolicyRecord }
  | { table: 'clients'; record: ClientRecord }
  | { table: 'tokens'; record: TokenRecord };

const id = <K extends string>() =>
  z.string().transform((s, ctx): Id<K> => {
    const v = asId<K>(s);
    if (v === undefined) ctx.addIssue({ code: 'custom', message: 'expected a uuid' });
    return v as Id<K>;
  });
const time = z.string().max(64).nullable().optional();
const isSet = (t: string | null | undefined) => t !== null && t !== undefined;
/**
 * The limits of docs/protocol.md#limits, which Postgres enforces with CHECK constraints: a row that
 * still exceeds them (written before the constraints, or sent by the replicator without its values
 * because it was too large) does not decode, and its record is dropped (fail closed) rather than
 * stored: no cached record can outgrow a SQLite row.
 */
const text = (max = 255) => z.string().max(max);
const nullableText = (max = 255) =>
  z
    .string()
    .max(max)
    .nullable()
    .optional()
    .transform((v) => v ?? null);
const filterSchema = z.object({
  protocol: z.enum(['tcp', 'udp', 'icmp']),
  ports: z
    .array(z.string().regex(/^\d{1,5}(-\d{1,5})?$/))
    .max(1024)
    .default([]),
});

function epochMs(t: string | null | undefined): number | null {
  if (t === null || t === undefined) return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

const decoders = {
  accounts: z
    .object({ id: id<'account'>(), disabled_at: time, deleted_at: time })
    .transform((r) => ({ deleted: isSet(r.deleted_at), record: { id: r.id, disabled: isSet(r.disabled_at) } })),
  actors: z
    .object({ id: id<'actor'>(), disabled_at: time, deleted_at: time })
    .transform((r) => ({ deleted: isSet(r.deleted_at), record: { id: r.id, disabled: isSet(r.disabled_at) } })),
  actor_groups: z.object({ id: id<'group'>(), deleted_at: time }).transform((r) => ({ deleted: isSet(r.deleted_at), record: { id: r.id } })),
  actor_group_memberships: z
    .object({ actor_id: id<'actor'>(), group_id: id<'group'>() })
    .transform((r) => ({ deleted: false, record: { actorId: r.actor_id, groupId: r.group_id } })),
  sites: z.object({ id: id<'site'>(), name: text(), deleted_at: time }).transform((r) => ({ deleted: isSet(r.deleted_at), record: { id: r.id, name: r.name } })),
  gateways: z.object({ id: id<'gateway'>(), site_id: id<'site'>(), name: text(), public_key: text(256), last_seen_version: nullableText(), deleted_at: time }).transform((r) => ({
    deleted: isSet(r.deleted_at),
    record: { id: r.id, siteId: r.site_id, name: r.name, publicKey: r.public_key, version: r.last_seen_version },
  })),
  resources: z
    .object({
      id: id<'resource'>(),
      type: z.enum(['dns', 'ip', 'cidr', 'internet']),
      name: text(),
      address: nullableText(1024),
      address_description: nullableText(1024),
      ip_stack: z
        .enum(['dual', 'ipv4_only', 'ipv6_only'])
        .nullable()
        .optional()
        .transform((v) => v ?? null),
      filters: z
        .array(filterSchema)
        .max(64)
        .nullable()
        .optional()
        .transform((v) => v ?? []),
      deleted_at: time,
    })
    .transform((r) => ({
      deleted: isSet(r.deleted_at),
      record: {
        id: r.id,
        type: r.type,
        name: r.name,
        address: r.address,
        addressDescription: r.address_description,
        ipStack: r.ip_stack,
        filters: r.filters,
      },
    })),
  resource_connections: z
    .object({ resource_id: id<'resource'>(), site_id: id<'site'>() })
    .transform((r) => ({ deleted: false, record: { resourceId: r.resource_id, siteId: r.site_id } })),
  policies: z
    .object({ id: id<'policy'>(), actor_group_id: id<'group'>(), resource_id: id<'resource'>(), conditions: z.unknown(), disabled_at: time, deleted_at: time })
    .transform((r) => ({
      deleted: isSet(r.deleted_at),
      record: { id: r.id, groupId: r.actor_group_id, resourceId: r.resource_id, disabled: isSet(r.disabled_at), conditions: parseConditions(r.conditions) },
    })),
  clients: z
    .object({ id: id<'client'>(), actor_id: id<'actor'>(), name: text(), public_key: text(256), last_seen_version: nullableText(), verified_at: time, deleted_at: time })
    .transform((r) => ({
      deleted: isSet(r.deleted_at),
      record: { id: r.id, actorId: r.actor_id, name: r.name, publicKey: r.public_key, version: r.last_seen_version, verified: isSet(r.verified_at) },
    })),
  tokens: z
    .object({
      id: id<'token'>(),
      type: z.enum(['client', 'site']),
      actor_id: z.string().nullable().optional(),
      site_id: z.string().nullable().optional(),
      secret_salt: text(1024),
      secret_hash: z.string().regex(/^[0-9a-fA-F]{64}$/),
      expires_at: time,
      deleted_at: time,
    })
    .transform((r, ctx) => {
      const owner = asId<'actor' | 'site'>(r.type === 'client' ? r.actor_id : r.site_id);
      if (owner === undefined) ctx.addIssue({ code: 'custom', message: `a ${r.type} token needs its ${r.type === 'client' ? 'actor_id' : 'site_id'}` });
      // An expiry that is not a time (Postgres' 'infinity' among them) must not read as "never expires".
      if (isSet(r.expires_at) && epochMs(r.expires_at) === null) ctx.addIssue({ code: 'custom', message: 'expires_at is not a finite time' });
      return {
        deleted: isSet(r.deleted_at),
        record: {
          id: r.id,
          type: r.type,
          ownerId: owner as ActorId | SiteId,
          salt: r.secret_salt,
          hash: r.secret_hash.toLowerCase(),
          expiresAt: epochMs(r.expires_at),
        },
      };
    }),
} satisfies Record<TableName, z.ZodType<{ deleted: boolean; record: unknown }>>;

export class RowDecodeError extends Error {
  override name = 'RowDecodeError';
  constructor(
    readonly table: TableName,
    readonly issues: string,
  ) {
    super(`cannot decode a ${table} row: ${issues}`);
  }
}

/**
 * The cached record of a row, and whether the row is soft-deleted (then the record is only good
 * for finding what to remove). Throws RowDecodeError for a row that does not fit the schema.
 */
export function decodeRow(table: TableName, row: Row): { deleted: boolean; cached: Cached } {
  const parsed = decoders[table].safeParse(row);
  if (!parsed.success) throw new RowDecodeError(table, z.prettifyError(parsed.error));
  return { deleted: parsed.data.deleted, cached: { table, record: parsed.data.record } as Cached };
}

/**
 * Just enough of a row that does not decode to find the record it names (its id, or the ids of a
 * join row), so that the record can be dropped (fail closed). Undefined when even those are missing.
 */
export function keyOfRow(table: TableName, row: Row): Cached | undefined {
  if (table === 'actor_group_memberships') {
    const actorId = asId<'actor'>(row.actor_id);
    const groupId = asId<'group'>(row.group_id);
    return actorId && groupId ? { table, record: { actorId, groupId } } : undefined;
  }
  if (table === 'resource_connections') {
    const resourceId = asId<'resource'>(row.resource_id);
    const siteId = asId<'site'>(row.site_id);
    return resourceId && siteId ? { table, record: { resourceId, siteId } } : undefined;
  }
  const id = asId(row.id);
  // Only the id is read to find the cached record; the other fields are never looked at.
  return id ? ({ table, record: { id } } as unknown as Cached) : undefined;
}
