import { z } from 'zod';
import { isLsn } from './lsn.ts';
import { DOMAIN_TABLES, SOFT_DELETE_TABLES, type TableName } from './tables.ts';
import { isPlainObject, type Row } from './json.ts';

/** Version of the Change format, recorded in `change_logs.vsn`. */
export const CHANGE_FORMAT_VERSION = 1;

interface ChangeBase {
  /** Commit LSN of the transaction, `X/Y`. */
  lsn: string;
  /** Index of the change inside its transaction. */
  seq: number;
  xid: number;
  table: TableName;
  /** Commit time, ISO-8601 UTC with microseconds. */
  committed_at: string;
}

export interface InsertChange extends ChangeBase {
  op: 'insert';
  old: null;
  data: Row;
}
export interface UpdateChange extends ChangeBase {
  op: 'update';
  old: Row | null;
  data: Row;
}
export interface DeleteChange extends ChangeBase {
  op: 'delete';
  old: Row;
  data: null;
}
/**
 * Extension of docs/protocol.md#changes-route: `TRUNCATE` of a domain table removed every row of it, in every
 * account. Each account the replicator knows gets one, so that its object can drop the table's cache.
 */
export interface TruncateChange extends ChangeBase {
  op: 'truncate';
  old: null;
  data: null;
}

export type Change = InsertChange | UpdateChange | DeleteChange | TruncateChange;
export type ChangeOp = Change['op'];

const row = z.custom<Row>(isPlainObject, { message: 'expected a row object' });
const base = {
  lsn: z.string().refine(isLsn, { message: 'expected an LSN like 0/16B3748' }),
  seq: z.int().nonnegative(),
  xid: z.int().nonnegative(),
  table: z.enum(DOMAIN_TABLES),
  committed_at: z.string(),
};

export const changeSchema: z.ZodType<Change> = z.discriminatedUnion('op', [
  z.object({ ...base, op: z.literal('insert'), old: z.null(), data: row }),
  z.object({ ...base, op: z.literal('update'), old: row.nullable(), data: row }),
  z.object({ ...base, op: z.literal('delete'), old: row, data: z.null() }),
  z.object({ ...base, op: z.literal('truncate'), old: z.null(), data: z.null() }),
]);

/**
 * `epoch` (docs/protocol.md#change-format): which replication stream the positions belong to; an
 * object that followed another one re-hydrates and starts over (docs/architecture.md#12-epochs).
 */
export const epochSchema = z.string().min(1).max(64);
export const changeBatchSchema = z.object({ epoch: epochSchema.optional(), changes: z.array(changeSchema) });
export type ChangeBatch = z.infer<typeof changeBatchSchema>;

/** The account a row belongs to: `accounts` rows route by their own id, every other table by `account_id`. */
export function accountIdOf(table: TableName, row: Row): string | undefined {
  const value = table === 'accounts' ? row.id : row.account_id;
  return typeof value === 'string' ? value : undefined;
}

/** A change of a batch that is not of the batch's account: its index and the account it names (null: none). */
export interface ForeignChange {
  index: number;
  accountId: string | null;
}

/**
 * docs/architecture.md#6-isolation, checked once where batches enter the edge: the first change that does not
 * belong to `accountId`, or null when every one does. A truncate belongs to every account.
 */
export function firstForeignChange(accountId: string, changes: readonly Change[]): ForeignChange | null {
  for (const [index, c] of changes.entries()) {
    if (c.op === 'truncate') continue;
    const owner = accountIdOf(c.table, c.op === 'delete' ? c.old : c.data);
    if (owner !== accountId) return { index, accountId: owner ?? null };
  }
  return null;
}

/**
 * Whether the batch leaves the account's row live (true: an insert or update of it, not soft-deleted,
 * comes last), gone (false: a delete or truncate comes last), or does not touch it (undefined).
 */
export function accountRowAfter(changes: readonly Change[]): boolean | undefined {
  for (let i = changes.length - 1; i >= 0; i--) {
    const c = changes[i]!;
    if (c.table !== 'accounts') continue;
    return c.op !== 'delete' && c.op !== 'truncate' && c.data.deleted_at == null;
  }
  return undefined;
}

/**
 * docs/architecture.md#5-fat-typed-changes: an update that sets `deleted_at` on a soft-deletable table is a delete (of the
 * old row), and one that clears it inserts the row again.
 */
export function softDeleteAware(
  table: TableName,
  op: 'insert' | 'update' | 'delete',
  old: Row | null,
  data: Row | null,
): { op: 'insert' | 'update' | 'delete'; old: Row | null; data: Row | null } {
  if (op !== 'update' || !SOFT_DELETE_TABLES.has(table) || !data) return { op, old, data };
  const wasDeleted = old !== null && old.deleted_at != null;
  const isDeleted = data.deleted_at != null;
  if (isDeleted && !wasDeleted) return { op: 'delete', old: old ?? data, data: null };
  if (wasDeleted && !isDeleted) return { op: 'insert', old: null, data };
  return { op, old, data };
}
