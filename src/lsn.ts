/**
 * Log sequence numbers: `bigint` in memory, `X/Y` text (hex, upper case) on the wire and in SQL.
 * A change's position is its transaction's commit LSN plus its index inside the transaction.
 */
export type Lsn = bigint;

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export class InvalidLsnError extends Error {
  override name = 'InvalidLsnError';
  constructor(readonly text: string) {
    super(`not an LSN: ${JSON.stringify(text)}`);
  }
}

export function parseLsn(text: string): Lsn {
  const m = LSN_TEXT.exec(text);
  if (!m) throw new InvalidLsnError(text);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function isLsn(text: string): boolean {
  return LSN_TEXT.test(text);
}

export function formatLsn(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** Builds the text form from the two 32-bit halves without going through bigint (the decoder's hot path). */
export function formatLsnParts(hi: number, lo: number): string {
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a > b ? a : b;
}

export interface Position {
  lsn: Lsn;
  seq: number;
}

export function comparePositions(a: Position, b: Position): number {
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  return a.seq - b.seq;
}

export function formatPosition(p: Position): string {
  return `${formatLsn(p.lsn)}:${p.seq}`;
}

export function parsePosition(text: string): Position {
  const i = text.lastIndexOf(':');
  const seq = Number(text.slice(i + 1));
  if (i < 0 || !Number.isSafeInteger(seq) || seq < 0) throw new InvalidLsnError(text);
  return { lsn: parseLsn(text.slice(0, i)), seq };
}
