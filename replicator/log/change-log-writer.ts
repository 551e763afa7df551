import type { Sql } from 'postgres';
import { CHANGE_FORMAT_VERSION } from '../../src/change.ts';
import { errorSummary } from '../../src/errors.ts';
import type { Delivery } from '../deliver/delivery.ts';
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

const COLUMNS = 'account_id, lsn, seq, xid, table_name, op, old_data, data, vsn';
const COPY = `copy change_logs (${COLUMNS}) from stdin`;
const INSERT = `
  insert into change_logs (${COLUMNS})
  -- Rows arrive as JSON text: typed as text[] so that postgres.js sends them as they are, not re-encoded as JSON strings.
  select * from unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[]::jsonb[], $8::text[]::jsonb[], $9::int[])
  on conflict (lsn, seq) do nothing`;

/** A JSON text as a field of COPY's text format: JSON.stringify leaves no raw tab, newline or CR; only backslashes need doubling. */
function copyField(json: string | null): string {
  if (json === null) return '\\N';
  return json.includes('\\') ? json.replaceAll('\\', '\\\\') : json;
}

export function copyText(batch: readonly Delivery[]): string {
  let text = '';
  for (const d of batch) {
    const c = d.change;
    text += `${d.accountId}\t${c.lsn}\t${c.seq}\t${c.xid}\t${c.table}\t${c.op}\t${copyField(d.oldJson)}\t${copyField(d.dataJson)}\t${CHANGE_FORMAT_VERSION}\n`;
  }
  return text;
}

/**
 * Appends delivered changes to change_logs in batches, up to `lanes` batches at once, each lane on
 * its own connection. A batch is one COPY, several times cheaper for the server than INSERT; a
 * batch that repeats a logged position (a replay after a restart) fails COPY's unique check as a
 * whole and is written again with `INSERT ... ON CONFLICT (lsn, seq) DO NOTHING`. Batches complete
 * in any order (the ack watermark waits for the oldest). A failed batch is retried with backoff
 * until it succeeds or the writer is stopped; no row is ever dropped.
 */
export class ChangeLogWriter {
  private queue: Delivery[] = [];
  private readonly idleLanes: Sql[] = [];
  private readonly lanes: Sql[] = [];
  private busy = 0;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly connect: () => Sql,
    private readonly options: ChangeLogOptions,
    private readonly onLogged: (batch: Delivery[]) => void,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** A write lost its connection; the writer keeps retrying, the owner decides whether to stop it. */
    private readonly onConnectionLoss: (err: Error) => void = () => {},
  ) {}

  enqueue(d: Delivery): void {
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

  stop(): void {
    this.abort.abort();
    clearTimeout(this.timer);
    for (const w of this.idleWaiters.splice(0)) w();
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
    // With every lane busy, the lane that finishes first calls again.
    const free = this.idleLanes.length > 0 || this.lanes.length < this.options.lanes;
    if (this.queue.length > 0 && free && !this.abort.signal.aborted) this.timer ??= setTimeout(() => this.kick(true), this.options.lingerMs);
  }

  private newLane(): Sql {
    const lane = this.connect();
    this.lanes.push(lane);
    return lane;
  }

  private async run(lane: Sql, batch: Delivery[]): Promise<void> {
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
        const first = batch[0]?.change;
        this.log.warn({ err: errorSummary(err), lsn: first?.lsn, rows: batch.length, attempt }, 'change_logs write failed; retrying');
        if (isConnectionLoss(err)) this.onConnectionLoss(toError(err));
        await sleep(backoffDelay(attempt, this.options.retryBaseMs, this.options.retryMaxMs), this.abort.signal);
      }
    }
    this.busy--;
    this.idleLanes.push(lane);
    this.kick(false);
    if (this.busy === 0 && this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async write(lane: Sql, batch: Delivery[]): Promise<void> {
    try {
      await copyIn(lane, COPY, copyText(batch));
    } catch (err) {
      if (sqlState(err) !== '23505') throw err;
      // unique_violation: some of these positions are logged already (a replay). Nothing of the COPY stayed.
      this.log.debug({ lsn: batch[0]?.change.lsn, rows: batch.length }, 'change_logs batch repeats logged positions; inserting what is missing');
      await this.insert(lane, batch);
    }
  }

  private async insert(lane: Sql, batch: Delivery[]): Promise<void> {
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
    for (let i = 0; i < n; i++) {
      const d = batch[i] as Delivery;
      accounts[i] = d.accountId;
      lsns[i] = d.change.lsn;
      seqs[i] = d.change.seq;
      xids[i] = d.change.xid;
      tables[i] = d.change.table;
      ops[i] = d.change.op;
      olds[i] = d.oldJson;
      datas[i] = d.dataJson;
    }
    await lane.unsafe(INSERT, [accounts, lsns, seqs, xids, tables, ops, olds, datas, vsns] as never);
  }
}
