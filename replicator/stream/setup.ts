import type { Sql } from 'postgres';
import { formatLsn, parseLsn, type Lsn } from '../../src/lsn.ts';
import { DOMAIN_TABLES } from '../../src/tables.ts';
import { SetupError, sqlState } from '../errors.ts';
import type { Logger } from '../logger.ts';

export interface ServerInfo {
  versionNum: number;
  walSenderTimeoutMs: number;
}

export async function serverInfo(sql: Sql): Promise<ServerInfo> {
  const [row] = await sql<{ wal_level: string; version_num: string; wal_sender_timeout: string }[]>`
    select current_setting('wal_level') as wal_level,
           current_setting('server_version_num') as version_num,
           (select setting from pg_settings where name = 'wal_sender_timeout') as wal_sender_timeout`;
  if (!row) throw new SetupError('the server did not answer its settings');
  if (row.wal_level !== 'logical') {
    throw new SetupError(`wal_level is ${row.wal_level}; logical replication needs wal_level=logical (set it and restart Postgres)`);
  }
  return { versionNum: Number(row.version_num), walSenderTimeoutMs: Number(row.wal_sender_timeout) };
}

const quote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`;

/** Creates the publication of the domain tables if missing, and adds any domain table it lacks. Never change_logs or flows. */
export async function ensurePublication(sql: Sql, name: string, log: Logger): Promise<void> {
  const [existing] = await sql`select 1 from pg_publication where pubname = ${name}`;
  if (!existing) {
    try {
      await sql.unsafe(`create publication ${quote(name)} for table ${DOMAIN_TABLES.map((t) => `public.${quote(t)}`).join(', ')}`);
      log.info({ publication: name }, 'created publication');
      return;
    } catch (err) {
      // Another replicator created it at the same moment.
      if (sqlState(err) !== '42710') throw err;
    }
  }
  const rows = await sql<{ tablename: string }[]>`
    select tablename from pg_publication_tables where pubname = ${name} and schemaname = 'public'`;
  const have = new Set(rows.map((r) => r.tablename));
  const missing = DOMAIN_TABLES.filter((t) => !have.has(t));
  if (missing.length > 0) {
    await sql.unsafe(`alter publication ${quote(name)} add table ${missing.map((t) => `public.${quote(t)}`).join(', ')}`);
    log.warn({ publication: name, added: missing }, 'publication lacked domain tables; added them');
  }
}

export interface SlotState {
  confirmedFlush: Lsn | undefined;
  activePid: number | null;
  /** Why Postgres invalidated it (it removed WAL the slot still needed), when it did. */
  invalidated: string | undefined;
}

interface SlotRow {
  plugin: string | null;
  slot_type: string;
  database: string | null;
  current: string;
  confirmed_flush_lsn: string | null;
  active_pid: number | null;
  /** PostgreSQL 13+: 'lost' once the WAL the slot needs was removed. */
  wal_status: string | null;
  /** PostgreSQL 17+. */
  invalidation_reason: string | null;
}

/** Why the slot is not ours to stream from (another kind, plugin or database), or undefined when it is. */
export function slotProblem(slot: string, row: SlotRow): string | undefined {
  if (row.slot_type !== 'logical' || row.plugin !== 'pgoutput' || row.database !== row.current) {
    return (
      `replication slot ${slot} exists but is a ${row.slot_type} slot${row.plugin ? ` of plugin ${row.plugin}` : ''}${row.database ? ` in database ${row.database}` : ''}; ` +
      `expected a pgoutput slot in ${row.current} (choose another SLOT_NAME or drop it)`
    );
  }
  return undefined;
}

/** Why Postgres invalidated the slot, or undefined when it did not. */
export function slotInvalidation(row: SlotRow): string | undefined {
  if (row.wal_status !== 'lost' && !row.invalidation_reason) return undefined;
  return row.invalidation_reason ?? 'wal_status lost';
}

/** Reads the slot, checking that it is a pgoutput slot of this database. */
export async function readSlot(sql: Sql, slot: string): Promise<SlotState | undefined> {
  // Through to_jsonb: wal_status and invalidation_reason do not exist on every version.
  const [row] = await sql<SlotRow[]>`
    select plugin, slot_type, database, current_database() as current, confirmed_flush_lsn::text, active_pid,
           to_jsonb(s) ->> 'wal_status' as wal_status, to_jsonb(s) ->> 'invalidation_reason' as invalidation_reason
    from pg_replication_slots s where slot_name = ${slot}`;
  if (!row) return undefined;
  const problem = slotProblem(slot, row);
  if (problem) throw new SetupError(problem);
  return { confirmedFlush: row.confirmed_flush_lsn ? parseLsn(row.confirmed_flush_lsn) : undefined, activePid: row.active_pid, invalidated: slotInvalidation(row) };
}

export interface EnsuredSlot extends SlotState {
  /** This call created it: the stream cannot continue an earlier one (a new epoch). */
  created: boolean;
  /** Where it starts: its consistent point when created, else its confirmed position. */
  startLsn: Lsn;
}

/**
 * The durable (not TEMPORARY) slot, created on the replication connection if it is missing. An
 * invalidated slot can never stream again: it is dropped and created anew, which starts a new
 * epoch (docs/architecture.md#12-epochs) instead of waiting for an operator.
 */
export async function ensureSlot(sql: Sql, replication: Sql, slot: string, log: Logger): Promise<EnsuredSlot> {
  const existing = await readSlot(sql, slot);
  if (existing && !existing.invalidated) return { ...existing, created: false, startLsn: existing.confirmedFlush ?? 0n };
  if (existing?.invalidated) {
    log.error(
      { slot, reason: existing.invalidated, lsn: existing.confirmedFlush === undefined ? null : formatLsn(existing.confirmedFlush) },
      'the replication slot was invalidated (Postgres removed WAL it still needed, usually past max_slot_wal_keep_size): dropping it and starting a new epoch; every account re-hydrates',
    );
    await sql`select pg_drop_replication_slot(${slot})`;
  }
  let consistentPoint: Lsn | undefined;
  try {
    const [row] = await replication.unsafe<{ consistent_point: string }[]>(`CREATE_REPLICATION_SLOT ${quote(slot)} LOGICAL pgoutput NOEXPORT_SNAPSHOT`);
    consistentPoint = row ? parseLsn(row.consistent_point) : undefined;
    log.info({ slot, lsn: row?.consistent_point }, 'created replication slot');
  } catch (err) {
    if (sqlState(err) !== '42710') throw err;
  }
  const created = await readSlot(sql, slot);
  if (!created) throw new SetupError(`replication slot ${slot} vanished right after it was created`);
  // Another replicator created it between our read and our create: it is not new to us either way.
  return { ...created, created: true, startLsn: consistentPoint ?? created.confirmedFlush ?? 0n };
}

/** `IDENTIFY_SYSTEM` on the replication connection: which cluster, on which timeline. */
export async function identifySystem(replication: Sql): Promise<{ systemIdentifier: string; timeline: number }> {
  const [row] = await replication.unsafe<{ systemid: string; timeline: number | string }[]>('IDENTIFY_SYSTEM');
  if (!row) throw new SetupError('IDENTIFY_SYSTEM returned nothing');
  return { systemIdentifier: String(row.systemid), timeline: Number(row.timeline) };
}

export interface StreamOptions {
  protocolVersion: number;
  streaming: boolean;
}

/** Protocol 2 with streamed in-progress transactions from PostgreSQL 14 on; 1 before. */
export function streamOptions(versionNum: number): StreamOptions {
  return versionNum >= 140000 ? { protocolVersion: 2, streaming: true } : { protocolVersion: 1, streaming: false };
}

export function startReplicationCommand(slot: string, publication: string, options: StreamOptions): string {
  const params = [`proto_version '${options.protocolVersion}'`, `publication_names '${quote(publication)}'`];
  if (options.streaming) params.push(`streaming 'on'`);
  // 0/0: start from the slot's confirmed_flush_lsn.
  return `START_REPLICATION SLOT ${quote(slot)} LOGICAL 0/0 (${params.join(', ')})`;
}

/**
 * After we gave up on a stalled connection, the server may still hold the slot for its walsender
 * until wal_sender_timeout. That backend is ours (we remember its pid), so end it instead of waiting.
 * Another replicator's backend is never touched.
 */
export async function releaseStaleBackend(sql: Sql, slot: string, ourOldPid: number | undefined, log: Logger): Promise<void> {
  if (ourOldPid === undefined) return;
  const [row] = await sql<{ terminated: boolean }[]>`
    select pg_terminate_backend(active_pid) as terminated from pg_replication_slots
    where slot_name = ${slot} and active_pid = ${ourOldPid}`;
  if (row?.terminated) {
    log.warn({ slot, pid: ourOldPid }, 'ended our own stale walsender that still held the slot');
    for (let i = 0; i < 50; i++) {
      const [still] = await sql`select 1 from pg_replication_slots where slot_name = ${slot} and active_pid = ${ourOldPid}`;
      if (!still) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
