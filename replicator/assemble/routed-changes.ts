import type { Change } from '../../src/change.ts';
import type { Row } from '../../src/json.ts';
import { formatLsn } from '../../src/lsn.ts';
import type { Delivery } from '../deliver/delivery.ts';
import { postgresTimeToIso } from '../pg-time.ts';
import type { SpilledEvent } from './spill-file.ts';
import type { AssembledTransaction } from './transaction-assembler.ts';

/** A change and the account whose object must receive it. */
export interface RoutedChange {
  accountId: string;
  change: Change;
}

/**
 * Gives every event of a committed transaction its position (commit LSN, seq). A truncate becomes
 * one change per account in `truncateAccounts`, since it removed the table's rows in all of them.
 */
export function toChanges(txn: AssembledTransaction, truncateAccounts: readonly string[] = []): RoutedChange[] {
  const lsn = formatLsn(txn.commitLsn);
  const committedAt = postgresTimeToIso(txn.commitTime);
  const out: RoutedChange[] = [];
  let seq = 0;
  for (const e of txn.events) {
    if (e.op === 'truncate') {
      for (const accountId of truncateAccounts) {
        out.push({ accountId, change: { lsn, seq: seq++, xid: txn.xid, table: e.table, op: 'truncate', old: null, data: null, committed_at: committedAt } });
      }
      continue;
    }
    // One object literal per change: spreading a shared base object costs tens of times more.
    const change: Change =
      e.op === 'insert'
        ? { lsn, seq: seq++, xid: txn.xid, table: e.table, op: 'insert', old: null, data: e.data as Row, committed_at: committedAt }
        : e.op === 'update'
          ? { lsn, seq: seq++, xid: txn.xid, table: e.table, op: 'update', old: e.old, data: e.data as Row, committed_at: committedAt }
          : { lsn, seq: seq++, xid: txn.xid, table: e.table, op: 'delete', old: e.old as Row, data: null, committed_at: committedAt };
    out.push({ accountId: e.accountId, change });
  }
  return out;
}

export function hasTruncate(txn: AssembledTransaction): boolean {
  return txn.spill ? txn.spill.hasTruncate : txn.events.some((e) => e.op === 'truncate');
}

/**
 * What `toChanges` then `toDelivery` make of the same events, for a chunk of a spilled transaction
 * read back from its file, whose first change has position `(commit LSN, firstSeq)`: the rows are
 * already JSON text (docs/architecture.md#the-path-of-a-change, step 4).
 */
export function spilledDeliveries(txn: AssembledTransaction, events: readonly SpilledEvent[], truncateAccounts: readonly string[], firstSeq: number): Delivery[] {
  const lsn = formatLsn(txn.commitLsn);
  const committedAt = postgresTimeToIso(txn.commitTime);
  const out: Delivery[] = [];
  let seq = firstSeq;
  for (const e of events) {
    if (e.op === 'truncate') {
      for (const accountId of truncateAccounts) {
        out.push({ accountId, lsn, position: { lsn: txn.commitLsn, seq: seq++ }, xid: txn.xid, table: e.table, op: 'truncate', committedAt, oldJson: null, dataJson: null });
      }
      continue;
    }
    out.push({
      accountId: e.accountId,
      lsn,
      position: { lsn: txn.commitLsn, seq: seq++ },
      xid: txn.xid,
      table: e.table,
      op: e.op,
      committedAt,
      oldJson: e.oldJson,
      dataJson: e.dataJson,
    });
  }
  return out;
}
