/**
 * Real Postgres writes turned into the Changes the replicator would deliver for them, for tests
 * and benchmarks that feed an object directly. It runs in Node and in workerd alike: no node:
 * imports, only `postgres` types and src/.
 */
import type { Sql, TransactionSql } from 'postgres';
import { softDeleteAware, type Change } from '../../src/change.ts';
import type { Row } from '../../src/json.ts';
import type { TableName } from '../../src/tables.ts';

type Values = Record<string, unknown>;

const PG_TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00:00$/;

/**
 * A row from `to_jsonb` in the form the replicator sends (docs/architecture.md#5-fat-typed-changes): timestamps as
 * `2026-11-22T20:00:00.123456Z` rather than Postgres's `...123456+00:00` (sessions run in UTC).
 */
export function replicatorRow(row: Row): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) {
    const m = typeof v === 'string' ? PG_TIMESTAMP.exec(v) : null;
    out[k] = m ? `${m[1]}.${(m[2] ?? '').padEnd(6, '0')}Z` : v;
  }
  return out;
}

/**
 * Writes rows inside one Postgres transaction and records them as the replicator would deliver
 * them: full old and new rows, soft deletes as deletes.
 */
export class Tx {
  readonly events: { table: TableName; op: 'insert' | 'update' | 'delete'; old: Row | null; data: Row | null }[] = [];
  constructor(readonly tx: TransactionSql) {}

  async insert(table: TableName, values: Values): Promise<Row> {
    const [r] = await this.tx<{ row: Row }[]>`insert into ${this.tx(table)} ${this.tx(values as Record<string, never>)} returning to_jsonb(${this.tx(table)}.*) as row`;
    this.record(table, 'insert', null, r!.row);
    return r!.row;
  }

  /** Updates the rows matching `where` with `values` and returns the new rows. */
  async update(table: TableName, where: Values, values: Values): Promise<Row[]> {
    const olds = await this.select(table, where, true);
    const out: Row[] = [];
    for (const old of olds) {
      const [r] = await this.tx<{ row: Row }[]>`
        update ${this.tx(table)} set ${this.tx(values as Record<string, never>)} where ${this.key(table, old)} returning to_jsonb(${this.tx(table)}.*) as row`;
      this.record(table, 'update', old, r!.row);
      out.push(r!.row);
    }
    return out;
  }

  async softDelete(table: TableName, where: Values): Promise<void> {
    await this.update(table, where, { deleted_at: new Date() });
  }

  /** Inserts many rows, 1,000 a statement (bulk changes). */
  async insertMany(table: TableName, rows: Values[]): Promise<Row[]> {
    const out: Row[] = [];
    for (let i = 0; i < rows.length; i += 1000) {
      const chunk = rows.slice(i, i + 1000) as Record<string, never>[];
      const inserted = await this.tx<{ row: Row }[]>`insert into ${this.tx(table)} ${this.tx(chunk)} returning to_jsonb(${this.tx(table)}.*) as row`;
      for (const r of inserted) {
        this.record(table, 'insert', null, r.row);
        out.push(r.row);
      }
    }
    return out;
  }

  /** Hard-deletes the rows matching `where`, in one statement. */
  async delete(table: TableName, where: Values): Promise<number> {
    const deleted = await this.tx<{ row: Row }[]>`delete from ${this.tx(table)} where ${this.where(where)} returning to_jsonb(${this.tx(table)}.*) as row`;
    for (const r of deleted) this.record(table, 'delete', r.row, null);
    return deleted.length;
  }

  private where(where: Values) {
    const conditions = Object.entries(where).map(([k, v]) => this.tx`${this.tx(k)} = ${v as never}`);
    return conditions.reduce((acc, c, i) => (i === 0 ? c : this.tx`${acc} and ${c}`));
  }

  private async select(table: TableName, where: Values, lock: boolean): Promise<Row[]> {
    const rows = await this.tx<{ row: Row }[]>`select to_jsonb(t.*) as row from ${this.tx(table)} t where ${this.where(where)} ${lock ? this.tx`for update` : this.tx``}`;
    return rows.map((r) => r.row);
  }

  private key(table: TableName, row: Row) {
    if (table === 'resource_connections') return this.tx`resource_id = ${row.resource_id as string} and site_id = ${row.site_id as string}`;
    return this.tx`id = ${row.id as string}`;
  }

  private record(table: TableName, op: 'insert' | 'update' | 'delete', old: Row | null, data: Row | null): void {
    this.events.push({ table, ...softDeleteAware(table, op, old && replicatorRow(old), data && replicatorRow(data)) });
  }
}

/** Commits `fn`'s writes and returns their Changes: the transaction's real xid, positions at the commit (the WAL position read right after it). */
export async function commit(sql: Sql, fn: (t: Tx) => Promise<unknown>): Promise<Change[]> {
  let xid = 0;
  let events: Tx['events'] = [];
  await sql.begin(async (tx) => {
    const [x] = await tx<{ xid: string }[]>`select (txid_current() % 4294967296)::text as xid`;
    xid = Number(x!.xid);
    const t = new Tx(tx);
    await fn(t);
    events = t.events;
  });
  const [w] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
  const committedAt = new Date().toISOString().replace('Z', '000Z');
  return events.map((e, seq) => ({ lsn: w!.lsn, seq, xid, table: e.table, op: e.op, old: e.old, data: e.data, committed_at: committedAt }) as Change);
}
