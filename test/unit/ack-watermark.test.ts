import { describe, expect, it } from 'vitest';
import { AckWatermark } from '../../replicator/stream/ack-watermark.ts';

describe('AckWatermark', () => {
  it('moves only through the completed prefix, in commit order', () => {
    const w = new AckWatermark(10n);
    const t1 = w.add(100n, 1, 2, 0);
    const t2 = w.add(200n, 1, 2, 0);
    const t3 = w.add(300n, 1, 2, 0);
    w.complete(t2, 2);
    w.complete(t3, 2);
    expect(w.advance()).toBe(false);
    expect(w.lsn).toBe(10n);
    w.complete(t1, 1);
    expect(w.advance()).toBe(false);
    w.complete(t1, 1);
    expect(w.advance()).toBe(true);
    expect(w.lsn).toBe(300n);
    expect(w.unackedChanges).toBe(0);
  });

  it('passes empty transactions at once but not before an earlier pending one', () => {
    const w = new AckWatermark(0n);
    const t1 = w.add(100n, 2, 4, 0);
    w.add(150n, 0, 0, 0);
    expect(w.lsn).toBe(0n);
    w.complete(t1, 4);
    w.advance();
    expect(w.lsn).toBe(150n);
  });

  it('follows the server only when nothing is in flight and no transaction is open', () => {
    const w = new AckWatermark(50n);
    expect(w.followServer(80n, false)).toBe(false);
    const t = w.add(100n, 1, 1, 0);
    expect(w.followServer(500n, true)).toBe(false);
    expect(w.lsn).toBe(50n);
    w.complete(t);
    w.advance();
    expect(w.followServer(500n, true)).toBe(true);
    expect(w.lsn).toBe(500n);
    expect(w.followServer(400n, true)).toBe(false);
    expect(w.lsn).toBe(500n);
  });

  it('reports the oldest unacknowledged arrival and refuses double completion', () => {
    const w = new AckWatermark(0n);
    const t = w.add(10n, 1, 1, 1234);
    expect(w.oldestReceivedAt).toBe(1234);
    w.complete(t);
    expect(() => w.complete(t)).toThrow();
  });

  it('keeps its queue bounded over many transactions', () => {
    const w = new AckWatermark(0n);
    for (let i = 1; i <= 10_000; i++) {
      const t = w.add(BigInt(i), 1, 1, 0);
      w.complete(t);
      w.advance();
    }
    expect(w.lsn).toBe(10_000n);
    expect(w.inFlight).toBe(0);
    expect((w as unknown as { queue: unknown[] }).queue.length).toBeLessThan(2100);
  });
});
