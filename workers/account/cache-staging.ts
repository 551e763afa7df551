import type { Cached } from '../../src/records.ts';
import { DOMAIN_TABLES, type TableName } from '../../src/tables.ts';
import { bufferToHex, CACHE_TABLES, encodeCached, type SqlValue } from './cache-tables.ts';

const staged = (table: TableName) => `s_${CACHE_TABLES[table].name}`;

/** Blob columns travel as hex text in the JSON and are turned back into blobs by `unhex`. */
const insertSql = Object.fromEntries(
  DOMAIN_TABLES.map((table) => {
    const { columns, blobColumns } = CACHE_TABLES[table];
    const values = columns.map((c, i) => (blobColumns.includes(c) ? `unhex(json_extract(value, '$[${i}]'))` : `json_extract(value, '$[${i}]')`));
    return [table, `insert into ${staged(table)} (${columns.join(', ')}) select ${values.join(', ')} from json_each(?)`];
  }),
) as Record<TableName, string>;

/**
 * A new cache built beside the live one while a hydration streams in, page by page, each page
 * in a storage transaction of its own, then swapped in whole in the hydration's last transaction
 * (docs/architecture.md#hydration): until then the live cache is untouched, so a hydration that
 * fails half-way leaves the object as it was. Staging tables a failed one left are dropped by
 * the next `begin`.
 */
export class CacheStaging {
  constructor(private readonly sql: SqlStorage) {}

  begin(): void {
    for (const table of DOMAIN_TABLES) {
      this.sql.exec(`drop table if exists ${staged(table)}`);
      this.sql.exec(CACHE_TABLES[table].ddl(staged(table)));
    }
  }

  /**
   * Writes records with one statement per table: the page's rows as one JSON parameter, unpacked
   * by `json_each` inside SQLite (binding each value from JavaScript cost ~17 us a row, most of a
   * hydration's time).
   */
  put(records: readonly Cached[]): void {
    const byTable = new Map<TableName, SqlValue[][]>();
    for (const r of records) {
      let rows = byTable.get(r.table);
      if (!rows) byTable.set(r.table, (rows = []));
      rows.push(encodeCached(r).map((v) => (v instanceof ArrayBuffer ? bufferToHex(v) : v)));
    }
    for (const [table, rows] of byTable) this.sql.exec(insertSql[table], JSON.stringify(rows));
  }

  /** Replaces the live cache with the staged one. Call it inside the transaction that records the hydration. */
  swap(): void {
    for (const table of DOMAIN_TABLES) {
      this.sql.exec(`drop table if exists ${CACHE_TABLES[table].name}`);
      this.sql.exec(`alter table ${staged(table)} rename to ${CACHE_TABLES[table].name}`);
    }
  }
}
