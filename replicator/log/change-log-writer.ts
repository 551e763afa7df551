import type { Sql } from 'postgres';
import { CHANGE_FORMAT_VERSION } from '../../src/change.ts';
import { errorSummary } from '../../src/errors.ts';
import type { Delivery } from '../deliver/delivery.ts';
import type { Ticket } from '../stream/ack-watermark.ts';
import { isConnectionLoss, sqlState, toError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { backoffDelay, sleep } from '../retry.ts';
import { copyIn } from './copy-in.ts';

export interface ChangeLogOptions {
  batchSize: number;
  lingerMs: number;
  /** Batches written at once, each on its own connection. */
  lanes: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

/** A change to log, and the transaction it completes a part of. */
export interface LogEntry extends Delivery {
  ticket: Ticket;
}

const COLUMNS = 'account_id, lsn, seq, xid, table_name, op, old_data, data, vsn, committed_at';
const COPY = `copy change_logs (${COLUMNS}) from stdin`;
const INSERT = `
  insert into change_logs (${COLUMNS})
  -- Rows arrive as JSON text: typed as text[] so that postgres.js sends them as they are, not re-encoded as JSON strings.
  select * from unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[]::jsonb[], $8::text[]::jsonb[], $9::int[], $10::timestamptz[])
  on conflict (lsn, seq) do nothing`;
/** Every account with a row in change_logs has a cursor, so that a restart finds it when it is behind. */
const ENSURE_CURSORS = 'insert into delivery_cursors (account_id) select unnest($1::uuid[]) on conflict (account_id) do nothing';

/** A JSON text as a field of COPY's text format: JSON.stringify leaves no raw tab, newline or CR; only backslashes need doubling. */
function copyField(json: string | null): string {
  if (json === null) return '\\N';
  return json.includes('\\') ? json.replaceAll('\\', '\\\\') : json;
}

export function copyText(batch: readonly Delivery[]): string {
  let text = '';
  for (const d of batch) {
    text += `${d.accountId}\t${d.lsn}\t${d.position.seq}\t${d.xid}\t${d.table}\t${d.op}\t${copyField(d.oldJson)}\t${copyField(d.dataJson)}\t${CHANGE_FORMAT_VERSION}\t${d.committedAt}\n`;
  }
  return text;
}

/**
 * Appends received changes to change_logs in batches, up to `lanes` batches at once, each lane on
 * its own connection. A batch is one COPY, several times cheaper for the server than INSERT; a
 * batch that repeats a logged position (a replay after a restart) fails COPY's unique check as a
 * whole and is written again with `INSERT ... ON CONFLICT (lsn, seq) DO NOTHING`. Batches complete
 * in any order (the ack watermark waits for the oldest). A failed batch is retried with backoff
 * until it succeeds or the writer is stopped; no row is ever dropped.
 */
export class ChangeLogWriter {
  private queue: LogEntry[] = [];
  /** Accounts known to have a delivery cursor row (this writer made sure, or it existed). */
  private readonly withCursor = new Set<string>();
  private readonly idleLanes: Sql[] = [];
  private readonly lanes: Sql[] = [];
  private busy = 0;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];
  private belowWaiters: Array<{ n: number; resolve: () => void }> = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly connect: () => Sql,
    private readonly options: ChangeLogOptions,
    private readonly onLogged: (batch: LogEntry[]) => void,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** A write lost its connection; the writer keeps retrying, the owner decides whether to stop it. */
    private readonly onConnectionLoss: (err: Error) => void = () => {},
  ) {}

  enqueue(d: LogEntry): void {
    this.queue.push(d);
    if (this.queue.length >= this.options.batchSize || this.timer === undefined) this.kick(false);
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves once everything enqueued so far is written (or the writer stopped). */
  idle(): Promise<void> {
    if (this.busy === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Resolves once fewer than `n` changes wait for a lane (or the writer stopped): a producer with
   * more to enqueue waits for it, so that what waits in memory stays bounded.
   */
  below(n: number): Promise<void> {
    if (this.queue.length < n || this.abort.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.belowWaiters.push({ n, resolve }));
  }

  stop(): void {
    this.abort.abort();
    clearTimeout(this.timer);
    for (const w of this.idleWaiters.splice(0)) w();
    for (const w of this.belowWaiters.splice(0)) w.resolve();
    for (const lane of this.lanes) void lane.end({ timeout: 1 });
  }

  /** Starts batches on free lanes: full ones, and after the linger time partial ones too. */
  private kick(lingered: boolean): void {
    if (lingered) this.timer = undefined;
    while (!this.abort.signal.aborted && this.queue.length > 0 && (lingered || this.queue.length >= this.options.batchSize)) {
      const lane = this.idleLanes.pop() ?? (this.lanes.length < this.options.lanes ? this.newLane() : undefined);
      if (!lane) break;
      this.busy++;
      void this.run(lane, this.queue.splice(0, this.options.batchSize));
    }
    if (this.belowWaiters.length > 0) {
      const waiting = this.belowWaiters;
      this.belowWaiters = waiting.filter((w) => this.queue.length >= w.n);
      for (const w of waiting) if (this.queue.length < w.n) w.resolve();
    }
    // With every lane busy, the lane that finishes first calls again.
    const free = this.idleLanes.length > 0 || this.lanes.length < this.options.lanes;
    if (this.queue.length > 0 && free && !this.abort.signal.aborted) this.timer ??= setTimeout(() => this.kick(true), this.options.lingerMs);
  }

  private newLane(): Sql {
    const lane = this.connect();
    this.lanes.push(lane);
    return lane;
  }

  private async run(lane: Sql, batch: LogEntry[]): Promise<void> {
    for (let attempt = 0; !this.abort.signal.aborted; attempt++) {
      try {
        await this.write(lane, batch);
        if (this.abort.signal.aborted) break;
        this.metrics.logged.inc(batch.length);
        this.onLogged(batch);
        break;
      } catch (err) {
        if (this.abort.signal.aborted) break;
        this.metrics.retries.inc({ target: 'change_logs', reason: sqlState(err) ?? 'error' });
        this.log.warn({ err: errorSummary(err), lsn: batch[0]?.lsn, rows: batch.length, attempt }, 'change_logs write failed; retrying');
        if (isConnectionLoss(err)) this.onConnectionLoss(toError(err));
        await sleep(backoffDelay(attempt, this.options.retryBaseMs, this.options.retryMaxMs), this.abort.signal);
      }
    }
    this.busy--;
    this.idleLanes.push(lane);
    this.kick(false);
    if (this.busy === 0 && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async write(lane: Sql, batch: LogEntry[]): Promise<void> {
    const fresh = [...new Set(batch.map((d) => d.accountId))].filter((a) => !this.withCursor.has(a));
    if (fresh.length > 0) {
      await lane.unsafe(ENSURE_CURSORS, [fresh] as never);
      for (const a of fresh) this.withCursor.add(a);
    }
    try {
      await copyIn(lane, COPY, copyText(batch));
    } catch (err) {
      if (sqlState(err) !== '23505') throw err;
      // unique_violation: some of these positions are logged already (a replay). Nothing of the COPY stayed.
      this.log.debug({ lsn: batch[0]?.lsn, rows: batch.length }, 'change_logs batch repeats logged positions; inserting what is missing');
      await this.insert(lane, batch);
    }
  }

  private async insert(lane: Sql, batch: LogEntry[]): Promise<void> {
    const n = batch.length;
    const accounts = new Array<string>(n);
    const lsns = new Array<string>(n);
    const seqs = new Array<number>(n);
    const xids = new Array<number>(n);
    const tables = new Array<string>(n);
    const ops = new Array<string>(n);
    const olds = new Array<string | null>(n);
    const datas = new Array<string | null>(n);
    const vsns = new Array<number>(n).fill(CHANGE_FORMAT_VERSION);
    const committed = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const d = batch[i] as LogEntry;
      accounts[i] = d.accountId;
      lsns[i] = d.lsn;
      seqs[i] = d.position.seq;
      xids[i] = d.xid;
      tables[i] = d.table;
      ops[i] = d.op;
      olds[i] = d.oldJson;
      datas[i] = d.dataJson;
      committed[i] = d.committedAt;
    }
    await lane.unsafe(INSERT, [accounts, lsns, seqs, xids, tables, ops, olds, datas, vsns, committed] as never);
  }
}
