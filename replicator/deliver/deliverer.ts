import type { Sql } from 'postgres';
import { errorSummary } from '../../src/errors.ts';
import { comparePositions, formatPosition, type Lsn, type Position } from '../../src/lsn.ts';
import { DeliveryError } from '../errors.ts';
import { readChangeLogPage } from '../log/change-log-reader.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { backoffDelay } from '../retry.ts';
import { type Cursor, CursorStore } from './cursor-store.ts';
import { type Delivery, deliveryBytes } from './delivery.ts';
import { EdgeClient } from './edge-client.ts';
import { Lane, type LaneFailure } from './lane.ts';
import { batchBody } from './request-body.ts';
import { Slots } from './slots.ts';
import { classifyStatus } from './worker-response.ts';

export interface DelivererOptions {
  edgeUrl: string;
  secret: string;
  batchSize: number;
  batchBytes: number;
  maxRowBytes: number;
  lingerMs: number;
  concurrency: number;
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
  permanentRetryMs: number;
  /** A live account holding more changes than this in memory is fed from the log instead. */
  queueMax: number;
  /** Bytes of live changes held in memory for all accounts together. */
  queueBytes: number;
  pageSize: number;
  catchUpConcurrency: number;
  cursorFlushMs: number;
}

/** A lane idle this long, with its cursor saved, leaves memory (its state is in delivery_cursors). */
const IDLE_LANE_MS = 10 * 60_000;

export interface LaneReport {
  account: string;
  state: Lane['state'];
  backlog: number;
  behindSeconds: number;
  delivered: string | null;
  failure?: { reason: string; message: string; attempts: number; since: string; at: string | null };
}

/**
 * Per-account delivery to the Worker (docs/architecture.md#1-no-loss, #10). change_logs is the
 * outbox: live changes go from memory, one batch in flight per account, accounts in parallel; an
 * account that fails, falls behind or starts behind is fed from the log in position order from its
 * cursor, in pages, while the others go on. Nothing here holds the slot's confirmation back.
 */
export class Deliverer {
  private readonly lanes = new Map<string, Lane>();
  private readonly requests: Slots;
  private readonly catchUps: Slots;
  private readonly client: EdgeClient;
  private readonly cursors: CursorStore;
  private epoch: string | null = null;
  /** Every change committed before this LSN is in change_logs (the acknowledged position). */
  private loggedUpTo: Lsn = 0n;
  private readonly awaitingLog = new Set<Lane>();
  private active = false;
  /** Between sessions: a new epoch may be rewriting the cursors, which no flush may then touch. */
  private between = true;
  private stopped = false;
  private totalQueuedBytes = 0;
  private inFlight = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  private abort = new AbortController();

  constructor(
    private readonly options: DelivererOptions,
    /** The service's pool, which it replaces after a stall. */
    private readonly db: () => Sql,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.requests = new Slots(options.concurrency);
    this.catchUps = new Slots(options.catchUpConcurrency);
    this.client = new EdgeClient(options.edgeUrl, options.secret, options.concurrency);
    this.cursors = new CursorStore(db);
  }

  get currentEpoch(): string | null {
    return this.epoch;
  }

  /**
   * Before a session streams: its epoch, and every change committed before `loggedThrough` in
   * change_logs (the slot's confirmed position; the stream brings the rest). A new epoch forgets
   * every lane first, before the new stream routes anything to one.
   */
  prepare(epoch: string, loggedThrough: Lsn): void {
    if (this.epoch !== null && this.epoch !== epoch) {
      // A lane of the old epoch still sending or catching up stops there: its account starts over
      // in a new lane, with a re-hydration.
      for (const lane of this.lanes.values()) {
        clearTimeout(lane.timer);
        lane.retired = true;
        lane.dropQueue();
      }
      this.lanes.clear();
      this.awaitingLog.clear();
      this.totalQueuedBytes = 0;
      this.loggedUpTo = 0n;
    }
    this.epoch = epoch;
    this.loggedThrough(loggedThrough);
  }

