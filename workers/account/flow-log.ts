import { log } from '../log.ts';
import { withDatabase, DatabaseError } from './database.ts';
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

/** Appends outbox entries to Postgres `flows`; replays after a failure insert nothing twice. */
async function append(binding: Hyperdrive, entries: readonly FlowLogEntry[]): Promise<void> {
  await withDatabase(
    binding,
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

  constructor(
    private readonly store: FlowStore,
    private readonly binding: Hyperdrive,
    private readonly ctx: DurableObjectState,
    private readonly accountId: () => string | null,
    /** Makes the object's alarm fire by then. */
    private readonly wakeBy: (at: number) => Promise<void>,
    /** A flush emptied the outbox: the alarm kept for it may be recomputed. */
    private readonly flushed: () => Promise<void> = async () => {},
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
      for (;;) {
        const { entries, upTo } = this.store.pendingLog(BATCH);
        if (entries.length === 0) break;
        await append(this.binding, entries);
        this.store.ackLog(upTo);
      }
      this.failures = 0;
      this.retryAt = null;
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
