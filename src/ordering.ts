import type { Change } from './change.ts';
import { comparePositions, parseLsn, type Position } from './lsn.ts';
import { visibleInSnapshot, type Snapshot } from './snapshot.ts';

/** The snapshot an object hydrated in, and when (epoch ms) it was taken. */
export interface HydrationSnapshot {
  snapshot: Snapshot;
  takenAt: number;
}

/**
 * A hydration snapshot filters changes until their commit time is this far past it: long enough
 * for any transaction in progress at hydration to commit, short enough that 32-bit xids cannot
 * wrap around in between.
 */
export const SNAPSHOT_RETENTION_MS = 24 * 3600_000;

export interface BatchPlan {
  /** The changes to apply, in batch order. */
  apply: Change[];
  /** Changes at or below the position (replays, late arrivals): dropped and counted (docs/architecture.md#2-order and #3-idempotence). */
  stale: number;
  /** Changes whose transaction the hydration snapshot already saw (docs/architecture.md#4-consistent-hydration). */
  seen: number;
  /** The position of the batch's last change that was not stale; null when none moved it (empty or all stale). */
  advancedTo: Position | null;
  /** A change committed past SNAPSHOT_RETENTION_MS after hydration: the snapshot filters nothing from there on. */
  snapshotExpired: boolean;
}

/**
 * Which changes of a batch are new to an object at `stored` that hydrated in `hydration`: those
 * above the position (advancing it, seen or not) and not visible to the snapshot while it still
 * filters. Pure; the object stores the outcome in one transaction.
 */
export function planBatch(stored: Position | null, hydration: HydrationSnapshot | null, changes: readonly Change[]): BatchPlan {
  const apply: Change[] = [];
  let position = stored;
  let advancedTo: Position | null = null;
  let stale = 0;
  let seen = 0;
  let snapshotExpired = false;
  for (const change of changes) {
    const at: Position = { lsn: parseLsn(change.lsn), seq: change.seq };
    if (position && comparePositions(at, position) <= 0) {
      stale++;
      continue;
    }
    position = advancedTo = at;
    if (hydration && !snapshotExpired) {
      if (Date.parse(change.committed_at) - hydration.takenAt > SNAPSHOT_RETENTION_MS) snapshotExpired = true;
      else if (visibleInSnapshot(hydration.snapshot, change.xid)) {
        seen++;
        continue;
      }
    }
    apply.push(change);
  }
  return { apply, stale, seen, advancedTo, snapshotExpired };
}
