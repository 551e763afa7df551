import type { Sql } from 'postgres';
import { CHANGE_FORMAT_VERSION } from '../src/change.ts';
import type { Delivery } from './delivery.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { backoffDelay, sleep } from './retry.ts';

export interface ChangeLogOptions {
  batchSize: number;
  lingerMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

const INSERT = `
  insert into change_logs (account_id, lsn, seq, xid, table_name, op, old_data, data, vsn)
  -- Rows arrive as JSON text: typed as text[] so that postgres.js sends them as they are, not re-encoded as JSON strings.
  select * from unnest($1::uuid[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[], $7::text[]::jsonb[], $8::text[]::jsonb[], $9::int[])
  on conflict (lsn, seq) do nothing`;

/**
 * Appends delivered changes to change_logs in batches, one insert at a time, in arrival order.
 * Replays insert nothing (`ON CONFLICT (lsn, seq) DO NOTHING`). A failed insert is retried
 * with backoff until it succeeds or the writer is stopped; it never drops a row.
 */
export class ChangeLogWriter {
  private queue: Delivery[] = [];
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();

  constructor(
    private readonly sql: Sql,
    private readonly options: ChangeLogOptions,
    private readonly onLogged: (batch: Delivery[]) => void,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  enqueue(d: Delivery): void {
    this.queue.push(d);
    if (this.running) return;
    if (this.queue.length >= this.options.batchSize) this.start();
    else this.timer ??= setTimeout(() => this.start(), this.options.lingerMs);
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Resolves once everything enqueued so far is written (or the writer stopped). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.abort.abort();
    clearTimeout(this.timer);
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private start(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running || this.abort.signal.aborted) return;
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (this.queue.length > 0 && !this.abort.signal.aborted) {
      const batch = this.queue.splice(0, this.options.batchSize);
      for (let attempt = 0; !this.abort.signal.aborted; attempt++) {
        try {
          await this.write(batch);
          this.metrics.logged.inc(batch.length);
          this.onLogged(batch);
          break;
        } catch (err) {
          this.metrics.retries.inc({ target: 'change_logs', reason: 'error' });
          const first = batch[0]?.change;
          this.log.warn({ err: String(err), lsn: first?.lsn, rows: batch.length, attempt }, 'change_logs insert failed; retrying');
          await sleep(backoffDelay(attempt, this.options.retryBaseMs, this.options.retryMaxMs), this.abort.signal);
        }
      }
    }
    this.running = false;
    if (this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async write(batch: Delivery[]): Promise<void> {
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
    await this.sql.unsafe(INSERT, [accounts, lsns, seqs, xids, tables, ops, olds, datas, vsns] as never);
  }
}
