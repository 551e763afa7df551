import postgres, { type Sql } from 'postgres';
import { errorSummary } from '../src/errors.ts';
import { formatLsn, type Lsn } from '../src/lsn.ts';
import { hasTruncate, spilledDeliveries, toChanges } from './assemble/routed-changes.ts';
import type { SpillFile } from './assemble/spill-file.ts';
import { TransactionAssembler, type AssembledTransaction } from './assemble/transaction-assembler.ts';
import { listAccountsForTruncate } from './assemble/truncate-accounts.ts';
import type { Config } from './config.ts';
import type { Deliverer } from './deliver/deliverer.ts';
import { toDelivery } from './deliver/delivery.ts';
import { AssemblyError, SpillError, StallError, toError, TruncateRoutingError, WriterConnectionLost } from './errors.ts';
import { ChangeLogWriter, type LogEntry } from './log/change-log-writer.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { withNoDelay } from './pg-socket.ts';
import { PgoutputDecoder } from './pgoutput/decoder.ts';
import { AckWatermark } from './stream/ack-watermark.ts';
import { type Epoch, resolveEpoch } from './stream/epoch.ts';
import { livenessAction, livenessTimings, type LivenessTimings } from './stream/liveness.ts';
import { ReplicationStream } from './stream/replication-stream.ts';
import { ensurePublication, ensureSlot, identifySystem, readSlot, releaseStaleBackend, serverInfo, startReplicationCommand, streamOptions } from './stream/setup.ts';

/** How soon after the watermark moves the new position is acknowledged (coalesces acks of a burst). */
const ACK_DELAY_MS = 20;
/** Setup queries on a dead link would otherwise hang until TCP gives up; a new epoch's reset counts too. */
const SETUP_TIMEOUT_MS = 120_000;
/** Events of a spilled transaction read back from its file and routed at a time. */
const SPILL_CHUNK = 2_000;

/**
 * A change_logs writer's own connection: COPY must not share it with anything (see log/copy-in.ts). It
 * lives as long as the session (no recycling), so that its closing always means something: see
 * `ReplicationSession.writerConnectionLost`.
 */
function changeLogConnection(url: string, onClose: () => void): Sql {
  return postgres(
    url,
    withNoDelay({
      max: 1,
      max_lifetime: null,
      onnotice: () => {},
      onclose: onClose,
      connect_timeout: 10,
      connection: { application_name: 'edgeplane-replicator-change-logs' },
    }),
  );
}

export type SessionState = 'starting' | 'streaming' | 'draining' | 'ended';
type PauseReason = 'backpressure' | 'truncate' | 'spill' | 'draining';

/**
 * One replication connection's life: set up (publication, slot, epoch), stream, decode, assemble,
 * then each change goes to change_logs and to the deliverer; a position is acknowledged once every
 * change up to it is logged (docs/architecture.md#1-no-loss). Any failure ends the session; the
 * service starts a new one, which resumes from the slot. The deliverer outlives sessions.
 */
export class ReplicationSession {
  state: SessionState = 'starting';
  lastReceivedAt = Date.now();
  serverWalEnd: Lsn = 0n;
  receivedLsn: Lsn = 0n;
  /** The walsender serving this session, once streaming. */
  backendPid: number | undefined;
  private watermark = new AckWatermark(0n);
  private stream: ReplicationStream | undefined;
  private replication: Sql | undefined;
  private readonly decoder = new PgoutputDecoder();
  private readonly assembler: TransactionAssembler;
  private readonly changeLog: ChangeLogWriter;
  epoch: Epoch | undefined;
  /** When reading last paused (undefined while reading): silence while paused is ours, not the server's. */
  pausedSince: number | undefined;
  /** When change_logs last took a batch. */
  lastLoggedAt = Date.now();
  private timings: LivenessTimings = { statusIntervalMs: 10_000, timeoutMs: 120_000 };
  private lastStatusAt = 0;
  private ackTimer: NodeJS.Timeout | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private pausedFor = new Set<PauseReason>();
  /** The spilled transaction being routed, chunk by chunk (reading is paused meanwhile). */
  private spilling: Promise<void> | undefined;
  private settle!: { resolve: () => void; reject: (err: Error) => void };
  private readonly done: Promise<void>;