  /**
   * Delivers again (the session streams): the accounts whose cursor is behind the log, or that must
   * re-hydrate, are caught up from it; what was routed meanwhile waits in their lanes.
   */
  async begin(): Promise<void> {
    const epoch = this.epoch;
    this.between = false;
    // Nothing goes out until the accounts behind are known: a change the stream routes meanwhile
    // would otherwise reach an account before its backlog (and move its position past it) or,
    // in a new epoch, before its re-hydration.
    const behind = await this.cursors.behind();
    for (const c of behind) this.catchUpFrom(c);
    this.active = true;
    if (behind.length > 0) this.log.info({ accounts: behind.length, epoch }, 'accounts behind change_logs: catching them up');
    this.flushTimer ??= setInterval(() => void this.tick(), this.options.cursorFlushMs);
    for (const lane of this.lanes.values()) this.kick(lane);
  }

  /**
   * A session is setting up (and may start a new epoch), or this process lost the slot to another
   * replicator: nothing is sent, and no cursor is written, until `begin`.
   */
  suspend(): void {
    this.active = false;
    this.between = true;
  }

  /** A change of the live stream, in commit order per account. */
  route(d: Delivery): void {
    const lane = this.lane(d.accountId);
    if (lane.has(d.position)) return;
    lane.lastRouted = d.position;
    lane.backlog++;
    lane.lastActivityAt = Date.now();
    if (lane.mode !== 'live') {
      lane.oldestPendingAt ??= Date.parse(d.committedAt);
      return;
    }
    if (lane.queue.length === 0 && !lane.running) lane.oldestPendingAt = Date.parse(d.committedAt);
    lane.queue.push(d);
    const bytes = deliveryBytes(d);
    lane.queuedBytes += bytes;
    this.totalQueuedBytes += bytes;
    if (lane.queue.length > this.options.queueMax) this.fallBehind(lane, 'its queue is full');
    else if (this.totalQueuedBytes > this.options.queueBytes) this.fallBehind(this.largestQueue(), 'the memory for queued changes is full');
    this.kick(lane);
  }

  /** Every change committed before `lsn` is in change_logs: accounts waiting for more of the log read again. */
  loggedThrough(lsn: Lsn): void {
    if (lsn <= this.loggedUpTo) return;
    this.loggedUpTo = lsn;
    for (const lane of this.awaitingLog) {
      lane.awaitingLog = false;
      this.kick(lane);
    }
    this.awaitingLog.clear();
  }

  /** Retention pruned undelivered rows of these accounts: each re-hydrates, then resumes past `to`. */
  mustRehydrate(marks: readonly { accountId: string; to: Position }[]): void {
    for (const m of marks) {
      const lane = this.lane(m.accountId);
      lane.needsRehydrate = true;
      if (!lane.skipTo || comparePositions(m.to, lane.skipTo) > 0) lane.skipTo = m.to;
      this.fallBehind(lane, 'its undelivered changes were pruned');
      this.kick(lane);
    }
  }

  /** The worst accounts first: refused, then by how long their oldest undelivered change waits. */
  report(limit: number, now = Date.now()): { behind: number; refused: number; worst: LaneReport[] } {
    const lanes = [...this.lanes.values()].filter((l) => l.mode !== 'live' || l.failure || l.backlog > 0);
    const seconds = (l: Lane) => (l.oldestPendingAt === undefined ? 0 : Math.max(0, (now - l.oldestPendingAt) / 1000));
    lanes.sort((a, b) => Number(b.failure?.verdict === 'permanent') - Number(a.failure?.verdict === 'permanent') || seconds(b) - seconds(a) || b.backlog - a.backlog);
    return {
      behind: lanes.filter((l) => l.mode !== 'live').length,
      refused: lanes.filter((l) => l.failure?.verdict === 'permanent').length,
      worst: lanes.slice(0, limit).map((l) => ({
        account: l.accountId,
        state: l.state,
        backlog: l.backlog,
        behindSeconds: Math.round(seconds(l)),
        delivered: l.delivered && formatPosition(l.delivered),
        ...(l.failure
          ? {
              failure: {
                reason: l.failure.reason,
                message: l.failure.message,
                attempts: l.failure.attempts,
                since: new Date(l.failure.since).toISOString(),
                at: l.failure.at && formatPosition(l.failure.at),
              },
            }
          : {}),
      })),
    };
  }

