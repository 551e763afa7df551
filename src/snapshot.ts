/**
 * docs/architecture.md#4-consistent-hydration: an object hydrates from one REPEATABLE READ query that also returns
 * `pg_current_snapshot()`. A change is applied afterwards iff its transaction was not visible to
 * that snapshot: xid >= xmax, or xid in the in-progress list.
 */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  xip: bigint[];
}

export class InvalidSnapshotError extends Error {
  override name = 'InvalidSnapshotError';
}

/** Parses the text form `xmin:xmax:xip1,xip2,...` of a pg_snapshot. */
export function parseSnapshot(text: string): Snapshot {
  const m = /^(\d+):(\d+):([\d,]*)$/.exec(text);
  if (!m) throw new InvalidSnapshotError(`not a pg_snapshot: ${JSON.stringify(text)}`);
  return { xmin: BigInt(m[1]!), xmax: BigInt(m[2]!), xip: m[3] ? m[3].split(',').map(BigInt) : [] };
}

export function formatSnapshot(s: Snapshot): string {
  return `${s.xmin}:${s.xmax}:${s.xip.join(',')}`;
}

const LOW32 = 0xffffffffn;

/**
 * Whether the transaction `xid` (32 bits, as pgoutput sends it) had committed when the snapshot
 * was taken, so its rows are already in the hydrated state. Snapshot xids are 64-bit (epoch and
 * xid): compare modulo 2^32 around xmax, as Postgres's TransactionIdPrecedes does, which is exact
 * while the two are less than 2^31 transactions apart.
 */
export function visibleInSnapshot(s: Snapshot, xid: number): boolean {
  const xmax = Number(s.xmax & LOW32);
  if (((xid - xmax) | 0) >= 0) return false;
  for (const x of s.xip) if (Number(x & LOW32) === xid >>> 0) return false;
  return true;
}
