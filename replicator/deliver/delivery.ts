import type { ChangeOp } from '../../src/change.ts';
import { parseLsn, type Position } from '../../src/lsn.ts';
import type { TableName } from '../../src/tables.ts';
import type { RoutedChange } from '../assemble/routed-changes.ts';

/**
 * A change on its way to change_logs and to its account's object, live or read back from the log.
 * Rows are JSON text, serialized once (live) or as the log returned them (catch-up).
 */
export interface Delivery {
  accountId: string;
  lsn: string;
  /** Where the change stands in commit order: `(commit LSN, seq)`. */
  position: Position;
  xid: number;
  table: TableName;
  op: ChangeOp;
  committedAt: string;
  oldJson: string | null;
  dataJson: string | null;
}

export function toDelivery(routed: RoutedChange): Delivery {
  const { change } = routed;
  return {
    accountId: routed.accountId,
    lsn: change.lsn,
    position: { lsn: parseLsn(change.lsn), seq: change.seq },
    xid: change.xid,
    table: change.table,
    op: change.op,
    committedAt: change.committed_at,
    oldJson: change.old === null ? null : JSON.stringify(change.old),
    dataJson: change.data === null ? null : JSON.stringify(change.data),
  };
}

/** Bytes a change takes in a request body, near enough for batching. */
export function deliveryBytes(d: Delivery): number {
  return 160 + (d.oldJson?.length ?? 0) + (d.dataJson?.length ?? 0);
}
