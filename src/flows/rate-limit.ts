/**
 * A token bucket per connection for `create_flow` (docs/protocol.md#limits). It lives in the
 * object's memory: the object is single-threaded, so the count is exact and costs a few
 * arithmetic operations per request. The platform's rate-limiting binding would count per
 * Cloudflare location (not per socket, and not exactly) and add a round trip to every flow.
 * A bucket that has refilled is the same as none, so full buckets are dropped (which also
 * forgets closed sockets, and is what a wake from hibernation does to all of them).
 */
interface Bucket {
  tokens: number;
  at: number;
  /** Requests refused, forgiven at the rate: a device that waits as told keeps this near 0. */
  debt: number;
}

export class FlowRateLimiter {
  private readonly buckets = new Map<number, Bucket>();
  private sweepAbove = 1024;

  constructor(
    /** Tokens per second; 0: unlimited. */
    private readonly rate: number,
    private readonly burst: number,
  ) {}

  /**
   * Takes one token for connection `conn`; when none is left, how long until one is, and the
   * connection's debt: its refused requests, forgiven at the same rate. A device that retries as
   * told stays near 0; one that keeps sending at more than twice the rate grows it without bound.
   */
  take(conn: number, nowMs: number): { ok: true } | { ok: false; retryInMs: number; debt: number } {
    if (this.rate === 0) return { ok: true };
    const b = this.buckets.get(conn);
    const tokens = b ? this.level(b, nowMs) : this.burst;
    const debt = b ? Math.max(0, b.debt - (Math.max(0, nowMs - b.at) * this.rate) / 1000) : 0;
    if (tokens < 1) {
      this.buckets.set(conn, { tokens, at: nowMs, debt: debt + 1 });
      return { ok: false, retryInMs: Math.ceil(((1 - tokens) * 1000) / this.rate), debt: debt + 1 };
    }
    this.buckets.set(conn, { tokens: tokens - 1, at: nowMs, debt });
    if (this.buckets.size > this.sweepAbove) this.sweep(nowMs);
    return { ok: true };
  }

  forget(conn: number): void {
    this.buckets.delete(conn);
  }

  /** Buckets held (those not yet refilled). */
  get size(): number {
    return this.buckets.size;
  }

  private level(b: Bucket, nowMs: number): number {
    return Math.min(this.burst, b.tokens + (Math.max(0, nowMs - b.at) * this.rate) / 1000);
  }

  /** Drops full buckets; runs again only once the map has doubled, so its cost is amortized. */
  private sweep(nowMs: number): void {
    for (const [conn, b] of this.buckets) if (this.level(b, nowMs) >= this.burst && b.debt <= ((nowMs - b.at) * this.rate) / 1000) this.buckets.delete(conn);
    this.sweepAbove = Math.max(1024, 2 * this.buckets.size);
  }
}
