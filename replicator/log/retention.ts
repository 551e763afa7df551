import type { Sql } from 'postgres';

/** Deletes change_logs rows older than `days`, `batchSize` rows per statement so that no lock is held long. */
export async function pruneChangeLogs(sql: Sql, days: number, batchSize = 5000, signal?: AbortSignal): Promise<number> {
  let total = 0;
  for (;;) {
    if (signal?.aborted) return total;
    const result = await sql`
      delete from change_logs where id in (
        select id from change_logs where inserted_at < now() - make_interval(days => ${days}) limit ${batchSize})`;
    total += result.count;
    if (result.count < batchSize) return total;
  }
}
