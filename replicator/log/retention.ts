import type { Sql } from 'postgres';
import { parseLsn, type Position } from '../../src/lsn.ts';

export interface Pruned {
  deleted: number;
  /** Accounts whose undelivered rows were older than the retention: each re-hydrates, then resumes past `to`. */
  rehydrate: { accountId: string; to: Position }[];
}

/**
 * change_logs retention that respects delivery cursors (docs/architecture.md#10-one-account-never-holds-another).
 * A row older than the retention goes once its account's object has it; an account whose oldest
 * undelivered row is older than the retention is first marked to re-hydrate past its newest such
 * row, and then those rows go too. Deletes `batchSize` rows per statement so that no lock is held long.
 */
export async function pruneChangeLogs(sql: Sql, retentionDays: number, batchSize = 5000, signal?: AbortSignal): Promise<Pruned> {
  const cutoff = new Date(Date.now() - retentionDays * 86_400_000);
  const overdue = await sql<{ account_id: string; lsn: string; seq: number }[]>`
    select distinct on (l.account_id) l.account_id::text, l.lsn, l.seq
    from change_logs l join delivery_cursors c on c.account_id = l.account_id
    where l.inserted_at < ${cutoff} and (c.lsn is null or (l.lsn::pg_lsn, l.seq) > (c.lsn, c.seq))
    order by l.account_id, l.lsn::pg_lsn desc, l.seq desc`;
  for (const o of overdue) {
    await sql`
      update delivery_cursors set needs_rehydrate = true, updated_at = now(),
        skip_lsn = case when skip_lsn is null or (skip_lsn, skip_seq) < (${o.lsn}::pg_lsn, ${o.seq}::int) then ${o.lsn}::pg_lsn else skip_lsn end,
        skip_seq = case when skip_lsn is null or (skip_lsn, skip_seq) < (${o.lsn}::pg_lsn, ${o.seq}::int) then ${o.seq}::int else skip_seq end
      where account_id = ${o.account_id}`;
  }
  let deleted = 0;
  for (;;) {
    if (signal?.aborted) break;
    const result = await sql`
      delete from change_logs where id in (
        select l.id from change_logs l left join delivery_cursors c on c.account_id = l.account_id
        where l.inserted_at < ${cutoff} and (
          c.account_id is null
          or (c.lsn is not null and (l.lsn::pg_lsn, l.seq) <= (c.lsn, c.seq))
          or (c.needs_rehydrate and c.skip_lsn is not null and (l.lsn::pg_lsn, l.seq) <= (c.skip_lsn, c.skip_seq)))
        limit ${batchSize})`;
    deleted += result.count;
    if (result.count < batchSize) break;
  }
  return { deleted, rehydrate: overdue.map((o) => ({ accountId: o.account_id, to: { lsn: parseLsn(o.lsn), seq: o.seq } })) };
}
