import type { Writable } from 'node:stream';
import type { Sql } from 'postgres';

/**
 * Runs `COPY ... FROM STDIN` with `data` and resolves when the server committed it, or rejects with
 * the server's error.
 *
 * Why not simply `(await sql.unsafe(copy).writable()).end(data, callback)`: in postgres.js 3.4.x the
 * callback of `end` only runs on the server's CommandComplete. When the server refuses the data
 * after CopyDone (a unique violation, a bad value, a restart), the error goes to the query, whose
 * promise already resolved with the stream, so neither the callback nor an `error` event ever comes
 * and the caller waits forever. Every error of the statement does pass through the query's `reject`,
 * so this wraps it.
 *
 * The connection must run nothing else meanwhile: postgres.js pipelines queries onto busy pooled
 * connections, and a query sent during COPY breaks it. Give each writer its own `max: 1` client.
 */
export async function copyIn(sql: Sql, command: string, data: string | Buffer): Promise<void> {
  const query = sql.unsafe(command) as unknown as PromiseLike<Writable> & { reject: (err: unknown) => void; writable(): Promise<Writable> };
  let fail!: (err: unknown) => void;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {});
  const reject = query.reject;
  query.reject = (err: unknown) => {
    fail(err);
    reject(err);
  };
  const stream = await query.writable();
  const written = new Promise<void>((resolve, rejectWrite) => {
    stream.once('error', rejectWrite);
    // Node calls it with the error when the stream failed instead of finishing.
    stream.end(data, (err?: Error | null) => (err ? rejectWrite(err) : resolve()));
  });
  written.catch(() => {});
  await Promise.race([written, failed]);
}
