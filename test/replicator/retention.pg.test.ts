import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { pruneChangeLogs } from '../../replicator/log/retention.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase('retention');
});
beforeEach(async () => {
  await db.sql`truncate change_logs, delivery_cursors`;
});
afterAll(async () => {
  await db.drop();
});

const DELIVERED = '11111111-1111-4111-8111-111111111111';
const LAGGING = '22222222-2222-4222-8222-222222222222';

/** Rows of one account at 0/1:seq .. 0/n:seq, the first `old` of them older than 30 days. */
async function rows(account: string, n: number, old: number, seq = 0): Promise<void> {
  await db.sql`
    insert into change_logs (account_id, lsn, seq, table_name, op, vsn, inserted_at)
    select ${account}, '0/' || to_hex(g), ${seq}, 'actors', 'insert', 1,
           case when g <= ${old} then now() - interval '31 days' else now() - interval '29 days' end
    from generate_series(1, ${n}) g`;
}

it('deletes delivered change_logs rows older than the retention, in small batches, and keeps the rest', async () => {
  await rows(DELIVERED, 40, 25);
  await db.sql`insert into delivery_cursors (account_id, lsn, seq) values (${DELIVERED}, '0/28', 0)`;
  expect(await pruneChangeLogs(db.sql, 30, 7)).toEqual({ deleted: 25, rehydrate: [] });
  const [row] = await db.sql<{ n: number; oldest: boolean }[]>`
    select count(*)::int as n, bool_and(inserted_at > now() - interval '30 days') as oldest from change_logs`;
  expect(row).toEqual({ n: 15, oldest: true });
  expect(await pruneChangeLogs(db.sql, 30, 7)).toEqual({ deleted: 0, rehydrate: [] });
});

it('keeps undelivered rows younger than the retention, and marks an account behind for longer to re-hydrate past what goes', async () => {
  // Delivered up to 0/5: rows 0/6..0/10 are undelivered and older than the retention, 0/11..0/20 younger.
  await rows(LAGGING, 20, 10);
  await db.sql`insert into delivery_cursors (account_id, lsn, seq) values (${LAGGING}, '0/5', 0)`;
  // Another account, delivered only up to 0/2 but with nothing older than the retention: untouched.
  await rows(DELIVERED, 4, 0, 1);
  await db.sql`insert into delivery_cursors (account_id, lsn, seq) values (${DELIVERED}, '0/2', 1)`;
  const pruned = await pruneChangeLogs(db.sql, 30, 3);
  expect(pruned).toEqual({ deleted: 10, rehydrate: [{ accountId: LAGGING, to: { lsn: 0xan, seq: 0 } }] });
  const [cursor] = await db.sql`select lsn::text, seq, needs_rehydrate, skip_lsn::text, skip_seq from delivery_cursors where account_id = ${LAGGING}`;
  expect(cursor).toEqual({ lsn: '0/5', seq: 0, needs_rehydrate: true, skip_lsn: '0/A', skip_seq: 0 });
  const left = await db.sql<{ account_id: string; n: number; first: string }[]>`
    select account_id::text, count(*)::int as n, min(lsn::pg_lsn)::text as first from change_logs group by account_id order by account_id`;
  expect(left).toEqual([
    { account_id: DELIVERED, n: 4, first: '0/1' },
    { account_id: LAGGING, n: 10, first: '0/B' },
  ]);
});
