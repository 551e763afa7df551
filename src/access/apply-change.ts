import type { Change } from '../change.ts';
import type { Row } from '../json.ts';
import { decodeRow, keyOfRow, RowDecodeError, type Cached } from '../records.ts';
import type { TableName } from '../tables.ts';
import type { AccountState } from './account-state.ts';
import type { Dirty } from './dirty.ts';

/** What the object must write to its SQLite caches for one change. */
export type StorageOp = { kind: 'put'; cached: Cached } | { kind: 'delete'; cached: Cached } | { kind: 'clear'; table: TableName };

export interface Applied {
  ops: StorageOp[];
  /** Rows that did not fit the schema; each was treated as a deletion (fail closed). */
  problems: RowDecodeError[];
}

/** The key a record is stored under: its id, or the pair of ids of a join row. */
export function keyOf(cached: Cached): string {
  switch (cached.table) {
    case 'actor_group_memberships':
      return `${cached.record.actorId}|${cached.record.groupId}`;
    case 'resource_connections':
      return `${cached.record.resourceId}|${cached.record.siteId}`;
    default:
      return cached.record.id;
  }
}

function decode(table: TableName, row: Row | null, problems: RowDecodeError[]): { deleted: boolean; cached: Cached } | null {
  if (row === null) return null;
  try {
    return decodeRow(table, row);
  } catch (err) {
    if (!(err instanceof RowDecodeError)) throw err;
    problems.push(err);
    return null;
  }
}

/**
 * Applies one change to the in-memory state, marks what it may affect, and returns the writes
 * that bring the SQLite caches to the same state. A soft-deleted row removes its record; a row
 * that does not decode removes the record of its old row, so that bad data never grants access.
 */
export function applyChange(state: AccountState, change: Change, dirty: Dirty): Applied {
  const ops: StorageOp[] = [];
  const problems: RowDecodeError[] = [];
  const remove = (cached: Cached) => {
    const existing = state.existing(cached);
    if (!existing) return;
    dirty.mark(state, existing);
    state.remove(existing);
    ops.push({ kind: 'delete', cached: existing });
  };

  if (change.op === 'truncate') {
    for (const cached of state.all(change.table)) remove(cached);
    return { ops: [{ kind: 'clear', table: change.table }], problems };
  }

  const before = decode(change.table, change.old, problems);
  const after = decode(change.table, change.data, problems);
  // A new row that does not decode (over a limit, sent without its values) drops its record: bad
  // or missing data never keeps or grants access.
  if (!after && change.data) {
    const named = keyOfRow(change.table, change.data);
    if (named) remove(named);
  }
  if (!before && change.old && !change.data) {
    const named = keyOfRow(change.table, change.old);
    if (named) remove(named);
  }
  if (before && (!after || after.deleted || keyOf(before.cached) !== keyOf(after.cached))) remove(before.cached);
  if (after) {
    if (after.deleted) {
      remove(after.cached);
    } else {
      const existing = state.existing(after.cached);
      if (existing) {
        dirty.mark(state, existing);
        dirty.replaced(existing, after.cached);
      }
      state.put(after.cached);
      dirty.mark(state, after.cached);
      ops.push({ kind: 'put', cached: after.cached });
    }
  }
  return { ops, problems };
}
