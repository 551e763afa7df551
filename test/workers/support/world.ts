import { env, SELF } from 'cloudflare:test';
import type { Sql, TransactionSql } from 'postgres';
import { softDeleteAware, type Change } from '../../../src/change.ts';
import type { Row } from '../../../src/json.ts';
import { database as connectDatabase } from '../../../workers/account/database.ts';
import { SIGNATURE_HEADER, signBody } from '../../../src/signature.ts';
import type { TableName } from '../../../src/tables.ts';
import { secretHash } from '../../../src/tokens.ts';

export const BASE = 'http://edgeplane.test';

/** The test Postgres, through the same Hyperdrive binding the objects use. */
export function database(): Sql {
  return connectDatabase(env.DB, 2);
}

type Values = Record<string, unknown>;

/**
 * Writes rows inside one Postgres transaction and records them as the replicator would deliver
 * them: real xid, full old and new rows (as JSON), soft deletes as deletes; positions come from
 * the commit's WAL position.
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

  /** Inserts many rows in one statement (bulk changes). */
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
    this.events.push({ table, ...softDeleteAware(table, op, old, data) });
  }
}

let lastLsn = '';

/** Commits `fn`'s writes and returns their Changes, positioned at the commit. */
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
  const [w] = await sql<{ lsn: string; now: string }[]>`select pg_current_wal_lsn()::text as lsn, now()::text as now`;
  lastLsn = w!.lsn;
  const committedAt = new Date().toISOString().replace('Z', '000Z');
  return events.map((e, seq) => ({ lsn: lastLsn, seq, xid, table: e.table, op: e.op, old: e.old, data: e.data, committed_at: committedAt }) as Change);
}

export const SECRET = env.REPLICATOR_SECRET;

export async function postChanges(accountId: string, changes: readonly Change[], opts: { secret?: string; body?: string; signature?: string } = {}): Promise<Response> {
  const body = opts.body ?? JSON.stringify({ changes });
  const signature = opts.signature ?? (await signBody(opts.secret ?? SECRET, body, Math.floor(Date.now() / 1000)));
  return await SELF.fetch(`${BASE}/v1/accounts/${accountId}/changes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature },
    body,
  });
}

export interface Applied {
  applied: number;
  skipped: number;
  position: string | null;
}

export async function deliver(accountId: string, changes: readonly Change[]): Promise<Applied> {
  const res = await postChanges(accountId, changes);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST changes: ${res.status} ${text}`);
  return JSON.parse(text) as Applied;
}

/** Random text that is safe in a token and an external id. */
export function randomText(n = 16): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => (b % 36).toString(36)).join('');
}

export async function tokenValues(accountId: string, type: 'client' | 'site', owner: string, extra: Values = {}): Promise<{ values: Values; secret: string }> {
  const secret = randomText(32);
  const salt = randomText(16);
  return {
    secret,
    values: {
      account_id: accountId, type, [type === 'client' ? 'actor_id' : 'site_id']: owner, secret_salt: salt, secret_hash: await secretHash(salt, secret), ...extra,
    },
  };
}
