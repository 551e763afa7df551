import { describe, expect, it } from 'vitest';
import { formatSnapshot, InvalidSnapshotError, parseSnapshot, visibleInSnapshot } from '../../src/snapshot.ts';

describe('hydration snapshot visibility (docs/architecture.md#4-consistent-hydration)', () => {
  it('parses and formats pg_snapshot text', () => {
    expect(parseSnapshot('100:105:100,103')).toEqual({ xmin: 100n, xmax: 105n, xip: [100n, 103n] });
    expect(formatSnapshot(parseSnapshot('7:7:'))).toBe('7:7:');
    expect(() => parseSnapshot('nope')).toThrow(InvalidSnapshotError);
  });

  it('sees transactions below xmax that were not in progress, and nothing at or above xmax', () => {
    const s = parseSnapshot('100:105:100,103');
    expect(visibleInSnapshot(s, 99)).toBe(true);
    expect(visibleInSnapshot(s, 101)).toBe(true);
    expect(visibleInSnapshot(s, 100)).toBe(false);
    expect(visibleInSnapshot(s, 103)).toBe(false);
    expect(visibleInSnapshot(s, 105)).toBe(false);
    expect(visibleInSnapshot(s, 4000)).toBe(false);
  });

  it('compares 32-bit xids from pgoutput with 64-bit snapshot xids across an epoch and a wraparound', () => {
    const epoch = 1n << 32n;
    const s = parseSnapshot(`${epoch + 10n}:${epoch + 20n}:${epoch + 12n}`);
    expect(visibleInSnapshot(s, 15)).toBe(true);
    expect(visibleInSnapshot(s, 12)).toBe(false);
    expect(visibleInSnapshot(s, 25)).toBe(false);
    // xmax just past the wrap: an xid from just before it is older.
    const wrapped = parseSnapshot(`${epoch - 5n}:${epoch + 3n}:`);
    expect(visibleInSnapshot(wrapped, 0xfffffffe)).toBe(true);
    expect(visibleInSnapshot(wrapped, 4)).toBe(false);
  });
});

describe('uuid bytes', async () => {
  const { bytesToUuid, uuidToBytes } = await import('../../src/ids.ts');
  it('round-trips canonical and upper-case uuids through 16 bytes', () => {
    const id = '0a1b2c3d-4e5f-6789-abcd-ef0123456789';
    expect(Array.from(uuidToBytes(id))).toEqual([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89]);
    expect(bytesToUuid(uuidToBytes(id))).toBe(id);
    expect(bytesToUuid(uuidToBytes(id.toUpperCase()))).toBe(id);
  });
});
