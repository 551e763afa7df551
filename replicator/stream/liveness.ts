/**
 * Timing decisions of a replication session, pure so that they can be tested without a server.
 * `wal_sender_timeout` ends a connection from which the server heard nothing for that long; we
 * answer well before it, and give up on a server we heard nothing from for twice as long.
 */
export interface LivenessTimings {
  statusIntervalMs: number;
  timeoutMs: number;
}

export function livenessTimings(walSenderTimeoutMs: number, statusIntervalMs: number, configuredTimeoutMs: number): LivenessTimings {
  // wal_sender_timeout = 0 disables the server's own check; keep ours at a sane bound.
  const serverTimeout = walSenderTimeoutMs > 0 ? walSenderTimeoutMs : 60_000;
  return {
    statusIntervalMs: Math.max(100, Math.min(statusIntervalMs, Math.floor(serverTimeout / 3))),
    timeoutMs: configuredTimeoutMs > 0 ? configuredTimeoutMs : 2 * serverTimeout,
  };
}

export type LivenessAction = 'none' | 'status' | 'ping' | 'reconnect';

/**
 * What to do at a tick. A status update is due every interval; it asks the server to reply when
 * the server has been silent since the last one, so that silence only lasts on a dead connection.
 */
export function livenessAction(now: number, lastReceivedAt: number, lastStatusAt: number, t: LivenessTimings): LivenessAction {
  if (now - lastReceivedAt >= t.timeoutMs) return 'reconnect';
  if (now - lastStatusAt < t.statusIntervalMs) return 'none';
  return lastReceivedAt <= lastStatusAt ? 'ping' : 'status';
}
