import { errorSummary } from '../../src/errors.ts';
import { formatPosition, parseLsn } from '../../src/lsn.ts';
import { DeliveryError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import { backoffDelay, sleep } from '../retry.ts';
import { batchBody, type Delivery } from './delivery.ts';
import { EdgeClient } from './edge-client.ts';
import { classifyStatus } from './worker-response.ts';

export interface ForwarderOptions {
  edgeUrl: string;
  secret: string;
  batchSize: number;
  lingerMs: number;
  concurrency: number;
  timeoutMs: number;
  retryBaseMs: number;
  retryMaxMs: number;
}

interface AccountQueue {
  id: string;
  items: Delivery[];
  busy: boolean;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Per-account delivery to the Worker: changes of one account go in commit order, at most one batch
 * in flight per account, accounts in parallel up to `concurrency`. A failed batch is retried with
 * capped exponential backoff, forever: a change is never skipped.
 */
export class Forwarder {
  private readonly accounts = new Map<string, AccountQueue>();
  private readonly waiting: Array<() => void> = [];
  private active = 0;
  private queued = 0;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();
  private readonly client: EdgeClient;

  constructor(
    private readonly options: ForwarderOptions,
    private readonly onDelivered: (batch: Delivery[]) => void,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    this.client = new EdgeClient(options.edgeUrl, options.secret, options.concurrency);
  }

  get pending(): number {
    return this.queued + this.inFlight;
  }

  enqueue(d: Delivery): void {
    let q = this.accounts.get(d.accountId);
    if (!q) {
      q = { id: d.accountId, items: [], busy: false, timer: undefined };
      this.accounts.set(d.accountId, q);
    }
    q.items.push(d);
    this.queued++;
    this.schedule(q);
  }

  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Aborts requests in flight and stops retrying; what was not delivered is resent by Postgres later. */
  stop(): void {
    this.abort.abort();
    for (const q of this.accounts.values()) clearTimeout(q.timer);
    for (const w of this.waiting.splice(0)) w();
    for (const w of this.idleWaiters.splice(0)) w();
    this.client.close();
  }

  private schedule(q: AccountQueue): void {
    if (q.busy || q.items.length === 0 || this.abort.signal.aborted) return;
    if (q.items.length >= this.options.batchSize || this.options.lingerMs === 0) {
      clearTimeout(q.timer);
      q.timer = undefined;
      q.busy = true;
      void this.run(q);
    } else {
      q.timer ??= setTimeout(() => {
        q.timer = undefined;
        if (q.busy) return;
        q.busy = true;
        void this.run(q);
      }, this.options.lingerMs);
    }
  }

  private async run(q: AccountQueue): Promise<void> {
    while (q.items.length > 0 && !this.abort.signal.aborted) {
      const batch = q.items.splice(0, this.options.batchSize);
      this.queued -= batch.length;
      this.inFlight += batch.length;
      const body = Buffer.from(batchBody(batch));
      for (let attempt = 0; ; attempt++) {
        if (this.abort.signal.aborted) return;
        await this.acquire();
        let failure: DeliveryError | undefined;
        try {
          this.metrics.batchesInFlight.inc();
          await this.post(q.id, body);
        } catch (err) {
          failure = err instanceof DeliveryError ? err : new DeliveryError(errorSummary(err), q.id, 'network', undefined, { cause: err });
        } finally {
          this.metrics.batchesInFlight.dec();
          this.release();
        }
        if (!failure) break;
        if (this.abort.signal.aborted) return;
        this.reportFailure(q.id, batch, failure, attempt);
        await sleep(backoffDelay(attempt, this.options.retryBaseMs, this.options.retryMaxMs), this.abort.signal);
      }
      this.inFlight -= batch.length;
      this.metrics.delivered.inc(batch.length);
      this.onDelivered(batch);
    }
    q.busy = false;
    if (q.items.length === 0) this.accounts.delete(q.id);
    else this.schedule(q);
    if (this.pending === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private async post(accountId: string, body: Buffer): Promise<void> {
    const timeout = AbortSignal.timeout(this.options.timeoutMs);
    let response;
    try {
      response = await this.client.post(`/v1/accounts/${accountId}/changes`, body, AbortSignal.any([this.abort.signal, timeout]));
    } catch (err) {
      const timedOut = timeout.aborted && !this.abort.signal.aborted;
      throw new DeliveryError(timedOut ? 'request timed out' : `request failed: ${errorSummary(err)}`, accountId, timedOut ? 'timeout' : 'network', undefined, { cause: err });
    }
    if (classifyStatus(response.status) !== 'delivered') {
      throw new DeliveryError(`HTTP ${response.status}: ${response.text.slice(0, 500)}`, accountId, 'status', response.status);
    }
  }

  private reportFailure(accountId: string, batch: Delivery[], failure: DeliveryError, attempt: number): void {
    const first = batch[0]?.change;
    const last = batch[batch.length - 1]?.change;
    const context = {
      account: accountId,
      lsn: first?.lsn,
      from: first && formatPosition({ lsn: parseLsn(first.lsn), seq: first.seq }),
      to: last && formatPosition({ lsn: parseLsn(last.lsn), seq: last.seq }),
      changes: batch.length,
      attempt,
      err: failure.message,
    };
    const bug = failure.status !== undefined && classifyStatus(failure.status) === 'bug';
    this.metrics.retries.inc({ target: 'worker', reason: failure.status !== undefined ? String(failure.status) : failure.reason });
    if (bug) this.log.error(context, 'the Worker refused a batch: this is a bug; retrying, never skipping');
    else this.log.warn(context, 'delivery failed; retrying');
  }

  private async acquire(): Promise<void> {
    while (this.active >= this.options.concurrency && !this.abort.signal.aborted) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.active++;
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.();
  }
}
