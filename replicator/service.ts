import postgres, { type Sql } from 'postgres';
import { errorSummary } from '../src/errors.ts';
import { formatLsn } from '../src/lsn.ts';
import type { Config } from './config.ts';
import { isPermanent, isSlotInUse, PgoutputDecodeError, StallError, toError } from './errors.ts';
import { pruneChangeLogs } from './log/retention.ts';
import type { Logger } from './logger.ts';
import { Metrics } from './metrics.ts';
import { withNoDelay } from './pg-socket.ts';
import { backoffDelay, sleep } from './retry.ts';
import { ReplicationSession } from './session.ts';

const RETENTION_INTERVAL_MS = 60 * 60 * 1000;
const SLOT_METRICS_INTERVAL_MS = 10_000;
/** A session that streamed this long resets the reconnect backoff. */
const HEALTHY_SESSION_MS = 30_000;

export interface Health {
  healthy: boolean;
  ready: boolean;
  state: string;
  reasons: string[];
  ackedLsn: string | null;
  unacked: number;
}

/**
 * The replicator: sessions one after the other, with backoff between them. It keeps no state of
 * its own; the slot's confirmed position is where every session starts.
 */
export class ReplicatorService {
  readonly metrics = new Metrics();
  private sql: Sql;
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
  }

  /** The ordinary connections: setup, TRUNCATE routing, retention, slot metrics (change_logs writers have their own). */
  private pool(): Sql {
    return postgres(
      this.config.DATABASE_URL,
      withNoDelay({
        max: 4,
        onnotice: () => {},
        connect_timeout: 10,
        connection: { application_name: 'edgeplane-replicator-writer' },
      }),
    );
  }

  start(): void {
    this.loop = this.runSessions();
    void this.prune();
    this.timers.push(setInterval(() => void this.prune(), RETENTION_INTERVAL_MS));
    this.timers.push(setInterval(() => void this.slotMetrics(), SLOT_METRICS_INTERVAL_MS));
  }

  /** SIGTERM: drain what is in flight, acknowledge, close. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopSignal.abort();
    for (const t of this.timers) clearInterval(t);
    await this.session?.drain(this.config.DRAIN_TIMEOUT_MS);
    await this.loop;
    await this.sql.end({ timeout: 2 });
  }

  health(now = Date.now()): Health {
    const s = this.session;
    const reasons: string[] = [];
    const streaming = s?.state === 'streaming';
    // Half the reconnect timeout: the stall shows here before the session gives up on it.
    if (s && streaming && now - s.lastReceivedAt > s.replicationTimeoutMs / 2) reasons.push('stream stalled: nothing received from the server');
    const oldest = s?.oldestUnackedAt;
    if (oldest !== undefined && now - oldest > this.config.STALL_ALERT_MS) reasons.push(`a change has waited ${Math.round((now - oldest) / 1000)} s for delivery`);
    const failed = this.lastError;
    if (failed instanceof PgoutputDecodeError && !streaming) reasons.push(`decode error: ${errorSummary(failed)}`);
    if (failed !== undefined && isPermanent(failed) && !streaming) reasons.push(`cannot replicate: ${errorSummary(failed)}`);
    return {
      healthy: reasons.length === 0,
      ready: streaming,
      state: this.stopping ? 'stopping' : streaming ? 'streaming' : this.standby ? 'standby' : (s?.state ?? 'starting'),
      reasons,
      ackedLsn: s ? formatLsn(s.ackedLsn) : null,
      unacked: s?.unackedChanges ?? 0,
    };
  }

  private async runSessions(): Promise<void> {
    let attempt = 0;
    while (!this.stopping) {
      const session = new ReplicationSession(this.config, this.sql, this.log, this.metrics, this.session?.backendPid);
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

  private async prune(): Promise<void> {
    try {
      const deleted = await pruneChangeLogs(this.sql, this.config.CHANGE_LOG_RETENTION_DAYS, 5000, this.stopSignal.signal);
      if (deleted > 0) this.log.info({ deleted, days: this.config.CHANGE_LOG_RETENTION_DAYS }, 'pruned change_logs');
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
