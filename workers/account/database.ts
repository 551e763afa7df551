import postgres, { type Sql } from 'postgres';
import { errorMessage } from '../../src/errors.ts';
import { pgSocket } from './pg-socket.ts';

/** Postgres clients made so far in this isolate: tests use it to prove a path makes none. */
export const databaseStats = { clients: 0 };

/**
 * A Postgres client over the Hyperdrive binding (pooled at the edge). Plain TCP: the Worker
 * talks to Hyperdrive, which holds the TLS connection to the origin. Prefer withDatabase, which
 * closes it after one operation.
 */
export function database(binding: Hyperdrive, max = 1): Sql {
  databaseStats.clients++;
  // `socket` is a documented option that postgres.js's types leave out.
  const options = { max, ssl: false, socket: pgSocket, fetch_types: false, connect_timeout: 10, idle_timeout: 5, onnotice: () => {} };
  return postgres(binding.connectionString, options as postgres.Options<Record<string, never>>);
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
 * Runs one operation on its own connection and closes it right after, so that no connection
 * lingers between the object's events (a Worker's sockets belong to the event that opened them).
 * Failures come back as DatabaseError naming the operation.
 */
export async function withDatabase<T>(binding: Hyperdrive, operation: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = database(binding);
  try {
    return await fn(sql);
  } catch (err) {
    throw new DatabaseError(operation, { cause: err });
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}
