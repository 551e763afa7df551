import type { Sql } from 'postgres';
import type { ChangeOp } from '../../src/change.ts';
import { formatLsn, type Lsn, parseLsn, type Position } from '../../src/lsn.ts';
import type { TableName } from '../../src/tables.ts';
import type { Delivery } from '../deliver/delivery.ts';

interface LogRow {
  lsn: string;
  seq: number;
  xid: string | null;
  table_name: TableName;
  op: ChangeOp;
  old: string | null;
  data: string | null;
  committed_at: string;
}

/**
 * One page of an account's changes from change_logs, in position order, after `after` (null: from
 * the start) and committed before `loggedThrough`: the writer's batches land in any order, and only
 * below the acknowledged position is every row there, so reading past it could skip a row that is
 * logged a moment later. Rows come back as JSON text, ready to send. Rows logged before
 * committed_at existed carry their insertion time, which is never earlier than their commit.
 */
export async function readChangeLogPage(sql: Sql, accountId: string, after: Position | null, loggedThrough: Lsn, limit: number): Promise<Delivery[]> {
  const rows = await sql<LogRow[]>`
    select lsn, seq, xid::text, table_name, op, old_data::text as old, data::text as data,
           to_char(coalesce(committed_at, inserted_at) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as committed_at
    from change_logs
    where account_id = ${accountId} and (lsn::pg_lsn, seq) > (${after ? formatLsn(after.lsn) : '0/0'}::pg_lsn, ${after?.seq ?? -1}::int)
      and lsn::pg_lsn < ${formatLsn(loggedThrough)}::pg_lsn
    order by lsn::pg_lsn, seq
    limit ${limit}`;
  return rows.map((r) => ({
    accountId,
    lsn: r.lsn,
    position: { lsn: parseLsn(r.lsn), seq: r.seq },
    xid: Number(r.xid ?? 0),
    table: r.table_name,
    op: r.op,
    committedAt: r.committed_at,
    oldJson: r.old,
    dataJson: r.data,
  }));
}
