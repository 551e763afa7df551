/** SQLSTATEs that mean "try again later" for the replication connection. */
const TRANSIENT_SQLSTATES = new Set([
  '55006', // object_in_use: the slot is active for another process (we are the standby)
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or shutting down
  '53300', // too_many_connections
  '08000', '08003', '08006', '08001', '08004', // connection exceptions
  '40001', '40P01', // serialization failure, deadlock
]);

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export function isSlotInUse(err: unknown): boolean {
  return sqlState(err) === '55006';
}

/** Whether retrying may help without anybody changing anything. Socket errors carry no SQLSTATE. */
export function isTransient(err: unknown): boolean {
  const state = sqlState(err);
  return state === undefined || TRANSIENT_SQLSTATES.has(state);
}

/** The server or the slot cannot be used as configured; somebody has to act. */
export class SetupError extends Error {
  override name = 'SetupError';
}

/** The server stopped talking to us for longer than the replication timeout. */
export class StallError extends Error {
  override name = 'StallError';
}

/** A change_logs connection went away (Postgres shutting down or restarting, or the network). */
export class WriterConnectionLost extends Error {
  override name = 'WriterConnectionLost';
}

/** Whether a failed statement lost its connection, rather than being refused by a working server. */
export function isConnectionLoss(err: unknown): boolean {
  const state = sqlState(err);
  return state === undefined || state.startsWith('08') || state === '57P01' || state === '57P02' || state === '57P03';
}
