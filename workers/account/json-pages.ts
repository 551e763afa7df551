import type { JsonRow, JsonTable, JsonValue } from './json-rows.ts';

/**
 * Reads a whole table, `pageRows` rows a page, each page built inside SQLite as one JSON array of
 * row arrays and parsed with one JSON.parse: crossing from SQLite into JavaScript row by row, an
 * object per row and an ArrayBuffer per id, was most of a woken object's load (bench/RESULTS.md
 * "After hibernation"). Pages follow the primary key (a range scan each), so that a large table
 * never becomes one string in memory. Synchronous, like every SQLite call: consume it before
 * any await.
 */
export function* jsonPages(sql: SqlStorage, table: JsonTable, pageRows: number): Generator<JsonRow[]> {
  const keys = table.key.map((k) => k.column).join(', ');
  const bound = table.key.map((k) => (k.blob ? 'unhex(?)' : '?')).join(', ');
  // The subquery takes the page's rows in key order; the aggregate may see them in any order
  // (ordering it would cost a sort), so the page's end is found as its greatest key below.
  const page = (where: string) =>
    `select json_group_array(json_array(${table.values.join(', ')})) as page from (select * from ${table.name} ${where} order by ${keys} limit ${pageRows})`;
  const first = page('');
  const next = page(`where (${keys}) > (${bound})`);
  let after: JsonValue[] | null = null;
  for (;;) {
    const text = (after === null ? sql.exec<{ page: string }>(first) : sql.exec<{ page: string }>(next, ...(after as SqlStorageValue[]))).one().page;
    const rows = JSON.parse(text) as JsonRow[];
    if (rows.length > 0) yield rows;
    if (rows.length < pageRows) return;
    after = greatestKey(table, rows);
  }
}

/** Lower-case hex text orders as its bytes do, numbers as numbers: the key order SQLite scanned in. */
function greatestKey(table: JsonTable, rows: readonly JsonRow[]): JsonValue[] {
  const keyOf = (row: JsonRow) => table.key.map((k) => row[k.at] as string | number);
  let best = keyOf(rows[0]!);
  for (const row of rows) {
    const key = keyOf(row);
    for (let i = 0; i < key.length; i++) {
      if (key[i]! === best[i]!) continue;
      if (key[i]! > best[i]!) best = key;
      break;
    }
  }
  return best;
}