  /** Resolves once no live change waits in memory and no request is in flight (bounded by the caller). */
  idle(): Promise<void> {
    if (this.totalQueuedBytes === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Saves every cursor that moved (on a timer, and once more when stopping). */
  flush(): Promise<void> {
    this.flushing ??= this.saveCursors().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.active = false;
    clearInterval(this.flushTimer);
    for (const lane of this.lanes.values()) clearTimeout(lane.timer);
    this.abort.abort();
    this.requests.releaseAll();
    this.catchUps.releaseAll();
    for (const w of this.idleWaiters.splice(0)) w();
    await this.flush().catch(() => {});
    this.client.close();
  }

  private lane(accountId: string): Lane {
    let lane = this.lanes.get(accountId);
    if (!lane) {
      lane = new Lane(accountId);
      this.lanes.set(accountId, lane);
    }
    return lane;
  }

  private catchUpFrom(c: Cursor): void {
    const lane = this.lane(c.accountId);
    // A lane of this process may know of later deliveries than the stored cursor does.
    if (c.delivered && (!lane.delivered || comparePositions(c.delivered, lane.delivered) > 0)) lane.delivered = c.delivered;
    if (c.delivered && (!lane.saved || comparePositions(c.delivered, lane.saved) > 0)) lane.saved = c.delivered;
    lane.needsRehydrate = c.needsRehydrate;
    lane.skipTo = c.skipTo;
    this.fallBehind(lane, undefined);
  }

  /** From now on the account is fed from the log; what it held in memory goes (the log has it). */
  private fallBehind(lane: Lane, why: string | undefined): void {
    if (lane.mode === 'live' && why) this.log.info({ account: lane.accountId, queued: lane.queue.length, why }, 'account falls behind: feeding it from change_logs');
    lane.mode = 'catch_up';
    this.totalQueuedBytes -= lane.dropQueue();
    this.wakeIdle();
  }

  private largestQueue(): Lane {
    let largest: Lane | undefined;
    for (const lane of this.lanes.values()) if (!largest || lane.queuedBytes > largest.queuedBytes) largest = lane;
    return largest as Lane;
  }

  private kick(lane: Lane): void {
    if (lane.running || lane.retired || !this.active || this.stopped) return;
    const now = Date.now();
    if (lane.retryAt > now) {
      lane.timer ??= setTimeout(() => {
        lane.timer = undefined;
        this.kick(lane);
      }, lane.retryAt - now);
      return;
    }
    if (lane.mode === 'catch_up') {
      if (lane.awaitingLog) return;
      lane.running = true;
      void this.catchUp(lane).finally(() => this.settled(lane));
      return;
    }
    if (lane.queue.length === 0) return;
    if (this.options.lingerMs > 0 && lane.queue.length < this.options.batchSize) {
      lane.timer ??= setTimeout(() => {
        lane.timer = undefined;
        if (!lane.running && lane.queue.length > 0 && lane.mode === 'live') this.startLive(lane);
      }, this.options.lingerMs);
      return;
    }
    clearTimeout(lane.timer);
    lane.timer = undefined;
    this.startLive(lane);
  }

  private startLive(lane: Lane): void {
    lane.running = true;
    void this.live(lane).finally(() => this.settled(lane));
  }

  private settled(lane: Lane): void {
    lane.running = false;
    this.kick(lane);
    this.wakeIdle();
  }

  private async live(lane: Lane): Promise<void> {
    while (lane.mode === 'live' && lane.queue.length > 0 && this.active && !lane.retired) {
      const batch = this.takeBatch(lane);
      if (!(await this.send(lane, batch))) return;
      lane.oldestPendingAt = lane.queue[0] ? Date.parse(lane.queue[0].committedAt) : undefined;
    }
  }

  private takeBatch(lane: Lane): Delivery[] {
    let n = 0;
    let bytes = 0;
    while (n < lane.queue.length && n < this.options.batchSize) {
      const b = deliveryBytes(lane.queue[n] as Delivery);
      if (n > 0 && bytes + b > this.options.batchBytes) break;
      bytes += b;
      n++;
    }
    lane.queuedBytes -= bytes;
    this.totalQueuedBytes -= bytes;
    return lane.queue.splice(0, n);
  }

  private async catchUp(lane: Lane): Promise<void> {
    await this.catchUps.acquire();
    try {
      while (lane.mode === 'catch_up' && this.active && !lane.retired) {
        if (lane.needsRehydrate) {
          if (!(await this.rehydrate(lane))) return;
          continue;
        }
        let page: Delivery[];
        try {
          page = await readChangeLogPage(this.db(), lane.accountId, lane.delivered, this.loggedUpTo, this.options.pageSize);
        } catch (err) {
          this.fail(lane, 'transient', 'database', `reading change_logs: ${errorSummary(err)}`, null);
          return;
        }
        this.metrics.catchUpPages.inc();
        if (page.length === 0) {
          // Atomic with route(): everything routed so far is delivered, so live order holds from here.
          if (lane.caughtUp) this.goLive(lane);
          else {
            lane.awaitingLog = true;
            this.awaitingLog.add(lane);
          }
          return;
        }
        lane.oldestPendingAt = Date.parse((page[0] as Delivery).committedAt);
        for (let i = 0; i < page.length; ) {
          const batch = this.slice(page, i);
          i += batch.length;
          if (!(await this.send(lane, batch)) || lane.retired) return;
          this.metrics.catchUpChanges.inc(batch.length);
        }
      }
    } finally {
      this.catchUps.release();
    }
  }

  private slice(page: readonly Delivery[], from: number): Delivery[] {
    let end = from;
    let bytes = 0;
    while (end < page.length && end - from < this.options.batchSize) {
      const b = deliveryBytes(page[end] as Delivery);
      if (end > from && bytes + b > this.options.batchBytes) break;
      bytes += b;
      end++;
    }
    return page.slice(from, end);
  }

  private goLive(lane: Lane): void {
    lane.mode = 'live';
    lane.backlog = 0;
    lane.oldestPendingAt = undefined;
    this.log.info({ account: lane.accountId, position: lane.delivered && formatPosition(lane.delivered) }, 'account caught up: live again');
  }

  private async rehydrate(lane: Lane): Promise<boolean> {
    const body = Buffer.from(JSON.stringify({ epoch: this.epoch }));
    const failure = await this.post(lane.accountId, `/v1/accounts/${lane.accountId}/rehydrate`, body);
    if (failure) {
      this.fail(lane, failure.verdict, failure.reason, failure.message, null);
      return false;
    }
    // Its epoch ended meanwhile: the cursor belongs to the new one now.
    if (lane.retired) return false;
    const to = lane.skipTo && (!lane.delivered || comparePositions(lane.skipTo, lane.delivered) > 0) ? lane.skipTo : lane.delivered;
    try {
      await this.cursors.rehydrated(lane.accountId, to);
    } catch (err) {
      this.fail(lane, 'transient', 'database', `saving the re-hydration: ${errorSummary(err)}`, null);
      return false;
    }
    lane.needsRehydrate = false;
    lane.skipTo = null;
    lane.delivered = to;
    lane.saved = to;
    this.metrics.rehydrations.inc();
    this.log.info({ account: lane.accountId, epoch: this.epoch, resume_after: to && formatPosition(to) }, 'account re-hydrated');
    return true;
  }

  /** One batch to the account's object; false when it failed (the lane then waits and catches up). */
  private async send(lane: Lane, batch: Delivery[]): Promise<boolean> {
    const first = batch[0] as Delivery;
    const last = batch[batch.length - 1] as Delivery;
    const body = Buffer.from(batchBody(batch, this.epoch, this.options.maxRowBytes));
    this.inFlight++;
    let failure;
    try {
      failure = await this.post(lane.accountId, `/v1/accounts/${lane.accountId}/changes`, body);
    } finally {
      this.inFlight--;
    }
    if (failure) {
      this.fail(lane, failure.verdict, failure.reason, failure.message, first.position);
      return false;
    }
    if (!lane.delivered || comparePositions(last.position, lane.delivered) > 0) lane.delivered = last.position;
    lane.backlog = Math.max(0, lane.backlog - batch.length);
    lane.lastActivityAt = Date.now();
    if (lane.failure) this.log.info({ account: lane.accountId, attempts: lane.failure.attempts, position: formatPosition(last.position) }, 'account delivers again');
    lane.failure = undefined;
    this.metrics.delivered.inc(batch.length);
    return true;
  }

  private async post(accountId: string, path: string, body: Buffer): Promise<{ verdict: 'transient' | 'permanent'; reason: string; message: string } | undefined> {
    await this.requests.acquire();
    if (this.stopped) return { verdict: 'transient', reason: 'stopped', message: 'the replicator is stopping' };
    this.metrics.batchesInFlight.inc();
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    try {
      const response = await this.client.post(path, body, AbortSignal.any([this.abort.signal, timeout]));
      const verdict = classifyStatus(response.status);
      if (verdict === 'delivered') return undefined;
      const err = new DeliveryError(`HTTP ${response.status}: ${response.text.slice(0, 500)}`, accountId, 'status', response.status);
      return { verdict, reason: String(response.status), message: err.message };
    } catch (err) {
      const timedOut = timeout.aborted && !this.abort.signal.aborted;
      return { verdict: 'transient', reason: timedOut ? 'timeout' : 'network', message: timedOut ? 'request timed out' : `request failed: ${errorSummary(err)}` };
    } finally {
      this.metrics.batchesInFlight.dec();
      this.requests.release();
    }
  }

  private fail(lane: Lane, verdict: LaneFailure['verdict'], reason: string, message: string, at: Position | null): void {
    if (this.stopped) return;
    const attempts = (lane.failure?.attempts ?? 0) + 1;
    lane.failure = { verdict, reason, message, since: lane.failure?.since ?? Date.now(), attempts, at };
    const delay = verdict === 'permanent' ? this.options.permanentRetryMs : backoffDelay(attempts - 1, this.options.retryBaseMs, this.options.retryMaxMs);
    lane.retryAt = Date.now() + delay;
    this.fallBehind(lane, `delivery failed (${reason})`);
    this.metrics.retries.inc({ target: 'worker', reason });
    const context = { account: lane.accountId, position: at && formatPosition(at), reason, attempts, retry_ms: delay, err: message };
    if (verdict === 'permanent') {
      this.metrics.refusals.inc();
      this.log.error(context, "the account's object refused a well-signed batch: retrying slowly, never skipping; the other accounts go on");
    } else this.log.warn(context, 'delivery failed; retrying this account with backoff');
  }

  private wakeIdle(): void {
    if (this.totalQueuedBytes === 0 && this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async tick(): Promise<void> {
    const report = this.report(0);
    this.metrics.accountsBehind.set(report.behind);
    this.metrics.accountsRefused.set(report.refused);
    let maxBacklog = 0;
    let maxSeconds = 0;
    const now = Date.now();
    for (const lane of this.lanes.values()) {
      maxBacklog = Math.max(maxBacklog, lane.backlog);
      if (lane.oldestPendingAt !== undefined) maxSeconds = Math.max(maxSeconds, (now - lane.oldestPendingAt) / 1000);
    }
    this.metrics.backlogChanges.set(maxBacklog);
    this.metrics.backlogSeconds.set(maxSeconds);
    await this.flush().catch((err: unknown) => this.log.warn({ err: errorSummary(err) }, 'saving delivery cursors failed; will try again'));
  }

  private async saveCursors(): Promise<void> {
    if (this.between) return;
    const updates: { lane: Lane; position: Position }[] = [];
    const now = Date.now();
    for (const lane of this.lanes.values()) {
      if (lane.delivered && (!lane.saved || comparePositions(lane.delivered, lane.saved) > 0)) updates.push({ lane, position: lane.delivered });
      else if (lane.mode === 'live' && !lane.running && lane.queue.length === 0 && !lane.failure && now - lane.lastActivityAt > IDLE_LANE_MS) {
        this.lanes.delete(lane.accountId);
      }
    }
    for (let i = 0; i < updates.length; i += 1000) {
      const chunk = updates.slice(i, i + 1000);
      await this.cursors.advance(chunk.map((u) => ({ accountId: u.lane.accountId, position: u.position })));
      for (const u of chunk) u.lane.saved = u.position;
    }
  }
}
