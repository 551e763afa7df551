import { log } from '../log.ts';
import { type Database, DatabaseError } from './database.ts';
import type { FlowLogEntry, FlowStore } from './flow-store.ts';

const BATCH = 2_000;
/**
 * The outbox is flushed once no flow arrived for QUIET_MS, or MAX_DELAY_MS after its oldest
 * entry, or when a batch is full: bursts go to Postgres in one statement, and the flush (a new
 * connection, whose SCRAM authentication alone takes the object's thread for tens of
 * milliseconds) happens between bursts rather than in the middle of one.
 */
export const QUIET_MS = 1_000;
export const MAX_DELAY_MS = 10_000;
const RETRY_MS = { base: 1_000, max: 60_000 };
/**
 * Retention of Postgres `flows` (docs/architecture.md#11-bounded): each object deletes its own
 * account's rows older than FLOW_RETENTION_DAYS, at most RETENTION_LIMIT per run and at most one
 * run an hour, sooner (RETENTION_CATCH_UP_MS) only while a run finds a full batch.
 */
const RETENTION_LIMIT = 10_000;
const RETENTION_EVERY_MS = 3_600_000;
const RETENTION_CATCH_UP_MS = 600_000;

/** Appends outbox entries to Postgres `flows`; replays after a failure insert nothing twice. */
async function append(db: Database, entries: readonly FlowLogEntry[]): Promise<void> {
  await db.run(
    `appending ${entries.length} flows`,
    (sql) => sql`
    insert into flows (id, account_id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at)
    select id, account_id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at
    from jsonb_to_recordset(${`[${entries.map((e) => e.json).join(',')}]`}::text::jsonb) as x(
      id uuid, account_id uuid, client_id uuid, gateway_id uuid, resource_id uuid, policy_id uuid, token_id uuid, expires_at timestamptz)
    on conflict (id) do nothing`,
  );
}

/**
 * Deletes up to `limit` of the account's rows older than `retentionMs`; returns how many went and
 * the oldest row left (epoch ms; null when none is younger). The edge's role needs DELETE on
 * `flows` and SELECT on its id, account_id and inserted_at (README, Production).
 */
async function retain(db: Database, accountId: string, retentionMs: number, limit: number): Promise<{ deleted: number; oldest: number | null }> {
  const seconds = retentionMs / 1000;
  const [row] = await db.run(
    'deleting old flows',
    (sql) => sql<{ deleted: number; oldest: number | null }[]>`
    with doomed as (
      select id from flows where account_id = ${accountId}::uuid and inserted_at < now() - make_interval(secs => ${seconds}::float8) limit ${limit}::int
    ), gone as (
      delete from flows where id in (select id from doomed) returning 1
    )
    select (select count(*)::int from gone) as deleted,
      (select (extract(epoch from min(inserted_at)) * 1000)::float8 from flows
        where account_id = ${accountId}::uuid and inserted_at >= now() - make_interval(secs => ${seconds}::float8)) as oldest`,
  );
  // Whole milliseconds, rounded up: an alarm at that instant finds the row past the retention.
  return { deleted: row!.deleted, oldest: row!.oldest === null ? null : Math.ceil(Number(row!.oldest)) };
}

/**
 * Moves the durable outbox of new flows to Postgres in the background (issue 4: never on the
 * request path): a short delay batches bursts, one flush runs at a time, and a failed flush is
 * retried by the object's alarm with capped exponential backoff. Timers die with the instance (a
 * deploy, a reset; an object does not hibernate while one is pending): the object's alarm is kept
 * no later than `dueAt`, and a new instance that finds entries left flushes them at once
 * (docs/architecture.md#create_flow).
 */
export class FlowLogWriter {
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** When the oldest entry not yet handed to a flush was added (epoch ms). */
  private oldest: number | undefined;
  /** The latest the outbox must be flushed by (epoch ms), until a flush empties it; undefined: nothing waits. */
  private due: number | undefined;
  private flushing: Promise<void> | undefined;
  private failures = 0;
  /** When a failed flush should be retried (epoch ms), for the alarm; null when none failed. */
  private retryAt: number | null = null;
  /** A mirror of the stored retention time; undefined until read in this instance. */
  private retention: number | null | undefined;

