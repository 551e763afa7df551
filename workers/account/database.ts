import postgres, { type Sql } from 'postgres';

/**
 * A Postgres client over the Hyperdrive binding (pooled at the edge). One per operation: a
 * Worker's sockets belong to the request that opened them. It is never `end()`ed: postgres.js's
 * Workers build rejects unhandled on end() (porsager/postgres#1202) and the runtime closes the
 * socket when the invocation finishes.
 */
export function database(binding: Hyperdrive): Sql {
  return postgres(binding.connectionString, {
    max: 1,
    fetch_types: false,
    prepare: true,
    connect_timeout: 10,
    idle_timeout: 5,
    onnotice: () => {},
  });
}

/** Postgres could not be reached or answered with an error: the caller may retry later. */
export class DatabaseError extends Error {
  override name = 'DatabaseError';
  constructor(readonly operation: string, options: { cause: unknown }) {
    super(`${operation} failed: ${options.cause instanceof Error ? options.cause.message : String(options.cause)}`, options);
  }
}
