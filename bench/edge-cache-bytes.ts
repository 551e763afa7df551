/**
 * Part 3 of the edge benchmark: bytes of a record in the object's SQLite cache
 * (workers/account/cache-tables.ts `storedBytes`) against the full row as the replicator sends it
 * (JSON of every column, timestamps as `...123456Z`), on the real rows in Postgres. Plain Node:
 * the codecs and the row decoder are pure.
 */
import type { Sql } from 'postgres';
import type { Row } from '../src/json.ts';
import { decodeRow } from '../src/records.ts';
import { DOMAIN_TABLES } from '../src/tables.ts';
import { replicatorRow } from '../test/support/recorded-transaction.ts';
import { storedBytes } from '../workers/account/cache-tables.ts';
import { fmt } from './edge-stats.ts';

export interface TableBytes {
  table: string;
  rows: number;
  cache: number;
  json: number;
}

export async function cacheBytes(sql: Sql, say: (line: string) => void): Promise<TableBytes[]> {
  say('\n3. Cache bytes per record vs full-row JSON (live rows of every account in this run)');
  const out: TableBytes[] = [];
  for (const table of DOMAIN_TABLES) {
    const rows = await sql<{ row: Row }[]>`select to_jsonb(t) as row from ${sql(table)} t`;
    let cache = 0;
    let json = 0;
    let n = 0;
    for (const { row } of rows) {
      const sent = replicatorRow(row);
      const { deleted, cached } = decodeRow(table, sent);
      if (deleted) continue;
      n++;
      cache += storedBytes(cached);
      json += Buffer.byteLength(JSON.stringify(sent));
    }
    out.push({ table, rows: n, cache, json });
  }
  say(`  ${'table'.padEnd(24)} ${'rows'.padStart(7)} ${'cache B/rec'.padStart(12)} ${'JSON B/rec'.padStart(11)} ${'ratio'.padStart(7)}`);
  for (const t of out) {
    if (t.rows === 0) continue;
    say(
      `  ${t.table.padEnd(24)} ${fmt(t.rows).padStart(7)} ${(t.cache / t.rows).toFixed(1).padStart(12)} ${(t.json / t.rows).toFixed(1).padStart(11)} ${(t.json / t.cache).toFixed(2).padStart(6)}x`,
    );
  }
  const present = out.filter((t) => t.rows > 0);
  const cache = present.reduce((n, t) => n + t.cache, 0);
  const json = present.reduce((n, t) => n + t.json, 0);
  const rows = present.reduce((n, t) => n + t.rows, 0);
  say(`  overall, weighted by this run's rows: ${fmt(rows)} records, ${(cache / rows).toFixed(1)} vs ${(json / rows).toFixed(1)} B/record: ${(json / cache).toFixed(2)}x smaller`);
  const perTable = present.map((t) => t.json / t.rows / (t.cache / t.rows));
  const unweighted = present.reduce((n, t) => n + t.json / t.rows, 0) / present.reduce((n, t) => n + t.cache / t.rows, 0);
  say(`  overall, one record of each table: ${unweighted.toFixed(2)}x smaller; smallest table ratio ${Math.min(...perTable).toFixed(2)}x`);
  return out;
}