  constructor(
    private readonly store: FlowStore,
    private readonly db: Database,
    private readonly ctx: DurableObjectState,
    private readonly accountId: () => string | null,
    /** Makes the object's alarm fire by then. */
    private readonly wakeBy: (at: number) => Promise<void>,
    /** A flush emptied the outbox: the alarm kept for it may be recomputed. */
    private readonly flushed: () => Promise<void> = async () => {},
    /** How long rows of Postgres `flows` are kept; null: forever. */
    private readonly retentionMs: number | null = null,
  ) {}

  /** When the outbox must be flushed at the latest (its oldest entry's maximum delay, or a retry); null when nothing waits. */
  get dueAt(): number | null {
    return this.retryAt ?? this.due ?? null;
  }

  /** Entries left by an earlier instance, whose age is unknown: flush them now (and by the alarm, should this instance end too). */
  overdue(): void {
    if (this.retryAt !== null || this.store.logBacklog === 0) return;
    this.due ??= Date.now() + MAX_DELAY_MS;
    this.start();
  }

  /** When retention runs next (epoch ms), for the alarm; null when not scheduled. */
  get retentionAt(): number | null {
    if (this.retentionMs === null) return null;
    // Not `??=`: null (none scheduled) is a value read once too, not a reason to read SQLite every batch.
    if (this.retention === undefined) this.retention = this.store.retentionAt;
    return this.retention;
  }

  private set retentionAt(at: number | null) {
    this.store.retentionAt = at;
    this.retention = at;
  }

  /**
   * Deletes the account's flows past the retention, if a run is due: after a flush that appended
   * rows when none is scheduled yet (the first rows, or ones written before retention existed),
   * and when the time the last run scheduled has come (the alarm).
   */
  async retainIfDue(appended: boolean): Promise<void> {
    const accountId = this.accountId();
    if (this.retentionMs === null || accountId === null) return;
    const at = this.retentionAt;
    const now = Date.now();
    if (at === null ? !appended : at > now) return;
    let next: number | null;
    try {
      const { deleted, oldest } = await retain(this.db, accountId, this.retentionMs, RETENTION_LIMIT);
      next = deleted >= RETENTION_LIMIT ? now + RETENTION_CATCH_UP_MS : oldest === null ? null : Math.max(now + RETENTION_EVERY_MS, oldest + this.retentionMs);
      if (deleted > 0) log.info({ component: 'account', account: accountId, deleted }, 'deleted flows past the retention');
    } catch (err) {
      if (!(err instanceof DatabaseError)) throw err;
      next = now + RETENTION_CATCH_UP_MS;
      log.warn({ component: 'account', account: accountId, err: err.message }, 'deleting old flows failed; retrying later');
    }
    this.retentionAt = next;
    if (next !== null) await this.wakeBy(next);
  }

  /** A flow was added to the outbox: flush once flows pause (now, if one is overdue or a batch is full), unless a retry is pending. */
  soon(): void {
    if (this.retryAt !== null) return;
    const now = Date.now();
    this.oldest ??= now;
    this.due ??= this.oldest + MAX_DELAY_MS;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.store.logBacklog >= BATCH || now - this.oldest >= MAX_DELAY_MS) {
      this.start();
      return;
    }
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.start();
      },
      Math.min(QUIET_MS, this.oldest + MAX_DELAY_MS - now),
    );
  }

  private start(): void {
    this.oldest = undefined;
    this.ctx.waitUntil(this.flush());
  }

  /** Flushes the whole outbox; resolves once it is empty or a write failed (then retryAt is set). */
  flush(): Promise<void> {
    this.flushing ??= this.run().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async run(): Promise<void> {
    try {
      let appended = false;
      for (;;) {
        const { entries, upTo } = this.store.pendingLog(BATCH);
        if (entries.length === 0) break;
        await append(this.db, entries);
        this.store.ackLog(upTo);
        appended = true;
      }
      this.failures = 0;
      this.retryAt = null;
      await this.retainIfDue(appended);
      // Entries added during the flush were flushed too; a window opened since keeps its own deadline.
      this.due = this.oldest === undefined ? undefined : this.oldest + MAX_DELAY_MS;
      if (this.due === undefined) await this.flushed();
    } catch (err) {
      if (!(err instanceof DatabaseError)) throw err;
      this.failures++;
      const delay = Math.min(RETRY_MS.max, RETRY_MS.base * 2 ** Math.min(this.failures, 16));
      this.retryAt = Date.now() + delay;
      log.warn({ component: 'account', account: this.accountId(), backlog: this.store.logBacklog, retry_ms: delay, err: err.message }, 'flow log append failed; retrying');
      await this.wakeBy(this.retryAt);
    }
  }
}
