import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { formatLsn, type Lsn } from '../../src/lsn.ts';
import type { Logger } from '../logger.ts';

export interface Epoch {
  /** Compared for equality only: a restored cluster may count its epochs from 1 again. */
  id: string;
  number: number;
}

export interface StreamOrigin {
  slot: string;
  systemIdentifier: string;
  timeline: number;
  /** This session created the slot (it was missing, or invalidated and dropped). */
  slotCreated: boolean;
  /** Where the slot's stream starts. */
  startLsn: Lsn;
}

interface EpochRow {
  epoch: string;
  epoch_number: number;
  system_identifier: string;
  timeline: number;
}

/**
 * Whether a stream continues the one the log and the cursors belong to, and why not
 * (docs/architecture.md#12-epochs). A slot created now cannot continue anything; another cluster
 * (a restore, pg_upgrade) cannot either. A new timeline of the same cluster with its slot still
 * there is a failover whose slot was synced: the stream goes on. Pure, so that each case is tested
 * without a server.
 */
export function epochBreak(stored: Pick<EpochRow, 'system_identifier' | 'timeline'> | undefined, origin: StreamOrigin): string | undefined {
  if (origin.slotCreated) return stored ? 'the replication slot was created anew' : 'the first stream of this slot';
  if (stored && stored.system_identifier !== origin.systemIdentifier) return `another cluster (system identifier ${stored.system_identifier} -> ${origin.systemIdentifier})`;
  return undefined;
}

/**
 * The epoch this session streams in, starting a new one when the stream cannot continue the
 * previous one. A new epoch, in one transaction: every account's cursor moves to the slot's start
 * and is marked to re-hydrate (accounts of the accounts table, and any other account a cursor
 * remembers), and rows of change_logs past that start (left by a cluster whose LSNs ran further)
 * go, since the new stream's positions would collide with them.
 */
export async function resolveEpoch(sql: Sql, origin: StreamOrigin, log: Logger): Promise<Epoch> {
  const [stored] = await sql<EpochRow[]>`
    select epoch, epoch_number, system_identifier, timeline from replication_epochs where slot_name = ${origin.slot}`;
  const reason = epochBreak(stored, origin);
  if (stored && !reason) {
    if (stored.timeline !== origin.timeline) {
      log.warn({ slot: origin.slot, from: stored.timeline, to: origin.timeline }, 'new timeline with the slot in place (a failover that kept the slot): the stream goes on');
      await sql`update replication_epochs set timeline = ${origin.timeline} where slot_name = ${origin.slot}`;
    }
    return { id: stored.epoch, number: stored.epoch_number };
  }
  if (!stored && !reason) {
    // A slot streamed before epochs were recorded: its stream goes on, in a first recorded epoch.
    return await record(sql, origin, 1);
  }
  const start = formatLsn(origin.startLsn);
  const epoch = await sql.begin(async (tx) => {
    const [{ n } = { n: 0 }] = await tx<{ n: number }[]>`select coalesce(max(epoch_number), 0)::int as n from replication_epochs`;
    const dropped = await tx`delete from change_logs where (lsn::pg_lsn, seq) > (${start}::pg_lsn, -1)`;
    await tx`
      insert into delivery_cursors (account_id) select id from accounts on conflict (account_id) do nothing`;
    await tx`
      update delivery_cursors set lsn = ${start}::pg_lsn, seq = -1, needs_rehydrate = true, skip_lsn = null, skip_seq = null, updated_at = now()`;
    const next = await record(tx as unknown as Sql, origin, Math.max(n, stored?.epoch_number ?? 0) + 1);
    log.warn(
      { slot: origin.slot, epoch: next.id, number: next.number, reason, start, dropped_log_rows: dropped.count },
      'new replication epoch: every account re-hydrates, then gets the new stream',
    );
    return next;
  });
  return epoch;
}

async function record(sql: Sql, origin: StreamOrigin, number: number): Promise<Epoch> {
  const id = `${number}-${randomBytes(6).toString('hex')}`;
  await sql`
    insert into replication_epochs (slot_name, epoch, epoch_number, system_identifier, timeline)
    values (${origin.slot}, ${id}, ${number}, ${origin.systemIdentifier}, ${origin.timeline})
    on conflict (slot_name) do update set epoch = excluded.epoch, epoch_number = excluded.epoch_number,
      system_identifier = excluded.system_identifier, timeline = excluded.timeline, started_at = now()`;
  return { id, number };
}
