import { z } from 'zod';
import postgres, { type Sql } from 'postgres';
import { errorMessage } from '../../src/errors.ts';
import { countSetting, readSettings } from '../../src/settings.ts';
import { pgSocket } from './pg-socket.ts';

/** Postgres clients made so far in this isolate: tests use it to prove a path makes none. */
export const databaseStats = { clients: 0 };

export const databaseSettingsSchema = z.object({
  DATABASE_STALL_MS: countSetting(
    'milliseconds an edge database operation may go without a byte from Postgres before it fails with 503 and is retried (docs/architecture.md#database-stalls)',
    8_000,
    100,
  ),
});

export class DatabaseSettingsError extends Error {
  override name = 'DatabaseSettingsError';
}

/** Postgres could not be reached or answered with an error: the caller may retry later. */
export class DatabaseError extends Error {
  override name = 'DatabaseError';
  constructor(
    readonly operation: string,
    options: { cause: unknown },
  ) {
    super(`${operation} failed: ${errorMessage(options.cause)}`, options);
  }
}

/**
 * The edge's Postgres over the Hyperdrive binding (pooled at the edge; plain TCP to Hyperdrive,
 * which holds the TLS connection to the origin). Every operation runs on a connection of its own,
 * closed right after, so that none lingers between the object's events (a Worker's sockets belong
 * to the event that opened them).
 *
 * An operation that goes DATABASE_STALL_MS without a byte from Postgres fails
 * (docs/architecture.md#database-stalls): a statement waiting on a lock, or a connection lost
 * without a reset, must not hold the object (a hydration holds every batch and connect of its
 * account) for ever. A stall rather than a total deadline: a large account's healthy hydration
 * streams pages for as long as it needs. The default (8 s) is below the replicator's default
 * FORWARD_TIMEOUT_MS, so that a stalled batch comes back to it as a 503 naming the operation
 * rather than as a timeout, and below the platform's 30 s for blockConcurrencyWhile. The stalled
 * statement is left to finish or fail on its own and its connection closed then (closing a connection under a statement crashes the local
 * run's Hyperdrive proxy); whatever it did is idempotent, as every edge write is.
 */
export class Database {
  readonly stallMs: number;

  constructor(
    private readonly binding: Hyperdrive,
    env: Record<string, unknown>,
  ) {
    const read = readSettings(databaseSettingsSchema, env);
    if (!read.ok) throw new DatabaseSettingsError(`invalid database settings: ${read.problems}`);
    this.stallMs = read.value.DATABASE_STALL_MS;
  }

  /**
   * Runs one operation on its own connection; failures and stalls come back as DatabaseError
   * naming the operation. `abandoned` is aborted when the operation stalled: work that goes on
   * afterwards must not act on what it reads (the caller has moved on).
   */
  async run<T>(operation: string, fn: (sql: Sql, abandoned: AbortSignal) => Promise<T>): Promise<T> {
    let heard = Date.now();
    const sql = pgClient(this.binding, 1, () => {
      heard = Date.now();
    });
    const abandon = new AbortController();
    const work = fn(sql, abandon.signal);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<never>((_, reject) => {
      const check = () => {
        const quiet = Date.now() - heard;
        if (quiet < this.stallMs) {
          timer = setTimeout(check, this.stallMs - quiet);
          return;
        }
        abandon.abort();
        reject(new DatabaseError(operation, { cause: new Error(`no answer from the database for ${this.stallMs} ms`) }));
      };
      timer = setTimeout(check, this.stallMs);
    });
    const close = () => sql.end({ timeout: 0 }).catch(() => {});
    try {
      const result = await Promise.race([work, stalled]);
      clearTimeout(timer);
      await close();
      return result;
    } catch (err) {
      clearTimeout(timer);
      // A failed operation's connection closes now; a stalled one's once its statement is over.
      if (abandon.signal.aborted) work.then(close, close);
      else await close();
      throw err instanceof DatabaseError ? err : new DatabaseError(operation, { cause: err });
    }
  }
}

/**
 * A postgres.js client over the binding, of up to `max` connections; `heard` runs whenever bytes
 * cross a socket of it either way. The edge's own operations go through Database.run.
 */
export function pgClient(binding: Hyperdrive, max: number, heard: () => void = () => {}): Sql {
  databaseStats.clients++;
  // `socket` is a documented option that postgres.js's types leave out.
  const options = { max, ssl: false, socket: pgSocket(heard), fetch_types: false, connect_timeout: 10, idle_timeout: 5, onnotice: () => {} };
  return postgres(binding.connectionString, options as postgres.Options<Record<string, never>>);
}
