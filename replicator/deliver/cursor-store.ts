import type { Sql } from 'postgres';
import { formatLsn, parseLsn, type Position } from '../../src/lsn.ts';

/** An account's durable delivery cursor (docs/protocol.md#delivery-cursors). */
export interface Cursor {
  accountId: string;
  /** The last position its object answered 2xx for; null: none yet. */
  delivered: Position | null;
  /** Its object must reload the account before it gets more changes. */
  needsRehydrate: boolean;
  /** After the reload, delivery resumes past this position (rows up to it were pruned). */
  skipTo: Position | null;
}

interface CursorRow {
  account_id: string;
  lsn: string | null;
  seq: number | null;
  needs_rehydrate: boolean;
  skip_lsn: string | null;
  skip_seq: number | null;
}

const position = (lsn: string | null, seq: number | null): Position | null => (lsn === null || seq === null ? null : { lsn: parseLsn(lsn), seq });

function toCursor(r: CursorRow): Cursor {
  return { accountId: r.account_id, delivered: position(r.lsn, r.seq), needsRehydrate: r.needs_rehydrate, skipTo: position(r.skip_lsn, r.skip_seq) };
}

/**
 * The delivery_cursors table: which accounts are behind the log, and where each one's object is.
 * Written in batches off the live path (a cursor may trail what was delivered: the object skips a
 * replay), and only ever forwards.
 */
export class CursorStore {
  constructor(private readonly db: () => Sql) {}

  private get sql(): Sql {
    return this.db();
  }

  /**
   * Accounts whose object is behind change_logs or must re-hydrate. One index probe per cursor
   * (change_logs_account_position_index): the ORDER BY keeps the planner on the index even for an
   * account with no rows past its cursor.
   */
  async behind(): Promise<Cursor[]> {
    const rows = await this.sql<CursorRow[]>`
      select c.account_id::text, c.lsn::text, c.seq, c.needs_rehydrate, c.skip_lsn::text, c.skip_seq
      from delivery_cursors c
      where c.needs_rehydrate or exists (
        select 1 from change_logs l
        where l.account_id = c.account_id and (l.lsn::pg_lsn, l.seq) > (coalesce(c.lsn, '0/0'), coalesce(c.seq, -1))
        order by l.account_id, l.lsn::pg_lsn, l.seq limit 1)`;
    return rows.map(toCursor);
  }

  async read(accountId: string): Promise<Cursor | undefined> {
    const [row] = await this.sql<CursorRow[]>`
      select account_id::text, lsn::text, seq, needs_rehydrate, skip_lsn::text, skip_seq from delivery_cursors where account_id = ${accountId}`;
    return row && toCursor(row);
  }

  /** Moves cursors forward (never back: two writers, or a flush that lost a race, cannot undo progress). */
  async advance(updates: readonly { accountId: string; position: Position }[]): Promise<void> {
    if (updates.length === 0) return;
    await this.sql`
      insert into delivery_cursors as c (account_id, lsn, seq)
      select * from unnest(${this.sql.array(updates.map((u) => u.accountId))}::uuid[],
                           ${this.sql.array(updates.map((u) => formatLsn(u.position.lsn)))}::pg_lsn[],
                           ${this.sql.array(updates.map((u) => u.position.seq))}::int[])
      on conflict (account_id) do update set lsn = excluded.lsn, seq = excluded.seq, updated_at = now()
      where c.lsn is null or (c.lsn, c.seq) < (excluded.lsn, excluded.seq)`;
  }

  /**
   * The object re-hydrated: the mark goes and the cursor moves past the pruned rows, at once (a
   * crash right after must not re-hydrate again for nothing, nor resend pruned positions).
   */
  async rehydrated(accountId: string, to: Position | null): Promise<void> {
    const lsn = to && formatLsn(to.lsn);
    const seq = to?.seq ?? null;
    await this.sql`
      update delivery_cursors c set needs_rehydrate = false, skip_lsn = null, skip_seq = null, updated_at = now(),
        lsn = case when ${lsn}::pg_lsn is not null and (c.lsn is null or (c.lsn, c.seq) < (${lsn}::pg_lsn, ${seq}::int)) then ${lsn}::pg_lsn else c.lsn end,
        seq = case when ${lsn}::pg_lsn is not null and (c.lsn is null or (c.lsn, c.seq) < (${lsn}::pg_lsn, ${seq}::int)) then ${seq}::int else c.seq end
      where account_id = ${accountId}`;
  }
}
