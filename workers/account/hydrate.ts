import type { AccountId } from '../../src/ids.ts';
import type { Row } from '../../src/json.ts';
import { decodedColumns, decodeRow, RowDecodeError, type Cached } from '../../src/records.ts';
import { parseSnapshot, type Snapshot } from '../../src/snapshot.ts';
import { DOMAIN_TABLES, type TableName } from '../../src/tables.ts';
import { CACHE_TABLES } from './cache-tables.ts';
import { type Database, DatabaseError } from './database.ts';

export interface Hydration {
  /** Records handed to the page callback. */
  records: number;
  snapshot: Snapshot;
  /** The replication epoch current when the snapshot was taken; null before the replicator recorded one. */
  epoch: string | null;
  problems: RowDecodeError[];
}

/**
 * Rows a page holds: what the object keeps of the account's rows at once, whatever the account's
 * size (docs/architecture.md#hydration).
 */
export const HYDRATION_PAGE_ROWS = 5_000;

const SOFT_DELETED = new Set<TableName>(['accounts', 'actors', 'actor_groups', 'sites', 'gateways', 'resources', 'policies', 'clients', 'tokens']);

/**
 * One statement in a REPEATABLE READ transaction: every live row of the account, as JSON of the
 * columns its record needs (the replicator's JSON of those columns), plus the snapshot they were read in (docs/architecture.md#4-consistent-hydration) and the
 * replication epoch of that moment, so that a batch of another epoch is recognised.
 */
const HYDRATION_QUERY = [
  `select 'snapshot' as t, to_jsonb(pg_current_snapshot()::text) as row`,
  `(select 'epoch', to_jsonb(epoch) from replication_epochs order by started_at desc limit 1)`,
  ...DOMAIN_TABLES.map((table) => {
    const owner = table === 'accounts' ? 'id' : 'account_id';
    const live = SOFT_DELETED.has(table) ? ' and deleted_at is null' : '';
    const row = decodedColumns(table)
      .map((c) => `'${c}', x.${c}`)
      .join(', ');
    // In the cache's key order: the staged tables grow by appending instead of random inserts.
    const order = CACHE_TABLES[table].keyColumns.map((c) => `x.${c}`).join(', ');
    return `(select '${table}', jsonb_build_object(${row}) from ${table} x where ${owner} = $1${live} order by ${order})`;
  }),
].join('\nunion all\n');

/**
 * Reads the account through a cursor of that statement, HYDRATION_PAGE_ROWS rows at a time, and
 * hands each page's records to `page` (synchronously, before the next page is read) instead of
 * holding them all: one snapshot, memory bounded by the page.
 */
export async function hydrate(db: Database, accountId: AccountId, page: (records: Cached[]) => void): Promise<Hydration> {
  let snapshot: Snapshot | undefined;
  let epoch: string | null = null;
  let records = 0;
  const problems: RowDecodeError[] = [];
  // A failure of `page` (storage) is the caller's own, not the database's: it is rethrown as it is.
  let pageFailure: { err: unknown } | undefined;
  const pass = (decoded: Cached[], abandoned: AbortSignal) => {
    // A stalled read that resumes after the caller gave up (a later hydration may be staging).
    if (abandoned.aborted) throw new Error('abandoned after a stall');
    try {
      page(decoded);
    } catch (err) {
      pageFailure = { err };
      throw err;
    }
  };
  const read = db.run(`hydrating account ${accountId}`, (sql, abandoned) =>
    sql.begin('isolation level repeatable read read only', async (tx) => {
      await tx.unsafe<{ t: string; row: unknown }[]>(HYDRATION_QUERY, [accountId]).cursor(HYDRATION_PAGE_ROWS, (rows) => {
        const decoded: Cached[] = [];
        for (const { t, row } of rows) {
          if (t === 'snapshot') snapshot = parseSnapshot(row as string);
          else if (t === 'epoch') epoch = row as string;
          else {
            try {
              const { deleted, cached } = decodeRow(t as TableName, row as Row);
              if (!deleted) decoded.push(cached);
            } catch (err) {
              if (!(err instanceof RowDecodeError)) throw err;
              problems.push(err);
            }
          }
        }
        records += decoded.length;
        pass(decoded, abandoned);
      });
    }),
  );
  try {
    await read;
  } catch (err) {
    throw pageFailure ? pageFailure.err : err;
  }
  if (!snapshot) throw new DatabaseError(`hydrating account ${accountId}`, { cause: new Error('no snapshot row') });
  return { records, snapshot, epoch, problems };
}
