import { maxLsn, type Lsn } from '../../src/lsn.ts';

/** One committed transaction on its way out: done when every part (a change log row, a delivery) is. */
export interface Ticket {
  readonly endLsn: Lsn;
  readonly changes: number;
  readonly receivedAt: number;
  pending: number;
}

/**
 * The acknowledged position (docs/architecture.md#1-no-loss): the end LSN of the newest transaction such that it
 * and every transaction committed before it were fully delivered. Transactions complete out of
 * order (accounts go in parallel); the watermark only moves through the completed prefix, and
 * only forwards.
 */
export class AckWatermark {
  private readonly queue: Ticket[] = [];
  private head = 0;
  private acked: Lsn;
  private unacked = 0;

  constructor(start: Lsn) {
    this.acked = start;
  }

  get lsn(): Lsn {
    return this.acked;
  }

  /** Changes received but not yet acknowledged. */
  get unackedChanges(): number {
    return this.unacked;
  }

  get inFlight(): number {
    return this.queue.length - this.head;
  }

  /** When the oldest unacknowledged transaction arrived, or undefined when none is waiting. */
  get oldestReceivedAt(): number | undefined {
    return this.queue[this.head]?.receivedAt;
  }

  /** Registers a committed transaction, in commit order; `parts` completions finish it. */
  add(endLsn: Lsn, changes: number, parts: number, now: number): Ticket {
    const ticket: Ticket = { endLsn, changes, receivedAt: now, pending: parts };
    this.queue.push(ticket);
    this.unacked += changes;
    this.advance();
    return ticket;
  }

  complete(ticket: Ticket, parts = 1): void {
    ticket.pending -= parts;
    if (ticket.pending < 0) throw new Error('a transaction part completed twice');
  }

  /** Moves the watermark over completed transactions at the head. Returns whether it moved. */
  advance(): boolean {
    const before = this.acked;
    while (this.head < this.queue.length) {
      const t = this.queue[this.head] as Ticket;
      if (t.pending > 0) break;
      this.acked = maxLsn(this.acked, t.endLsn);
      this.unacked -= t.changes;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return this.acked !== before;
  }

  /**
   * With nothing in flight and no transaction open, the server's WAL end is safe to acknowledge:
   * every commit before it was already sent to us and delivered. This keeps a slot whose tables
   * are idle from holding WAL while the rest of the database writes.
   */
  followServer(walEnd: Lsn, noOpenTransaction: boolean): boolean {
    if (!noOpenTransaction || this.inFlight > 0 || walEnd <= this.acked) return false;
    this.acked = walEnd;
    return true;
  }
}
