import { tmpdir } from 'node:os';
import postgres, { type Sql } from 'postgres';
import { errorSummary } from '../src/errors.ts';
import { formatLsn } from '../src/lsn.ts';
import { removeStaleSpillFiles } from './assemble/spill-file.ts';
import type { Config } from './config.ts';
import { Deliverer, type LaneReport } from './deliver/deliverer.ts';
import { isPermanent, isSlotInUse, PgoutputDecodeError, StallError, toError } from './errors.ts';
import { pruneChangeLogs } from './log/retention.ts';
import type { Logger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { withNoDelay } from './pg-socket.ts';
import { backoffDelay, sleep } from './retry.ts';
import { ReplicationSession } from './session.ts';

const SLOT_METRICS_INTERVAL_MS = 10_000;
/** Accounts /healthz lists, worst first. */
const WORST_ACCOUNTS = 10;
/** A session that streamed this long resets the reconnect backoff. */
const HEALTHY_SESSION_MS = 30_000;

export interface Health {
  /** Liveness: false when restarting the process is the remedy (a stalled stream, an undecodable message). */
  healthy: boolean;
  ready: boolean;
  state: string;
  /** ok; lagging: work waits but moves (reading paused for change_logs, accounts catching up or refused); stalled: nothing moves. */
  status: 'ok' | 'lagging' | 'stalled';
  reasons: string[];
  epoch: string | null;
  ackedLsn: string | null;
  /** Changes received and not yet in change_logs. */
  unacked: number;
  accounts: { behind: number; refused: number; worst: LaneReport[] };
}

/**
 * The replicator: sessions one after the other, with backoff between them. It keeps no state of
 * its own; the slot's confirmed position is where every session starts.
 */
export class ReplicatorService {
  readonly metrics = new Metrics();
  private sql: Sql;
  private readonly deliverer: Deliverer;
  private session: ReplicationSession | undefined;
  private stopping = false;
  private standby = false;
  /** Why the last session failed, until one ends cleanly. */
  private lastError: Error | undefined;
  private readonly stopSignal = new AbortController();
  private loop: Promise<void> | undefined;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
  ) {
    this.sql = this.pool();
    this.deliverer = new Deliverer(
      {
        edgeUrl: config.EDGE_URL.replace(/\/+$/, ''),
        secret: config.REPLICATOR_SECRET,
        batchSize: config.FORWARD_BATCH_SIZE,
        batchBytes: config.FORWARD_BATCH_BYTES,
        maxRowBytes: config.FORWARD_MAX_ROW_BYTES,
        lingerMs: config.FORWARD_LINGER_MS,
        concurrency: config.FORWARD_CONCURRENCY,
        timeoutMs: config.FORWARD_TIMEOUT_MS,
        retryBaseMs: config.RETRY_BASE_MS,
        retryMaxMs: config.RETRY_MAX_MS,
        permanentRetryMs: config.PERMANENT_RETRY_MS,
        queueMax: config.FORWARD_QUEUE_MAX,
        queueBytes: config.FORWARD_QUEUE_BYTES,
        pageSize: config.CATCHUP_PAGE_SIZE,
        catchUpConcurrency: config.CATCHUP_CONCURRENCY,
        cursorFlushMs: config.CURSOR_FLUSH_MS,
      },
      () => this.sql,
      log,
      this.metrics,
    );
  }

  /** The ordinary connections: setup, TRUNCATE routing, retention, slot metrics, catch-up reads, cursors (change_logs writers have their own). */
  private pool(): Sql {
    return postgres(
      this.config.DATABASE_URL,
      withNoDelay({
        max: 4 + this.config.CATCHUP_CONCURRENCY,
        onnotice: () => {},
        connect_timeout: 10,
        connection: { application_name: 'edgeplane-replicator-writer' },
      }),
    );
  }

  start(): void {
    // A replicator killed while it held a large transaction left its spill files behind.
    const stale = removeStaleSpillFiles(tmpdir());
    if (stale > 0) this.log.info({ files: stale, dir: tmpdir() }, 'removed spill files of replicators that are gone');
    this.loop = this.runSessions();
    void this.prune();
    this.timers.push(setInterval(() => void this.prune(), this.config.CHANGE_LOG_RETENTION_INTERVAL_MS));
    this.timers.push(setInterval(() => void this.slotMetrics(), SLOT_METRICS_INTERVAL_MS));
  }

  /** SIGTERM: drain what is in flight, acknowledge, close. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopSignal.abort();
    for (const t of this.timers) clearInterval(t);
    await this.session?.drain(this.config.DRAIN_TIMEOUT_MS);
    await this.loop;
    await this.deliverer.stop();
    await this.sql.end({ timeout: 2 });
  }

  health(now = Date.now()): Health {
    const s = this.session;
    const stalls: string[] = [];
    const lags: string[] = [];
    const streaming = s?.state === 'streaming';
    // Half the reconnect timeout: the stall shows here before the session gives up on it. Silence
    // while reading is paused is ours, not the server's.
    if (s && streaming && !s.paused && now - s.lastReceivedAt > s.replicationTimeoutMs / 2) stalls.push('stream stalled: nothing received from the server');
    const oldest = s?.oldestUnackedAt;
    if (s && oldest !== undefined && now - oldest > this.config.STALL_ALERT_MS) {
      const waited = `a change has waited ${Math.round((now - oldest) / 1000)} s for change_logs`;
      if (now - s.lastLoggedAt > this.config.STALL_ALERT_MS) stalls.push(`${waited}, which took nothing for ${Math.round((now - s.lastLoggedAt) / 1000)} s`);
      else lags.push(waited);
    }
    if (s?.paused && streaming) lags.push('reading paused: change_logs writes are behind');
    const failed = this.lastError;
    if (failed instanceof PgoutputDecodeError && !streaming) stalls.push(`decode error: ${errorSummary(failed)}`);
    if (failed !== undefined && isPermanent(failed) && !streaming) stalls.push(`cannot replicate: ${errorSummary(failed)}`);
    const accounts = this.deliverer.report(WORST_ACCOUNTS, now);
    if (accounts.refused > 0) lags.push(`${accounts.refused} account(s) refuse their changes (retried slowly; see accounts.worst)`);
    if (accounts.behind > 0) lags.push(`${accounts.behind} account(s) behind, fed from change_logs`);
    return {
      healthy: stalls.length === 0,
      ready: streaming,
      state: this.stopping ? 'stopping' : streaming ? 'streaming' : this.standby ? 'standby' : (s?.state ?? 'starting'),
      status: stalls.length > 0 ? 'stalled' : lags.length > 0 ? 'lagging' : 'ok',
      reasons: [...stalls, ...lags],
      epoch: this.deliverer.currentEpoch,
      ackedLsn: s ? formatLsn(s.ackedLsn) : null,
      unacked: s?.unackedChanges ?? 0,
      accounts,
    };
  }

  private async runSessions(): Promise<void> {
    let attempt = 0;
    while (!this.stopping) {
      const session = new ReplicationSession(this.config, this.sql, this.log, this.metrics, this.deliverer, this.session?.backendPid);
      this.session = session;
      this.metrics.reconnects.inc();
      const started = Date.now();
      try {
        await session.run();
        this.lastError = undefined;
      } catch (err) {
        this.lastError = toError(err);
        if (this.stopping) break;
        if (Date.now() - started > HEALTHY_SESSION_MS) attempt = 0;
        if (err instanceof StallError) {
          // A link that went silent may have taken the pool's connections with it; they would hang.
          const stale = this.sql;
          this.sql = this.pool();
          void stale.end({ timeout: 0 });
        }
        if (isSlotInUse(err)) {
          if (!this.standby) this.log.info({ slot: this.config.SLOT_NAME }, 'slot is active elsewhere; waiting as standby');
          this.standby = true;
          this.deliverer.suspend();
        } else {
          this.standby = false;
          const level = isPermanent(err) ? 'error' : 'warn';
          this.log[level]({ err: errorSummary(err), acked: formatLsn(session.ackedLsn), attempt }, 'replication session ended; reconnecting');
        }
        await sleep(backoffDelay(attempt++, 250, this.standby ? 5_000 : 30_000), this.stopSignal.signal);
        continue;
      }
      this.standby = false;
    }
  }

  /** Retention, by the replicator that streams (a standby's cursors are not current). */
  private async prune(): Promise<void> {
    if (this.session?.state !== 'streaming') return;
    try {
      // Cursors first: a row delivered since the last flush can go now.
      await this.deliverer.flush();
      const pruned = await pruneChangeLogs(this.sql, this.config.CHANGE_LOG_RETENTION_DAYS, 5000, this.stopSignal.signal);
      this.deliverer.mustRehydrate(pruned.rehydrate);
      for (const r of pruned.rehydrate) {
        this.log.warn(
          { account: r.accountId, days: this.config.CHANGE_LOG_RETENTION_DAYS },
          'account behind for longer than the retention: its old changes go, its object re-hydrates when it answers again',
        );
      }
      if (pruned.deleted > 0) this.log.info({ deleted: pruned.deleted, days: this.config.CHANGE_LOG_RETENTION_DAYS }, 'pruned change_logs');
    } catch (err) {
      this.log.warn({ err: errorSummary(err) }, 'change_logs retention failed; will try again');
    }
  }

  private async slotMetrics(): Promise<void> {
    try {
      const [row] = await this.sql<{ retained: string | null; lag: string | null }[]>`
        select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::text as retained,
               pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text as lag
        from pg_replication_slots where slot_name = ${this.config.SLOT_NAME}`;
      if (row?.retained != null) this.metrics.retainedWalBytes.set(Number(row.retained));
      if (row?.lag != null) this.metrics.lagBytes.set(Number(row.lag));
    } catch {
      // The database may be restarting; the next tick tries again.
    }
  }
}
