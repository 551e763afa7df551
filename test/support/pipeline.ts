import type { Sql, TransactionSql } from 'postgres';

type Queryable = Sql | TransactionSql;
import { parseLsn, type Lsn } from '../../src/lsn.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { RecordingSink } from './recording-sink.ts';
import { NODE_REPLICATOR, ReplicatorProcess } from './replicator-process.ts';

export const SECRET = 'test-secret-0123456789';

/** A fresh database, a recording sink and what it takes to run replicators against them. */
export class Pipeline {
  readonly processes: ReplicatorProcess[] = [];

  private constructor(
    readonly db: TestDatabase,
    readonly sink: RecordingSink,
  ) {}

  /** `serverUrl`: a cluster of the test's own instead of the run's (e.g. to measure its WAL alone). */
  static async create(prefix: string, serverUrl?: string): Promise<Pipeline> {
    const db = await createTestDatabase(prefix, { serverUrl });
    const sink = await new RecordingSink(SECRET).start();
    return new Pipeline(db, sink);
  }

  get sql(): Sql {
    return this.db.sql;
  }

  get slot(): string {
    return this.db.name;
  }

  env(overrides: Record<string, string> = {}): Record<string, string> {
    return {
      DATABASE_URL: this.db.url,
      EDGE_URL: this.sink.url,
      REPLICATOR_SECRET: SECRET,
      SLOT_NAME: this.slot,
      PUBLICATION_NAME: 'edgeplane',
      RETRY_BASE_MS: '20',
      RETRY_MAX_MS: '200',
      FORWARD_TIMEOUT_MS: '1000',
      ...overrides,
    };
  }

  async replicator(overrides: Record<string, string> = {}, waitForStreaming = true, command: readonly string[] = NODE_REPLICATOR): Promise<ReplicatorProcess> {
    const p = new ReplicatorProcess(this.env(overrides), command);
    this.processes.push(p);
    if (waitForStreaming) await p.streaming();
    return p;
  }

  async confirmedFlush(): Promise<Lsn> {
    const [row] = await this.sql<{ lsn: string | null }[]>`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = ${this.slot}`;
    return row?.lsn ? parseLsn(row.lsn) : 0n;
  }

  /** WAL the slot keeps on the server: the current position minus its restart_lsn. */
  async retainedWal(): Promise<number> {
    const [row] = await this.sql<{ bytes: string | null }[]>`
      select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::text as bytes from pg_replication_slots where slot_name = ${this.slot}`;
    return Number(row?.bytes ?? Number.NaN);
  }

  async currentWal(): Promise<Lsn> {
    const [row] = await this.sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
    return parseLsn(row!.lsn);
  }

  async close(): Promise<void> {
    for (const p of this.processes) await p.stop();
    await this.sink.stop();
    await this.db.drop();
  }
}

export async function insertAccount(sql: Queryable, name = `acct-${Math.random().toString(36).slice(2, 8)}`): Promise<string> {
  const [row] = await sql<{ id: string }[]>`insert into accounts (name, slug) values (${name}, ${name}) returning id::text`;
  return row!.id;
}

export async function insertActor(sql: Queryable, accountId: string, name = 'actor'): Promise<string> {
  const [row] = await sql<{ id: string }[]>`insert into actors (account_id, name, type) values (${accountId}, ${name}, 'account_user') returning id::text`;
  return row!.id;
}

/** `n` actors named `${tag}-1` .. `${tag}-n` in one statement, in that order; returns their names. */
export async function insertActors(sql: Queryable, accountId: string, tag: string, n: number): Promise<string[]> {
  await sql`insert into actors (account_id, name, type) select ${accountId}, ${tag} || '-' || g, 'account_user' from generate_series(1, ${n}) g order by g`;
  return Array.from({ length: n }, (_, i) => `${tag}-${i + 1}`);
}
