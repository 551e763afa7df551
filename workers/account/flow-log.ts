import { log } from '../log.ts';
import { withDatabase, DatabaseError } from './database.ts';
import type { FlowLogEntry, FlowStore } from './flow-store.ts';

const BATCH = 500;
/**
 * New flows wait this long (or until a batch is full) so that bursts go to Postgres in one
 * statement and connection setup stays off the object's busy moments.
 */
const DELAY_MS = 2_000;
const RETRY_MS = { base: 1_000, max: 60_000 };

/** Appends outbox entries to Postgres `flows`; replays after a failure insert nothing twice. */
async function append(binding: Hyperdrive, entries: readonly FlowLogEntry[]): Promise<void> {
  await withDatabase(binding, `appending ${entries.length} flows`, (sql) => sql`
    insert into flows (id, account_id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at)
    select id, account_id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at
    from jsonb_to_recordset(${`[${entries.map((e) => e.json).join(',')}]`}::text::jsonb) as x(
      id uuid, account_id uuid, client_id uuid, gateway_id uuid, resource_id uuid, policy_id uuid, token_id uuid, expires_at timestamptz)
    on conflict (id) do nothing`);
}

/**
 * Moves the durable outbox of new flows to Postgres in the background (issue 4: never on the
 * request path): a short delay batches bursts, one flush runs at a time, and a failed flush is
 * retried by the object's alarm with capped exponential backoff.
 */
export class FlowLogWriter {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private flushing: Promise<void> | undefined;
  private failures = 0;
  /** When a failed flush should be retried (epoch ms), for the alarm; null when none failed. */
  retryAt: number | null = null;

  constructor(
    private readonly store: FlowStore,
    private readonly binding: Hyperdrive,
    private readonly ctx: DurableObjectState,
    private readonly accountId: () => string | null,
    /** Makes the object's alarm fire by then. */
    private readonly wakeBy: (at: number) => Promise<void>,
  ) {}

  /** A flow was added to the outbox: flush soon (now, if a batch is full), unless a retry is pending. */
  soon(): void {
    if (this.retryAt !== null) return;
    if (this.store.logBacklog >= BATCH) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.ctx.waitUntil(this.flush());
      return;
    }
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.ctx.waitUntil(this.flush());
    }, DELAY_MS);
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
    } catch (err) {
      if (!(err instanceof DatabaseError)) throw err;
      this.failures++;
      const delay = Math.min(RETRY_MS.max, RETRY_MS.base * 2 ** Math.min(this.failures, 16));
      this.retryAt = Date.now() + delay;
      log.warn('flow log append failed; retrying', { component: 'account', account: this.accountId(), backlog: this.store.logBacklog, retry_ms: delay, err: err.message });
      await this.wakeBy(this.retryAt);
    }
  }
}
