import { errorSummary } from '../src/errors.ts';
import { formatLsn, type Lsn } from '../src/lsn.ts';

// The replicator's errors, in the order of a change's path; then the classification of Postgres's.

/** The environment does not configure a replicator; each problem names its variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

/** The server or the slot cannot be used as configured; somebody has to act. */
export class SetupError extends Error {
  override name = 'SetupError';
}

/** The server stopped talking to us for longer than the replication timeout. */
export class StallError extends Error {
  override name = 'StallError';
}

/** Input that is not valid pgoutput. Names the WAL position of the frame that carried it. */
export class PgoutputDecodeError extends Error {
  override name = 'PgoutputDecodeError';
  constructor(
    message: string,
    readonly context: { lsn: Lsn | undefined; messageType: string; offset: number },
    options?: ErrorOptions,
  ) {
    super(`${message} (message '${context.messageType}' at offset ${context.offset}${context.lsn === undefined ? '' : `, WAL ${formatLsn(context.lsn)}`})`, options);
  }
}

/** A pgoutput message ended before a field it announced; the decoder wraps it in a PgoutputDecodeError. */
export class TruncatedMessageError extends Error {
  override name = 'TruncatedMessageError';
  constructor() {
    super('message ends early');
  }
}

/** A column value that is not valid text of its type; the decoder wraps it in a PgoutputDecodeError. */
export class ValueError extends Error {
  override name = 'ValueError';
}

/** Decoded messages that do not form transactions (a Commit without its Begin, a change outside one). */
export class AssemblyError extends Error {
  override name = 'AssemblyError';
  constructor(
    message: string,
    readonly context: { xid?: number; lsn?: Lsn } = {},
  ) {
    super(message);
  }
}

/**
 * A large transaction's spill file could not be created, written or read (a full or read-only disk):
 * the session ends without acknowledging it, and the next one reads the transaction again.
 */
export class SpillError extends Error {
  override name = 'SpillError';
  constructor(
    readonly path: string,
    options: { cause: unknown },
  ) {
    super(`spill file ${path}: ${errorSummary(options.cause)}`, options);
  }
}

/** The accounts a TRUNCATE goes to could not be listed; the transaction is not routed. */
export class TruncateRoutingError extends Error {
  override name = 'TruncateRoutingError';
  constructor(
    readonly lsn: Lsn,
    options: { cause: unknown },
  ) {
    super(`could not list accounts for a TRUNCATE: ${errorSummary(options.cause)}`, options);
  }
}

/** A change_logs connection went away (Postgres shutting down or restarting, or the network). */
export class WriterConnectionLost extends Error {
  override name = 'WriterConnectionLost';
}

/** Failure of one attempt to deliver a batch to an account's object; the batch is retried. */
export class DeliveryError extends Error {
  override name = 'DeliveryError';
  constructor(
    message: string,
    readonly account: string,
    readonly reason: 'status' | 'timeout' | 'network',
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A thrown value as an Error: the same object when it is one, since callers classify it by class and SQLSTATE. */
export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(errorSummary(err));
}

/** SQLSTATEs that mean "try again later" for the replication connection. */
const TRANSIENT_SQLSTATES = new Set([
  '55006', // object_in_use: the slot is active for another process (we are the standby)
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up or shutting down
  '53300', // too_many_connections
  '08000',
  '08003',
  '08006',
  '08001',
  '08004', // connection exceptions
  '40001',
  '40P01', // serialization failure, deadlock
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

/** A session failure that waiting will not fix (privileges, an invalidated slot, wal_level). */
export function isPermanent(err: unknown): boolean {
  return err instanceof SetupError || !isTransient(err);
}

/** Whether a failed statement lost its connection, rather than being refused by a working server. */
export function isConnectionLoss(err: unknown): boolean {
  const state = sqlState(err);
  return state === undefined || state.startsWith('08') || state === '57P01' || state === '57P02' || state === '57P03';
}
