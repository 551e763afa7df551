import type { AccountId } from '../../src/ids.ts';
import type { Row } from '../../src/json.ts';
import { decodeRow, RowDecodeError, type Cached } from '../../src/records.ts';
import { parseSnapshot, type Snapshot } from '../../src/snapshot.ts';
import { DOMAIN_TABLES, type TableName } from '../../src/tables.ts';
import { DatabaseError, withDatabase } from './database.ts';

export interface Hydration {
  records: Cached[];
  snapshot: Snapshot;
  /** The replication epoch current when the snapshot was taken; null before the replicator recorded one. */
  epoch: string | null;
  problems: RowDecodeError[];
}

const SOFT_DELETED = new Set<TableName>(['accounts', 'actors', 'actor_groups', 'sites', 'gateways', 'resources', 'policies', 'clients', 'tokens']);

/**
 * One statement in a REPEATABLE READ transaction: every live row of the account, as the same
 * JSON the replicator sends, plus the snapshot they were read in (docs/architecture.md#4-consistent-hydration) and the
 * replication epoch of that moment, so that a batch of another epoch is recognised.
 */
const HYDRATION_QUERY = [
  `select 'snapshot' as t, to_jsonb(pg_current_snapshot()::text) as row`,
  `(select 'epoch', to_jsonb(epoch) from replication_epochs order by started_at desc limit 1)`,
  ...DOMAIN_TABLES.map((table) => {
    const owner = table === 'accounts' ? 'id' : 'account_id';
    const live = SOFT_DELETED.has(table) ? ' and deleted_at is null' : '';
    return `select '${table}', to_jsonb(x) from ${table} x where ${owner} = $1${live}`;
  }),
].join('\nunion all\n');

export async function hydrate(binding: Hyperdrive, accountId: AccountId): Promise<Hydration> {
  const rows = await withDatabase(binding, `hydrating account ${accountId}`, (sql) =>
    sql.begin('isolation level repeatable read read only', (tx) => tx.unsafe<{ t: string; row: unknown }[]>(HYDRATION_QUERY, [accountId])),
  );
  let snapshot: Snapshot | undefined;
  let epoch: string | null = null;
  const records: Cached[] = [];
  const problems: RowDecodeError[] = [];
  for (const { t, row } of rows) {
    if (t === 'snapshot') {
      snapshot = parseSnapshot(row as string);
      continue;
    }
    if (t === 'epoch') {
      epoch = row as string;
      continue;
    }
    try {
      const { deleted, cached } = decodeRow(t as TableName, row as Row);
      if (!deleted) records.push(cached);
    } catch (err) {
      if (!(err instanceof RowDecodeError)) throw err;
      problems.push(err);
    }
  }
  if (!snapshot) throw new DatabaseError(`hydrating account ${accountId}`, { cause: new Error('no snapshot row') });
  return { records, snapshot, epoch, problems };
}
