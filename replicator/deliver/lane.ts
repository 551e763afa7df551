import { comparePositions, type Position } from '../../src/lsn.ts';
import type { Delivery } from './delivery.ts';

/**
 * live: changes go from memory as they are routed. catch_up: the account is behind (its object
 * failed, was slow, or the replicator restarted), so it is fed from change_logs from its cursor;
 * routed changes are only counted, the log has them.
 */
export type LaneMode = 'live' | 'catch_up';

export interface LaneFailure {
  verdict: 'transient' | 'permanent';
  /** HTTP status, or `timeout`, `network`, `database`. */
  reason: string;
  message: string;
  since: number;
  attempts: number;
  /** The first position of the batch that failed, when there was one. */
  at: Position | null;
}

/** One account's delivery state in the replicator's memory. */
export class Lane {
  mode: LaneMode = 'live';
  readonly queue: Delivery[] = [];
  queuedBytes = 0;
  /** A live run or a catch-up loop owns the lane: one request in flight per account. */
  running = false;
  timer: NodeJS.Timeout | undefined;
  retryAt = 0;
  /** The last position its object answered 2xx for, as far as this process knows. */
  delivered: Position | null = null;
  /** What delivery_cursors holds (or is being written). */
  saved: Position | null = null;
  /** The newest change routed to it by the stream in this process. */
  lastRouted: Position | null = null;
  needsRehydrate = false;
  skipTo: Position | null = null;
  /** Catching up, it read everything logged and waits for the rest of what was routed to be logged. */
  awaitingLog = false;
  failure: LaneFailure | undefined;
  /** Changes routed or logged and not yet delivered (an estimate: replays can count twice). */
  backlog = 0;
  /** Commit time (epoch ms) of the oldest change not yet delivered, when one is known. */
  oldestPendingAt: number | undefined;
  lastActivityAt = Date.now();
  /** Of an epoch that ended: it sends nothing more (a new lane serves the account). */
  retired = false;

  constructor(readonly accountId: string) {}

  /** Whether its object already has the change at `p` (a replay after a restart). */
  has(p: Position): boolean {
    return this.delivered !== null && comparePositions(p, this.delivered) <= 0;
  }

  /** Everything routed to it was delivered: a catching-up lane may go live. */
  get caughtUp(): boolean {
    return this.lastRouted === null || (this.delivered !== null && comparePositions(this.lastRouted, this.delivered) <= 0);
  }

  get state(): 'live' | 'catching_up' | 'retrying' | 'refused' | 'rehydrating' {
    if (this.failure?.verdict === 'permanent') return 'refused';
    if (this.failure) return 'retrying';
    if (this.needsRehydrate) return 'rehydrating';
    return this.mode === 'live' ? 'live' : 'catching_up';
  }

  /** Drops the changes held in memory; the log has them. */
  dropQueue(): number {
    const bytes = this.queuedBytes;
    this.queue.length = 0;
    this.queuedBytes = 0;
    return bytes;
  }
}
