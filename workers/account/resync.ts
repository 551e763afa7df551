import type { Dirty } from '../../src/access/dirty.ts';
import type { ResourceId } from '../../src/ids.ts';

/**
 * A push (propagate) that throws after its batch was stored must not lose the batch's
 * notifications (docs/architecture.md#the-path-of-a-change, step 9): the replicator would resend the batch,
 * and the object would skip it as stale. What the failed push was to do is kept in `meta`, and the
 * next push, an alarm set at once or the next batch, re-examines every socket and flow against the
 * stored view digests and flows, so that each device gets exactly what it missed.
 */

/** What a failed push left for the next one (kept in `meta`). */
export interface PendingResync {
  /** Resources whose address, type or ip_stack changed: their flows are rejected. */
  breaking: ResourceId[];
  /** Resources whose filters changed: gateways with their flows get `resource_updated`. */
  reshaped: ResourceId[];
}

/** Marks everything when a resync is pending, with the resources the failed push had marked as breaking or reshaped. Returns whether one was. */
export function foldPendingResync(pending: PendingResync | null, dirty: Dirty): boolean {
  if (!pending) return false;
  dirty.everything = true;
  for (const id of pending.breaking) dirty.breaking.add(id);
  for (const id of pending.reshaped) dirty.reshaped.add(id);
  return true;
}

/** What a failed push leaves for the next one (it already holds any resync that was pending). */
export function resyncOf(dirty: Dirty): PendingResync {
  return { breaking: [...dirty.breaking], reshaped: [...dirty.reshaped] };
}

/** When to retry after `failures` consecutive failed pushes: at once after the first, then 1 s doubling to 60 s. */
export function resyncDelayMs(failures: number): number {
  return failures <= 1 ? 0 : Math.min(60_000, 1000 * 2 ** Math.min(failures - 2, 16));
}
