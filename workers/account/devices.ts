import type { Sql } from 'postgres';
import { Batcher } from '../../src/batcher.ts';
import { coalesceWrites, deviceKey, refusedForARow, type DeviceWrite } from '../../src/devices.ts';
import type { Row } from '../../src/json.ts';
import { type Database, DatabaseError } from './database.ts';

export type DeviceTable = 'clients' | 'gateways';

/**
 * A quiet object's lone connect waits this long for others to share its statement; in a
 * reconnect storm the statements are as many as fit one after another, not one per device.
 */
const WINDOW_MS = 5;
/** Rows per statement: 6 parameters each, far below Postgres' 65,535. */
const MAX_ROWS = 500;
/**
 * The connects' device upserts (docs/architecture.md#a-device-connects), batched: what arrives
 * together is written in one multi-row `INSERT ... ON CONFLICT DO UPDATE` per table, on one
 * connection of the Hyperdrive binding. Each connect gets its own row, or a DatabaseError.
 */
export class DeviceWriter {
  private readonly batchers: Record<DeviceTable, Batcher<DeviceWrite, Row>>;

  constructor(db: Database) {
    const batcher = (table: DeviceTable) => new Batcher<DeviceWrite, Row>((writes) => writeBatch(db, table, writes), { windowMs: WINDOW_MS, max: MAX_ROWS });
    this.batchers = { clients: batcher('clients'), gateways: batcher('gateways') };
  }

  /** Upserts the device by its key and returns its row (docs/protocol.md#websocket-routes). */
  upsert(table: DeviceTable, write: DeviceWrite): Promise<Row> {
    return this.batchers[table].add(write);
  }
}

/**
 * One batch runs at a time: a statement that never answers fails its connects after the
 * database's stall deadline (workers/account/database.ts), and the next batch starts on a
 * connection of its own; what the late statement writes is what its devices write again when
 * they retry.
 */
async function writeBatch(db: Database, table: DeviceTable, writes: DeviceWrite[]): Promise<PromiseSettledResult<Row>[]> {
  const { rows, rowOf } = coalesceWrites(writes);
  const operation = `upserting ${rows.length} ${table}`;
  const results = await db.run(operation, (sql) => writeRows(sql, table, rows, operation));
  return rowOf.map((i) => results[i]!);
}

/** The rows in one statement; if Postgres refuses one of them, each alone (so that only the refused one fails). */
async function writeRows(sql: Sql, table: DeviceTable, rows: DeviceWrite[], operation: string): Promise<PromiseSettledResult<Row>[]> {
  try {
    const written = await upsert(sql, table, rows);
    return rows.map((w): PromiseSettledResult<Row> => {
      const row = written.get(deviceKey(w.ownerId, w.device.externalId));
      return row ? { status: 'fulfilled', value: row } : { status: 'rejected', reason: new DatabaseError(operation, { cause: new Error('no row returned') }) };
    });
  } catch (err) {
    if (rows.length === 1 || !refusedForARow(sqlstateOf(err))) throw err;
    // One row is refused: each alone, so that the others are written (the refused one's connect gets its error).
    const alone: PromiseSettledResult<Row>[] = [];
    for (const w of rows) {
      try {
        alone.push({ status: 'fulfilled', value: [...(await upsert(sql, table, [w])).values()][0]! });
      } catch (rowErr) {
        alone.push({ status: 'rejected', reason: new DatabaseError(`upserting one of ${table}`, { cause: rowErr }) });
      }
    }
    return alone;
  }
}

/**
 * One statement for every row, keyed like the tables' unique constraints (no table alias: postgres.js
 * would read the fragment after `as` as a select list). A client that was
 * deleted comes back unverified: verification belonged to the deleted one.
 */
async function upsert(sql: Sql, table: DeviceTable, rows: readonly DeviceWrite[]): Promise<Map<string, Row>> {
  const owner = table === 'clients' ? 'actor_id' : 'site_id';
  const values = rows.map((w) => ({
    account_id: w.accountId,
    [owner]: w.ownerId,
    external_id: w.device.externalId,
    name: w.device.name,
    public_key: w.device.publicKey,
    last_seen_version: w.device.version,
  }));
  const columns = ['account_id', owner, 'external_id', 'name', 'public_key', 'last_seen_version'];
  const result =
    table === 'clients'
      ? await sql<{ row: Row }[]>`
          insert into clients ${sql(values, ...columns)}
          on conflict (actor_id, external_id) do update set
            name = excluded.name, public_key = excluded.public_key, last_seen_version = excluded.last_seen_version,
            verified_at = case when clients.deleted_at is null then clients.verified_at end, deleted_at = null, updated_at = now()
          returning to_jsonb(clients) as row`
      : await sql<{ row: Row }[]>`
          insert into gateways ${sql(values, ...columns)}
          on conflict (site_id, external_id) do update set
            name = excluded.name, public_key = excluded.public_key, last_seen_version = excluded.last_seen_version,
            deleted_at = null, updated_at = now()
          returning to_jsonb(gateways) as row`;
  return new Map(result.map(({ row }) => [deviceKey(row[owner] as never, row.external_id as string), row]));
}

function sqlstateOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
