import { AccountState } from '../../src/access/account-state.ts';
import type { StorageOp } from '../../src/access/apply-change.ts';
import type { AccountId } from '../../src/ids.ts';
import type { Cached } from '../../src/records.ts';
import type { TableName } from '../../src/tables.ts';
import { CACHE_TABLES, encodeCached } from './cache-tables.ts';
import { jsonPages } from './json-pages.ts';

/** Rows a page of `load` reads: a few hundred kilobytes of JSON, so that a large account never is one string. */
const LOAD_PAGE_ROWS = 4_096;

const upsertSql = Object.fromEntries(
  Object.entries(CACHE_TABLES).map(([table, codec]) => [
    table,
    `insert or replace into ${codec.name} (${codec.columns.join(', ')}) values (${codec.columns.map(() => '?').join(', ')})`,
  ]),
) as Record<keyof typeof CACHE_TABLES, string>;

const deleteSql = Object.fromEntries(
  Object.entries(CACHE_TABLES).map(([table, codec]) => [table, `delete from ${codec.name} where ${codec.keyColumns.map((c) => `${c} = ?`).join(' and ')}`]),
) as Record<keyof typeof CACHE_TABLES, string>;

/** Reads and writes the object's compact caches. Calls are synchronous; group them in transactionSync. */
export class CacheStore {
  constructor(private readonly sql: SqlStorage) {}

  /**
   * The account's state after a wake or a restart: each table is read from SQLite, a page at a
   * time, only when the state first needs it (docs/architecture.md#after-a-wake).
   */
  load(accountId: AccountId): AccountState {
    return new AccountState(accountId, {
      records: (table) => this.records(table),
      earliestTokenExpiry: () => this.sql.exec<{ at: number | null }>(`select min(expires_at) as at from ${CACHE_TABLES.tokens.name}`).one().at,
    });
  }

  /** Every stored record of one table. */
  private records(table: TableName): Cached[] {
    const codec = CACHE_TABLES[table];
    const out: Cached[] = [];
    for (const rows of jsonPages(this.sql, codec.read, LOAD_PAGE_ROWS)) for (const row of rows) out.push({ table, record: codec.decode(row) } as Cached);
    return out;
  }

  put(cached: Cached): void {
    this.sql.exec(upsertSql[cached.table], ...encodeCached(cached));
  }

  delete(cached: Cached): void {
    const codec = CACHE_TABLES[cached.table];
    const values = encodeCached(cached);
    this.sql.exec(deleteSql[cached.table], ...codec.keyColumns.map((c) => values[codec.columns.indexOf(c)] ?? null));
  }

  write(ops: readonly StorageOp[]): void {
    for (const op of ops) {
      if (op.kind === 'put') this.put(op.cached);
      else if (op.kind === 'delete') this.delete(op.cached);
      else this.sql.exec(`delete from ${CACHE_TABLES[op.table].name}`);
    }
  }
}
