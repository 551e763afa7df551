import { Counter, Gauge, Registry } from 'prom-client';

/** Prometheus metrics of the replicator (`/metrics`). */
export class Metrics {
  readonly registry = new Registry();
  readonly receivedLsn = this.gauge('edgeplane_replicator_received_lsn', 'Commit end LSN of the newest transaction received (as a number)');
  readonly ackedLsn = this.gauge('edgeplane_replicator_acked_lsn', 'LSN acknowledged to Postgres: every change before it is in change_logs');
  readonly lagBytes = this.gauge('edgeplane_replicator_lag_bytes', "Server's current WAL position minus the acknowledged LSN");
  readonly lagSeconds = this.gauge('edgeplane_replicator_lag_seconds', 'Age of the oldest unacknowledged transaction');
  readonly retainedWalBytes = this.gauge('edgeplane_replicator_slot_retained_wal_bytes', "WAL the slot keeps on the server (current LSN minus the slot's restart_lsn)");
  readonly unacked = this.gauge('edgeplane_replicator_unacked_changes', 'Changes received and not yet acknowledged');
  readonly batchesInFlight = this.gauge('edgeplane_replicator_batches_in_flight', 'Requests to the Worker in flight');
  readonly connected = this.gauge('edgeplane_replicator_streaming', '1 while the replication stream is open');
  readonly paused = this.gauge('edgeplane_replicator_paused', '1 while reading is paused for backpressure');
  readonly changes = this.counter('edgeplane_replicator_changes_total', 'Row changes decoded from committed transactions');
  readonly transactions = this.counter('edgeplane_replicator_transactions_total', 'Committed transactions received');
  readonly delivered = this.counter('edgeplane_replicator_changes_delivered_total', 'Changes accepted by the Worker');
  readonly logged = this.counter('edgeplane_replicator_changes_logged_total', 'Changes written to change_logs');
  readonly retries = this.counter('edgeplane_replicator_retries_total', 'Failed attempts that will be retried (forwarding and change_logs)', ['target', 'reason']);
  readonly decodeErrors = this.counter('edgeplane_replicator_decode_errors_total', 'Messages that could not be decoded');
  readonly skipped = this.counter('edgeplane_replicator_skipped_rows_total', 'Rows not forwarded: unknown table or no account', ['reason']);
  readonly reconnects = this.counter('edgeplane_replicator_sessions_total', 'Replication sessions started');
  readonly accountsBehind = this.gauge('edgeplane_replicator_accounts_behind', 'Accounts fed from change_logs because they are behind (failing, slow, or behind at start)');
  readonly accountsRefused = this.gauge('edgeplane_replicator_accounts_refused', 'Accounts whose object refuses well-signed batches (permanent failure, retried slowly)');
  readonly refusals = this.counter('edgeplane_replicator_refusals_total', 'Batches refused by an object for good (a 4xx other than 408, 409, 429)');
  readonly backlogChanges = this.gauge('edgeplane_replicator_backlog_changes_max', 'Undelivered changes of the account furthest behind');
  readonly backlogSeconds = this.gauge('edgeplane_replicator_backlog_seconds_max', 'Age of the oldest undelivered change of any account');
  readonly catchUpPages = this.counter('edgeplane_replicator_catchup_pages_total', 'Pages read from change_logs to catch accounts up');
  readonly catchUpChanges = this.counter('edgeplane_replicator_catchup_changes_total', 'Changes delivered from change_logs (catch-up)');
  readonly epoch = this.gauge('edgeplane_replicator_epoch', 'Number of the replication epoch the log and cursors belong to');
  readonly rehydrations = this.counter('edgeplane_replicator_rehydrations_total', 'Accounts told to re-hydrate (new epoch, or undelivered changes pruned)');
  readonly spilledTransactions = this.counter('edgeplane_replicator_spilled_transactions_total', 'Transactions too large to hold in memory, spilled to a temporary file');

  private gauge(name: string, help: string): Gauge {
    return new Gauge({ name, help, registers: [this.registry] });
  }

  private counter<L extends string>(name: string, help: string, labelNames: L[] = []): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
}