  constructor(
    private readonly config: Config,
    private readonly sql: Sql,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly deliverer: Deliverer,
    private readonly previousBackendPid: number | undefined,
  ) {
    this.done = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => {});
    this.assembler = new TransactionAssembler(
      (skip) => {
        this.metrics.skipped.inc({ reason: skip.reason });
        this.log.warn({ table: skip.table, xid: skip.xid, reason: skip.reason }, 'row not forwarded');
      },
      { maxEvents: config.SPILL_THRESHOLD, maxBytes: config.SPILL_THRESHOLD_BYTES },
      (spill) => {
        this.metrics.spilledTransactions.inc();
        this.log.info({ xid: spill.xid, events: spill.events }, 'transaction too large to hold: spilling it to a temporary file');
      },
    );
    const retry = { retryBaseMs: config.RETRY_BASE_MS, retryMaxMs: config.RETRY_MAX_MS };
    this.changeLog = new ChangeLogWriter(
      () => changeLogConnection(config.DATABASE_URL, () => this.writerConnectionLost(new Error('a change_logs connection was closed'))),
      { batchSize: config.CHANGE_LOG_BATCH_SIZE, lingerMs: 5, lanes: config.CHANGE_LOG_WRITERS, ...retry },
      (b) => this.completed(b),
      log,
      metrics,
      (err) => this.writerConnectionLost(err),
    );
  }

  get ackedLsn(): Lsn {
    return this.watermark.lsn;
  }

  get unackedChanges(): number {
    return this.watermark.unackedChanges;
  }

  get paused(): boolean {
    return this.pausedFor.size > 0;
  }

  get oldestUnackedAt(): number | undefined {
    return this.watermark.oldestReceivedAt;
  }

  /** A getter, so that a check after an `await` is not narrowed away by one before it. */
  private get ended(): boolean {
    return this.state === 'ended';
  }

  get replicationTimeoutMs(): number {
    return this.timings.timeoutMs;
  }

  /** Sets up and streams; resolves when the session ends cleanly (drain), rejects on failure. */
  async run(): Promise<void> {
    const setupTimer = setTimeout(() => this.abort(new StallError(`setup took longer than ${SETUP_TIMEOUT_MS} ms`)), SETUP_TIMEOUT_MS);
    try {
      const info = await serverInfo(this.sql);
      this.timings = livenessTimings(info.walSenderTimeoutMs, this.config.STATUS_INTERVAL_MS, this.config.REPLICATION_TIMEOUT_MS);
      await ensurePublication(this.sql, this.config.PUBLICATION_NAME, this.log);
      await releaseStaleBackend(this.sql, this.config.SLOT_NAME, this.previousBackendPid, this.log);
      this.replication = ReplicationStream.connect(this.config.DATABASE_URL, () => {});
      this.deliverer.suspend();
      const system = await identifySystem(this.replication);
      const slot = await ensureSlot(this.sql, this.replication, this.config.SLOT_NAME, this.log);
      // Before streaming: a new epoch's reset must not race with rows of the new stream.
      this.epoch = await resolveEpoch(this.sql, { slot: this.config.SLOT_NAME, ...system, slotCreated: slot.created, startLsn: slot.startLsn }, this.log);
      this.metrics.epoch.set(this.epoch.number);
      this.watermark = new AckWatermark(slot.confirmedFlush ?? 0n);
      this.deliverer.prepare(this.epoch.id, this.watermark.lsn);
      const options = streamOptions(info.versionNum);
      this.stream = await ReplicationStream.start(this.replication, startReplicationCommand(this.config.SLOT_NAME, this.config.PUBLICATION_NAME, options), {
        onXLogData: (frame) => this.onXLogData(frame),
        onKeepalive: (walEnd, reply) => this.onKeepalive(walEnd, reply),
        onEnd: (err) => this.end(err ?? (this.state === 'draining' ? undefined : new Error('replication stream closed by the server'))),
      });
      if (this.state === 'ended') {
        // Aborted during setup (timeout or stop): the stream that just opened must not live on.
        this.stream.destroy(new Error('session ended during setup'));
        return this.done;
      }
      this.state = 'streaming';
      this.lastReceivedAt = Date.now();
      this.backendPid = (await readSlot(this.sql, this.config.SLOT_NAME))?.activePid ?? undefined;
      this.metrics.connected.set(1);
      this.metrics.ackedLsn.set(Number(this.watermark.lsn));
      this.log.info({ slot: this.config.SLOT_NAME, epoch: this.epoch.id, lsn: formatLsn(this.watermark.lsn), protocol: options.protocolVersion, ...this.timings }, 'streaming');
      this.tickTimer = setInterval(() => this.tick(), Math.min(1000, this.timings.statusIntervalMs));
      await this.deliverer.begin();
    } catch (err) {
      this.end(toError(err));
    } finally {
      clearTimeout(setupTimer);
    }
    return this.done;
  }

  /** Stops reading, waits (bounded) for change_logs and the live batches, acknowledges what was logged, closes. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.state !== 'streaming') {
      this.end(undefined);
      return this.done.catch(() => {});
    }
    this.state = 'draining';
    this.pause('draining');
    // A spilled transaction being routed finishes first: its last chunks are not enqueued yet.
    const idle = (this.spilling ?? Promise.resolve()).then(() => Promise.all([this.changeLog.idle(), this.deliverer.idle()]));
    const timedOut = await Promise.race([idle.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), timeoutMs).unref())]);
    this.watermark.advance();
    this.sendStatus(false);
    this.log.info({ lsn: formatLsn(this.watermark.lsn), unlogged: this.watermark.unackedChanges, timedOut }, 'drained');
    await this.stream?.close();
    this.end(undefined);
    return this.done.catch(() => {});
  }

  /** Ends the session at once (the service's stop, or a test). */
  abort(err: Error): void {
    this.stream?.destroy(err);
    this.end(err);
  }

  /**
   * A change_logs connection was closed or cannot be opened. When Postgres shuts down it ends the
   * ordinary backends first, then keeps the walsender until we acknowledge everything it streamed,
   * which we cannot do while those changes are not logged: holding on would block the shutdown for
   * good. So the session ends (the replication connection with it) and the next one resumes from
   * the slot once the server is back. A network failure is handled the same way.
   */
  private writerConnectionLost(err: Error): void {
    if (this.state === 'ended') return;
    this.log.warn({ err: errorSummary(err), acked: formatLsn(this.watermark.lsn) }, 'lost a change_logs connection; ending the session');
    this.abort(new WriterConnectionLost(`change_logs connection lost: ${err.message}`, { cause: err }));
  }

  private onXLogData(frame: Buffer): void {
    this.lastReceivedAt = Date.now();
    let txn: AssembledTransaction | null;
    try {
      const message = this.decoder.decode(frame.subarray(25), frame.readBigUInt64BE(1));
      if (message.tag === 'stream_abort') this.log.debug({ xid: message.xid, subxid: message.subxid }, 'streamed transaction rolled back (or one of its subtransactions)');
      txn = this.assembler.push(message, frame.length);
    } catch (err) {
      // Nothing after this message is processed and the ack stays where it is: the next session
      // starts again from the slot's confirmed position.
      if (err instanceof SpillError) {
        this.log.error({ err: errorSummary(err), acked: formatLsn(this.watermark.lsn) }, 'cannot spill a large transaction to disk; reconnecting without acknowledging it');
        this.abort(err);
        return;
      }
      this.metrics.decodeErrors.inc();
      this.log.error(
        { err: errorSummary(err), lsn: formatLsn(frame.readBigUInt64BE(1)), acked: formatLsn(this.watermark.lsn) },
        'undecodable replication message; reconnecting without acknowledging it',
      );
      this.abort(toError(err));
      return;
    }
    if (txn) this.commit(txn);
  }

  private commit(txn: AssembledTransaction): void {
    if (txn.spill) {
      // Held until it is routed whole: nothing read after it may overtake it.
      this.pause('spill');
      this.spilling = this.routeSpilled(txn, txn.spill);
      return;
    }
    if (!hasTruncate(txn)) {
      this.route(txn, []);
      return;
    }
    // A truncate goes to every account; look them up with the stream held, so nothing overtakes it.
    this.pause('truncate');
    listAccountsForTruncate(this.sql)
      .then((accounts) => {
        this.log.warn({ lsn: formatLsn(txn.commitLsn), accounts: accounts.length }, 'TRUNCATE of a domain table; every account is told');
        this.route(txn, accounts);
        this.resume('truncate');
      })
      .catch((err: unknown) => this.abort(new TruncateRoutingError(txn.commitLsn, { cause: err })));
  }

  private route(txn: AssembledTransaction, truncateAccounts: string[]): void {
    const routed = toChanges(txn, truncateAccounts);
    const ticket = this.watermark.add(txn.endLsn, routed.length, routed.length, Date.now());
    for (const r of routed) {
      const d = toDelivery(r);
      this.changeLog.enqueue({ ...d, ticket });
      this.deliverer.route(d);
    }
    this.metrics.changes.inc(routed.length);
    this.routed(txn, routed.length);
  }

  /**
   * A spilled transaction (docs/architecture.md#the-path-of-a-change, step 4) is read back from
   * its file in chunks; each chunk's changes go to change_logs and the deliverer like a small
   * transaction's, and the next chunk is read once the writer's queue is short again, so memory
   * stays bounded. Reading the stream stays paused until the last chunk is routed; status updates
   * go on (`tick`). Its one ticket counts every change: it is registered once their number is
   * known and completes when the last of them is logged.
   */
  private async routeSpilled(txn: AssembledTransaction, spill: SpillFile): Promise<void> {
    try {
      let accounts: string[] = [];
      if (spill.hasTruncate) {
        try {
          accounts = await listAccountsForTruncate(this.sql);
        } catch (err) {
          throw new TruncateRoutingError(txn.commitLsn, { cause: err });
        }
        this.log.warn({ lsn: formatLsn(txn.commitLsn), accounts: accounts.length }, 'TRUNCATE of a domain table; every account is told');
      }
      if (this.ended) return;
      const n = spill.changeCount(accounts.length);
      const ticket = this.watermark.add(txn.endLsn, n, n, Date.now());
      this.log.info({ lsn: formatLsn(txn.commitLsn), xid: txn.xid, changes: n, fileBytes: spill.bytes }, 'routing a spilled transaction in chunks');
      // Besides the batches in flight, about a batch waiting for the next free lane: the lanes stay busy, little waits in memory.
      const queued = this.config.CHANGE_LOG_BATCH_SIZE;
      let seq = 0;
      for (let events = spill.read(SPILL_CHUNK); events.length > 0; events = spill.read(SPILL_CHUNK)) {
        const chunk = spilledDeliveries(txn, events, accounts, seq);
        seq += chunk.length;
        for (const d of chunk) {
          this.changeLog.enqueue({ ...d, ticket });
          this.deliverer.route(d);
        }
        this.metrics.changes.inc(chunk.length);
        await this.changeLog.below(queued);
        if (this.ended) return;
      }
      // A miscount would leave the ticket open for good: the slot would never be confirmed past it.
      if (seq !== n) throw new AssemblyError(`spilled transaction ${txn.xid} read back ${seq} changes of ${n}`, { xid: txn.xid, lsn: txn.commitLsn });
      this.routed(txn, n);
      this.resume('spill');
    } catch (err) {
      this.abort(toError(err));
    } finally {
      spill.remove();
      this.spilling = undefined;
    }
  }

  private routed(txn: AssembledTransaction, changes: number): void {
    this.receivedLsn = txn.endLsn;
    this.metrics.transactions.inc();
    this.metrics.receivedLsn.set(Number(txn.endLsn));
    this.metrics.unacked.set(this.watermark.unackedChanges);
    if (changes === 0 && this.watermark.advance()) this.acknowledge();
    if (this.watermark.unackedChanges > this.config.MAX_UNACKED) this.pause('backpressure');
  }

  private completed(batch: LogEntry[]): void {
    this.lastLoggedAt = Date.now();
    for (const d of batch) this.watermark.complete(d.ticket);
    if (this.watermark.advance()) this.acknowledge();

    this.metrics.unacked.set(this.watermark.unackedChanges);
    if (this.watermark.unackedChanges <= this.config.MAX_UNACKED / 2) this.resume('backpressure');
  }

  private onKeepalive(walEnd: Lsn, replyRequested: boolean): void {
    this.lastReceivedAt = Date.now();
    this.serverWalEnd = walEnd;
    const moved = this.watermark.followServer(walEnd, this.assembler.idle && !this.pausedFor.has('truncate') && !this.pausedFor.has('spill'));
    if (moved) this.deliverer.loggedThrough(this.watermark.lsn);
    if (replyRequested || moved) this.sendStatus(false);
  }

  /** The watermark moved: the log is complete further on, and Postgres hears of it shortly. */
  private acknowledge(): void {
    this.deliverer.loggedThrough(this.watermark.lsn);
    this.scheduleAck();
  }

  private scheduleAck(): void {
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.sendStatus(false);
    }, ACK_DELAY_MS);
  }

  private sendStatus(replyRequested: boolean): void {
    if (!this.stream) return;
    this.stream.sendStatus(this.watermark.lsn, replyRequested);
    this.lastStatusAt = Date.now();
    this.metrics.ackedLsn.set(Number(this.watermark.lsn));
  }

  private tick(): void {
    const now = Date.now();
    const oldest = this.watermark.oldestReceivedAt;
    this.metrics.lagSeconds.set(oldest === undefined ? 0 : (now - oldest) / 1000);
    // While reading is paused the server's messages wait unread: that silence is not a stall.
    if (this.pausedSince !== undefined) this.lastReceivedAt = now;
    const action = livenessAction(now, this.lastReceivedAt, this.lastStatusAt, this.timings);
    if (action === 'reconnect') {
      this.log.error({ silentMs: now - this.lastReceivedAt, lsn: formatLsn(this.watermark.lsn) }, 'no message from the server; reconnecting');
      this.abort(new StallError(`nothing received from the server for ${now - this.lastReceivedAt} ms`));
    } else if (action !== 'none') this.sendStatus(action === 'ping');
  }

  private pause(reason: PauseReason): void {
    if (this.pausedFor.has(reason)) return;
    this.pausedFor.add(reason);
    this.pausedSince ??= Date.now();
    this.stream?.pause();
    this.metrics.paused.set(1);
    if (reason === 'backpressure') this.log.info({ unacked: this.watermark.unackedChanges }, 'backpressure: reading paused');
  }

  private resume(reason: Exclude<PauseReason, 'draining'>): void {
    if (!this.pausedFor.delete(reason)) return;
    if (this.pausedFor.size > 0) return;
    this.pausedSince = undefined;
    this.lastReceivedAt = Date.now();
    this.stream?.resume();
    this.metrics.paused.set(0);
  }

  private end(err: Error | undefined): void {
    if (this.state === 'ended') return;
    this.state = 'ended';
    clearInterval(this.tickTimer);
    clearTimeout(this.ackTimer);
    this.changeLog.stop();
    // Spill files of open transactions go; one being routed is removed when its routing sees the end.
    this.assembler.discard();
    this.metrics.connected.set(0);
    this.metrics.paused.set(0);
    this.stream?.destroy(err ?? new Error('session ended'));
    void this.replication?.end({ timeout: 1 });
    if (err) this.settle.reject(err);
    else this.settle.resolve();
  }
}
