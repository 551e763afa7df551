/**
 * When the Worker restarts its replicator container (docs/protocol.md#replicator-container). Pure,
 * so that the unit tests decide the same things the object does.
 */

/** /healthz failing this long in a row (every check failed) restarts the container. */
export const UNHEALTHY_RESTART_MS = 3 * 60_000;
/** A container that does not exit within this long of its SIGTERM is destroyed (SIGKILL). */
export const STOP_GRACE_MS = 60_000;
/** First restart delay after a stop; doubles with each stop that follows a short run. */
export const RESTART_BASE_MS = 1_000;
export const RESTART_MAX_MS = 5 * 60_000;
/** A run at least this long counts as a success: the next restart is fast again. */
export const STABLE_RUN_MS = 10 * 60_000;

/** What the object keeps about its container, in its own storage. */
export interface ReplicatorRecord {
  /** When the container was last started. */
  startedAt?: number;
  /** Stops in a row that followed a run shorter than STABLE_RUN_MS. */
  failures: number;
  /** No start before this time (backoff after a stop). */
  notBefore?: number;
  /** Since when every health check failed. */
  unhealthySince?: number;
  /** When the object sent SIGTERM for a restart. */
  stopRequestedAt?: number;
}

export const FRESH_RECORD: ReplicatorRecord = { failures: 0 };

export function restartDelayMs(failures: number): number {
  if (failures <= 0) return RESTART_BASE_MS;
  return Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** Math.min(failures, 30));
}

/** The record after the container stopped at `now`: the failure count and when it may start again. */
export function afterStop(record: ReplicatorRecord, now: number): ReplicatorRecord {
  const ran = record.startedAt === undefined ? 0 : now - record.startedAt;
  const failures = ran >= STABLE_RUN_MS ? 0 : record.failures + 1;
  return { failures, notBefore: now + restartDelayMs(failures) };
}

export type HealthAction = 'none' | 'stop' | 'destroy';

/** The record after a health check at `now`, and what to do with the container. */
export function afterHealthCheck(record: ReplicatorRecord, healthy: boolean, now: number): { record: ReplicatorRecord; action: HealthAction } {
  if (record.stopRequestedAt !== undefined) {
    return { record, action: now - record.stopRequestedAt >= STOP_GRACE_MS ? 'destroy' : 'none' };
  }
  if (healthy) {
    const { unhealthySince: _, ...rest } = record;
    return { record: rest, action: 'none' };
  }
  const unhealthySince = record.unhealthySince ?? now;
  if (now - unhealthySince >= UNHEALTHY_RESTART_MS) return { record: { ...record, unhealthySince, stopRequestedAt: now }, action: 'stop' };
  return { record: { ...record, unhealthySince }, action: 'none' };
}
