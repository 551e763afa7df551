import type { Change } from '../../src/change.ts';
import { comparePositions, parseLsn } from '../../src/lsn.ts';

export const positionOf = (c: Pick<Change, 'lsn' | 'seq'>) => ({ lsn: parseLsn(c.lsn), seq: c.seq });
export const keyOf = (c: Pick<Change, 'lsn' | 'seq'>) => `${c.lsn}:${c.seq}`;

/** The first delivery of each position, in arrival order. */
export function firstDeliveries<T extends Pick<Change, 'lsn' | 'seq'>>(changes: T[]): T[] {
  const seen = new Set<string>();
  return changes.filter((c) => {
    const k = keyOf(c);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function isSortedByPosition(changes: Array<Pick<Change, 'lsn' | 'seq'>>): boolean {
  for (let i = 1; i < changes.length; i++) {
    if (comparePositions(positionOf(changes[i - 1]!), positionOf(changes[i]!)) >= 0) return false;
  }
  return true;
}
