import { afterAll, beforeAll, expect, it } from 'vitest';
import { pruneChangeLogs } from '../../replicator/log/retention.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase('retention');
});
afterAll(async () => {
  await db.drop();
});

it('deletes change_logs rows older than the retention, in small batches, and keeps the rest', async () => {
  await db.sql`
    insert into change_logs (account_id, lsn, seq, table_name, op, vsn, inserted_at)
    select gen_random_uuid(), '0/' || to_hex(g), 0, 'actors', 'insert', 1,
           case when g <= 25 then now() - interval '31 days' else now() - interval '29 days' end
    from generate_series(1, 40) g`;
  expect(await pruneChangeLogs(db.sql, 30, 7)).toBe(25);
  const [row] = await db.sql<{ n: number; oldest: boolean }[]>`
    select count(*)::int as n, bool_and(inserted_at > now() - interval '30 days') as oldest from change_logs`;
  expect(row).toEqual({ n: 15, oldest: true });
  expect(await pruneChangeLogs(db.sql, 30, 7)).toBe(0);
});
