import { DurableObject } from 'cloudflare:workers';
import { asId, uuidToBytes } from '../../src/ids.ts';
import { Database } from '../account/database.ts';
import { log } from '../log.ts';
import { shardOf } from './shards.ts';

/** Connects of one shard that may wait at once for an account it does not know (beyond them: no wait). */
export const MAX_ACCOUNT_WAITERS = 16;

/**
 * One shard's ids, read once from Postgres. `pg_current_wal_lsn()` keeps Hyperdrive from answering
 * from its query cache; the range uses the primary key's index.
 */
const FILL_QUERY = `select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text as lsn,
  (select coalesce(jsonb_agg(id::text), '[]'::jsonb) from accounts where id between $1::uuid and $2::uuid and deleted_at is null) as ids`;

/**
 * One shard of the directory of existing accounts (docs/architecture.md#a-device-connects): the ids
 * whose first two hex digits are the shard's name. The Worker asks it before it routes a connect
 * to an account's object, so that a connect naming an account the edge does not know costs no
 * Postgres query and creates no object. Fed by the changes route after an account's object applied
 * a batch; a shard that was never filled loads its ids from Postgres once (a fresh Worker on an
 * existing database).
 */
export class AccountDirectory extends DurableObject<Env> {
  private readonly sql: SqlStorage;
  private readonly db: Database;
  /** The shard this object holds once it was filled from Postgres; null before. */
  private filled: string | null;
  /** Connects waiting for an account to be recorded, by account id. */
  private readonly waiters = new Map<string, Set<(known: boolean) => void>>();
  private waiting = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.db = new Database(env.DB, env as unknown as Record<string, unknown>);
    this.sql.exec('create table if not exists directory_accounts (id blob primary key) without rowid');
    this.sql.exec('create table if not exists directory_meta (key text primary key, value text not null)');
    this.filled = (this.sql.exec<{ value: string }>(`select value from directory_meta where key = 'filled'`).toArray()[0]?.value as string | undefined) ?? null;
  }

  /**
   * Whether the account exists (and is not deleted) as far as the edge knows. An account it does
   * not know may have been committed a moment ago, its row not delivered yet: up to `waitMs` (and
   * MAX_ACCOUNT_WAITERS connects at once) the answer waits for `record` to bring it; no polling,
   * no query.
   */
  async known(accountIdText: string, waitMs = 0): Promise<boolean> {
    const id = asId<'account'>(accountIdText);
    if (!id) return false;
    await this.fill(shardOf(id));
    if (this.has(id)) return true;
    if (waitMs <= 0 || this.waiting >= MAX_ACCOUNT_WAITERS) return false;
    this.waiting++;
    try {
      return await new Promise<boolean>((resolve) => {
        const set = this.waiters.get(id) ?? new Set();
        this.waiters.set(id, set);
        const done = (known: boolean) => {
          clearTimeout(timer);
          set.delete(done);
          if (set.size === 0) this.waiters.delete(id);
          resolve(known);
        };
        const timer = setTimeout(() => done(false), waitMs);
        set.add(done);
      });
    } finally {
      this.waiting--;
    }
  }

  private has(id: string): boolean {
    return this.sql.exec('select 1 from directory_accounts where id = ?', uuidToBytes(id)).toArray().length > 0;
  }

  /** What the account's object holds after a batch: the account row (any state but deleted), or none. */
  async record(accountIdText: string, exists: boolean): Promise<void> {
    const id = asId<'account'>(accountIdText);
    if (!id) throw new Error(`not an account id: ${accountIdText}`);
    if (this.filled !== null && this.filled !== shardOf(id)) throw new Error(`directory shard ${this.filled} told about account ${id}`);
    if (exists) {
      this.sql.exec('insert or ignore into directory_accounts (id) values (?)', uuidToBytes(id));
      for (const wake of [...(this.waiters.get(id) ?? [])]) wake(true);
    } else this.sql.exec('delete from directory_accounts where id = ?', uuidToBytes(id));
  }

  /** Ids this shard holds, and connects waiting (tests, logs). */
  async size(): Promise<{ filled: string | null; accounts: number; waiting: number }> {
    const [row] = this.sql.exec<{ n: number }>('select count(*) as n from directory_accounts').toArray();
    return { filled: this.filled, accounts: row?.n ?? 0, waiting: this.waiting };
  }

  /**
   * Loads the shard's ids from Postgres, once. No `record` runs meanwhile (blockConcurrencyWhile);
   * what was recorded before is replaced by Postgres's truth, which every delivered change had
   * already committed to. A database failure throws (the connect answers 503) and a later call retries.
   */
  private async fill(shard: string): Promise<void> {
    if (this.filled === shard) return;
    if (this.filled !== null) throw new Error(`directory shard ${this.filled} asked about shard ${shard}`);
    await this.ctx.blockConcurrencyWhile(async () => {
      if (this.filled !== null) return;
      const started = Date.now();
      const lo = `${shard}000000-0000-0000-0000-000000000000`;
      const hi = `${shard}ffffff-ffff-ffff-ffff-ffffffffffff`;
      const [row] = await this.db.run(`loading directory shard ${shard}`, (sql) => sql.unsafe<{ lsn: string; ids: string[] }[]>(FILL_QUERY, [lo, hi]));
      const ids = row?.ids ?? [];
      this.ctx.storage.transactionSync(() => {
        this.sql.exec('delete from directory_accounts');
        for (const id of ids) this.sql.exec('insert or ignore into directory_accounts (id) values (?)', uuidToBytes(id));
        this.sql.exec(`insert or replace into directory_meta (key, value) values ('filled', ?)`, shard);
      });
      this.filled = shard;
      log.info({ component: 'directory', shard, accounts: ids.length, lsn: row?.lsn ?? null, ms: Date.now() - started }, 'directory shard loaded');
    });
  }
}
