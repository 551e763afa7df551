import { describe, expect, it } from 'vitest';
import type { Change } from '../../src/change.ts';
import { parseLsn, type Position } from '../../src/lsn.ts';
import { planBatch, SNAPSHOT_RETENTION_MS, type HydrationSnapshot } from '../../src/ordering.ts';
import { parseSnapshot } from '../../src/snapshot.ts';

const TAKEN_AT = Date.parse('2026-11-22T20:00:00Z');

/** A change at `lsn:seq` of transaction `xid`, committed `afterMs` after the hydration. */
function at(lsn: string, seq: number, xid = 500, afterMs = 1_000): Change {
  const committed = new Date(TAKEN_AT + afterMs).toISOString().replace('Z', '000Z');
  return { lsn, seq, xid, table: 'actors', op: 'delete', old: { id: `${lsn}:${seq}` }, data: null, committed_at: committed };
}

const pos = (lsn: string, seq: number): Position => ({ lsn: parseLsn(lsn), seq });
const positionsOf = (changes: readonly Change[]) => changes.map((c) => `${c.lsn}:${c.seq}`);
const hydration = (text: string): HydrationSnapshot => ({ snapshot: parseSnapshot(text), takenAt: TAKEN_AT });

describe('planBatch: position order (docs/architecture.md#2-order and #3-idempotence)', () => {
  it('applies everything to an object with no position, and advances to the last change', () => {
    const plan = planBatch(null, null, [at('0/100', 0), at('0/100', 1), at('0/200', 0)]);
    expect(positionsOf(plan.apply)).toEqual(['0/100:0', '0/100:1', '0/200:0']);
    expect(plan).toMatchObject({ stale: 0, seen: 0, advancedTo: pos('0/200', 0), snapshotExpired: false });
  });

  it('drops changes at or below the stored position (a replay, a late one) and counts them', () => {
    const plan = planBatch(pos('0/200', 1), null, [at('0/100', 7), at('0/200', 0), at('0/200', 1), at('0/200', 2), at('0/300', 0)]);
    expect(positionsOf(plan.apply)).toEqual(['0/200:2', '0/300:0']);
    expect(plan.stale).toBe(3);
    expect(plan.advancedTo).toEqual(pos('0/300', 0));
  });

  it('drops a duplicate inside the batch and anything that goes back in commit order', () => {
    const plan = planBatch(null, null, [at('0/100', 0), at('0/100', 0), at('0/200', 0), at('0/100', 5)]);
    expect(positionsOf(plan.apply)).toEqual(['0/100:0', '0/200:0']);
    expect(plan.stale).toBe(2);
    expect(plan.advancedTo).toEqual(pos('0/200', 0));
  });

  it('orders by commit LSN first: a higher seq under an earlier commit is older, a later commit at seq 0 is newer', () => {
    const plan = planBatch(pos('0/300', 5), null, [at('0/2FF', 9), at('0/300', 6), at('0/301', 0), at('0/300', 7)]);
    expect(positionsOf(plan.apply)).toEqual(['0/300:6', '0/301:0']);
    expect(plan.stale).toBe(2);
    // The LSN is compared as a number, not as text: 0/1000 is after 0/FFF.
    expect(positionsOf(planBatch(pos('0/FFF', 0), null, [at('0/1000', 0)]).apply)).toEqual(['0/1000:0']);
    expect(positionsOf(planBatch(pos('1/0', 0), null, [at('0/FFFFFFFF', 0)]).apply)).toEqual([]);
  });

  it('leaves the position where it was for an empty or all-stale batch', () => {
    expect(planBatch(pos('0/200', 0), null, [])).toEqual({ apply: [], stale: 0, seen: 0, advancedTo: null, snapshotExpired: false });
    expect(planBatch(null, null, []).advancedTo).toBeNull();
    const allStale = planBatch(pos('0/200', 0), null, [at('0/100', 0), at('0/200', 0)]);
    expect(allStale).toMatchObject({ apply: [], stale: 2, advancedTo: null });
  });
});

describe('planBatch: the hydration snapshot (docs/architecture.md#4-consistent-hydration)', () => {
  it('skips transactions the snapshot saw and applies those it did not: at or past xmax, or in progress (xip)', () => {
    const plan = planBatch(null, hydration('100:105:100,103'), [
      at('0/100', 0, 99), // committed before: seen
      at('0/110', 0, 100), // in progress at the snapshot: new
      at('0/120', 0, 101), // committed before, below xmax: seen
      at('0/130', 0, 103), // in progress: new
      at('0/140', 0, 105), // at xmax: new
      at('0/150', 0, 4_000), // far past xmax: new
    ]);
    expect(plan.apply.map((c) => c.xid)).toEqual([100, 103, 105, 4_000]);
    expect(plan.seen).toBe(2);
    expect(plan.snapshotExpired).toBe(false);
  });

  it('advances the position past seen changes too, and counts a stale change as stale, not seen', () => {
    const plan = planBatch(pos('0/100', 0), hydration('100:105:'), [at('0/100', 0, 99), at('0/200', 0, 99)]);
    expect(plan).toMatchObject({ apply: [], stale: 1, seen: 1, advancedTo: pos('0/200', 0) });
  });

  it('stops filtering at the first change committed more than SNAPSHOT_RETENTION_MS after hydration', () => {
    const plan = planBatch(null, hydration('100:105:'), [
      at('0/100', 0, 99, SNAPSHOT_RETENTION_MS), // exactly at the limit: still filtered
      at('0/200', 0, 99, SNAPSHOT_RETENTION_MS + 1), // past it: applied, and the snapshot expires
      at('0/300', 0, 101, 1_000), // visible to the snapshot, but it no longer filters
    ]);
    expect(positionsOf(plan.apply)).toEqual(['0/200:0', '0/300:0']);
    expect(plan).toMatchObject({ seen: 1, snapshotExpired: true });
  });

  it('does not expire the snapshot on a stale change, however late it was committed', () => {
    const plan = planBatch(pos('0/500', 0), hydration('100:105:'), [at('0/400', 0, 99, SNAPSHOT_RETENTION_MS + 1), at('0/600', 0, 99)]);
    expect(plan).toMatchObject({ apply: [], stale: 1, seen: 1, snapshotExpired: false });
  });

  it('applies everything when the object has no snapshot (it expired, or the object never hydrated)', () => {
    const plan = planBatch(null, null, [at('0/100', 0, 1), at('0/200', 0, 2)]);
    expect(plan).toMatchObject({ seen: 0, snapshotExpired: false });
    expect(plan.apply).toHaveLength(2);
  });
});
