import { describe, expect, it } from 'vitest';
import { columnType, parseArray, readTimestamp, readValue, ValueKind, type FastBuffer } from '../../replicator/pgoutput/values.ts';

const read = (text: string, oid: number) => {
  const buf = Buffer.from(text, 'utf8') as FastBuffer;
  return readValue(buf, 0, buf.length, columnType(oid));
};
const ts = (text: string) => {
  const buf = Buffer.from(text, 'latin1') as FastBuffer;
  return readTimestamp(buf, 0, buf.length);
};

describe('pgoutput values', () => {
  it('converts by type OID', () => {
    expect(read('t', 16)).toBe(true);
    expect(read('f', 16)).toBe(false);
    expect(read('-32768', 21)).toBe(-32768);
    expect(read('2147483647', 23)).toBe(2147483647);
    expect(read('9223372036854775807', 20)).toBe('9223372036854775807');
    expect(read('1.10', 1700)).toBe('1.10');
    expect(read('NaN', 701)).toBe('NaN');
    expect(read('-1.5e-7', 701)).toBe(-1.5e-7);
    expect(read('{"a": [1, "ü"]}', 3802)).toEqual({ a: [1, 'ü'] });
    expect(read('ünïcode', 25)).toBe('ünïcode');
    expect(read('10.0.0.0/8', 650)).toBe('10.0.0.0/8');
    expect(read('{"{\\"x\\": 1}",null}', 3807)).toEqual([{ x: 1 }, null]);
  });

  it('writes timestamps as ISO-8601 UTC with microseconds', () => {
    expect(ts('2026-11-22 20:00:00+00')).toBe('2026-11-22T20:00:00.000000Z');
    expect(ts('2026-11-22 20:00:00.5+00')).toBe('2026-11-22T20:00:00.500000Z');
    expect(ts('2026-11-22 20:00:00.123456+00')).toBe('2026-11-22T20:00:00.123456Z');
    expect(ts('2026-11-22 20:00:00.123456')).toBe('2026-11-22T20:00:00.123456Z');
    expect(ts('2026-11-22 01:30:00.25+05:30')).toBe('2026-11-21T20:00:00.250000Z');
    expect(ts('2026-11-22 20:00:00-08')).toBe('2026-11-23T04:00:00.000000Z');
    expect(ts('1900-01-01 00:00:00+00:09:21')).toBe('1899-12-31T23:50:39.000000Z');
    expect(ts('infinity')).toBe('infinity');
    expect(ts('-infinity')).toBe('-infinity');
    expect(ts('0044-03-15 12:00:00+00 BC')).toBe('0044-03-15 12:00:00+00 BC');
    expect(ts('12026-01-01 00:00:00+00')).toBe('+012026-01-01T00:00:00.000000Z');
  });

  it('parses array literals, nested, quoted and with NULLs', () => {
    expect(parseArray('{}', ValueKind.Int)).toEqual([]);
    expect(parseArray('{1,2,NULL}', ValueKind.Int)).toEqual([1, 2, null]);
    expect(parseArray('{{1,2},{3,4}}', ValueKind.Int)).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(parseArray('{"a b","c\\"d",e,"NULL"}', ValueKind.Text)).toEqual(['a b', 'c"d', 'e', 'NULL']);
    expect(parseArray('[0:1]={7,8}', ValueKind.Int)).toEqual([7, 8]);
    expect(() => parseArray('{1,2', ValueKind.Int)).toThrow();
  });

  it('returns the right value whatever the repeated-value cache holds (runs of misses, repeats, same lengths)', () => {
    const uuid = columnType(2950);
    const time = columnType(1184);
    const ids = Array.from({ length: 64 }, (_, i) => `00000000-0000-4000-8000-${String(i % 7 === 0 ? 1 : i).padStart(12, '0')}`);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < ids.length; i++) {
        // Misses in a row, then repeats of one value, then of values seen long ago.
        const id = i < 40 ? ids[i]! : ids[(i * 5) % 8]!;
        const buf = Buffer.from(`xx${id}yy`, 'latin1') as FastBuffer;
        expect(readValue(buf, 2, 2 + id.length, uuid)).toBe(id);
        const t = `2026-11-22 20:00:0${i % 3}.${String(i % 2).repeat(6)}+00`;
        const tb = Buffer.from(t, 'latin1') as FastBuffer;
        expect(readValue(tb, 0, tb.length, time)).toBe(`2026-11-22T20:00:0${i % 3}.${String(i % 2).repeat(6)}Z`);
      }
    }
  });
});
