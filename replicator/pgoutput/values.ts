import type { JsonValue } from '../../src/json.ts';
import { ValueError } from '../errors.ts';

/**
 * Column values of pgoutput's text format, converted by type OID (docs/architecture.md#5-fat-typed-changes): uuid and text
 * as strings, int2/int4 as numbers, int8 and numeric as strings, booleans, timestamps as ISO-8601
 * UTC with microseconds, json/jsonb parsed, arrays as arrays. Written against the Buffer's bytes
 * rather than through strings, because this runs for every column of every row.
 */
export enum ValueKind {
  Text = 0,
  Ascii = 1,
  Int = 2,
  Float = 3,
  Bool = 4,
  Json = 5,
  Timestamp = 6,
  Array = 7,
}

export interface ColumnType {
  kind: ValueKind;
  /** For arrays: the kind of the elements. */
  elementKind: ValueKind;
  /**
   * The column's last short ASCII value (uuid, timestamp, numeric) and its raw bytes: rows of one
   * transaction repeat them (account_id, inserted_at = updated_at = now()), and a byte compare is
   * cheaper than making the string again. Strings are immutable, so sharing one is safe.
   */
  lastBytes: Uint8Array | null;
  lastLength: number;
  lastValue: JsonValue;
  /** Misses since the last hit: a column that never repeats (an id) stops paying for the copy. */
  misses: number;
}

/** Node's Buffer has these slicing methods (what `toString` calls), without the argument juggling. */
export interface FastBuffer extends Buffer {
  latin1Slice(start: number, end: number): string;
  utf8Slice(start: number, end: number): string;
}

const SCALARS = new Map<number, ValueKind>([
  [16, ValueKind.Bool], // bool
  [20, ValueKind.Ascii], // int8: a string, beyond 2^53
  [21, ValueKind.Int], // int2
  [23, ValueKind.Int], // int4
  [26, ValueKind.Int], // oid
  [28, ValueKind.Int], // xid
  [114, ValueKind.Json], // json
  [3802, ValueKind.Json], // jsonb
  [700, ValueKind.Float], // float4
  [701, ValueKind.Float], // float8
  [1700, ValueKind.Ascii], // numeric: a string, exact
  [2950, ValueKind.Ascii], // uuid
  [1082, ValueKind.Ascii], // date
  [1114, ValueKind.Timestamp], // timestamp (read as UTC)
  [1184, ValueKind.Timestamp], // timestamptz
]);

const ARRAYS = new Map<number, number>([
  [1000, 16],
  [1016, 20],
  [1005, 21],
  [1007, 23],
  [1028, 26],
  [1009, 25],
  [1015, 1043],
  [1014, 1042],
  [199, 114],
  [3807, 3802],
  [1021, 700],
  [1022, 701],
  [1231, 1700],
  [2951, 2950],
  [1182, 1082],
  [1115, 1114],
  [1185, 1184],
  [1041, 869],
  [651, 650],
]);

const CACHED_MAX = 40;

function makeType(kind: ValueKind, elementKind: ValueKind): ColumnType {
  const cached = kind === ValueKind.Ascii || kind === ValueKind.Timestamp;
  return { kind, elementKind, lastBytes: cached ? new Uint8Array(CACHED_MAX) : null, lastLength: -1, lastValue: null, misses: 0 };
}

export function columnType(typeOid: number): ColumnType {
  const scalar = SCALARS.get(typeOid);
  if (scalar !== undefined) return makeType(scalar, ValueKind.Text);
  const element = ARRAYS.get(typeOid);
  if (element !== undefined) return makeType(ValueKind.Array, SCALARS.get(element) ?? ValueKind.Text);
  // text, varchar, bpchar, name, inet, enums, domains and every other type: their text form.
  return makeType(ValueKind.Text, ValueKind.Text);
}

const scratch = Buffer.alloc(32) as FastBuffer;
// 'YYYY-MM-DDTHH:MM:SS.ffffffZ'
const ISO_LENGTH = 27;

/** Reads `buf[start, end)` as a value of the given kind. */
export function readValue(buf: FastBuffer, start: number, end: number, type: ColumnType): JsonValue {
  const last = type.lastBytes;
  if (last !== null) {
    const length = end - start;
    if (length === type.lastLength) {
      // From the end: timestamps of one transaction differ in their last digits, if at all.
      let i = length - 1;
      while (i >= 0 && last[i] === buf[start + i]) i--;
      if (i < 0) {
        type.misses = 0;
        return type.lastValue;
      }
    }
    const value = type.kind === ValueKind.Timestamp ? readTimestamp(buf, start, end) : buf.latin1Slice(start, end);
    const misses = ++type.misses;
    if (length <= CACHED_MAX && (misses <= 2 || (misses & 7) === 0)) {
      for (let i = 0; i < length; i++) last[i] = buf[start + i] as number;
      type.lastLength = length;
      type.lastValue = value;
    }
    return value;
  }
  switch (type.kind) {
    case ValueKind.Text:
      return buf.utf8Slice(start, end);
    case ValueKind.Ascii:
      return buf.latin1Slice(start, end);
    case ValueKind.Int:
      return readInt(buf, start, end);
    case ValueKind.Bool:
      return buf[start] === 0x74; // 't'
    case ValueKind.Json:
      return JSON.parse(buf.utf8Slice(start, end)) as JsonValue;
    case ValueKind.Timestamp:
      return readTimestamp(buf, start, end);
    case ValueKind.Float:
      return readFloat(buf.latin1Slice(start, end));
    case ValueKind.Array:
      return parseArray(buf.utf8Slice(start, end), type.elementKind);
  }
}

function readInt(buf: Buffer, start: number, end: number): number {
  let i = start;
  let negative = false;
  if (buf[i] === 0x2d) {
    negative = true;
    i++;
  }
  if (i === end) throw new ValueError('empty integer');
  let n = 0;
  for (; i < end; i++) {
    const d = (buf[i] as number) - 0x30;
    if (d < 0 || d > 9) throw new ValueError('not an integer');
    n = n * 10 + d;
  }
  return negative ? -n : n;
}

function readFloat(text: string): JsonValue {
  const n = Number(text);
  // JSON has no NaN or infinities: those stay in Postgres's spelling.
  return Number.isFinite(n) ? n : text;
}

/**
 * Postgres's ISO output (`2026-11-22 20:00:00.5+00`) to `2026-11-22T20:00:00.500000Z`. The
 * replication session runs with TimeZone=UTC, so the offset is almost always `+00` and the result
 * is built byte by byte; other offsets, years beyond 9999, BC and infinities take the slow path.
 */
export function readTimestamp(buf: FastBuffer, start: number, end: number): string {
  const len = end - start;
  if (len < 19 || buf[start + 4] !== 0x2d || buf[start + 10] !== 0x20) return slowTimestamp(buf.latin1Slice(start, end));
  let i = start + 19;
  let fractionEnd = i;
  if (buf[i] === 0x2e) {
    fractionEnd = i + 1;
    while (fractionEnd < end && (buf[fractionEnd] as number) >= 0x30 && (buf[fractionEnd] as number) <= 0x39) fractionEnd++;
  }
  // Either nothing after the fraction (timestamp without time zone), or exactly '+00'.
  const rest = end - fractionEnd;
  if (!(rest === 0 || (rest === 3 && buf[fractionEnd] === 0x2b && buf[fractionEnd + 1] === 0x30 && buf[fractionEnd + 2] === 0x30))) {
    return slowTimestamp(buf.latin1Slice(start, end));
  }
  for (let k = 0; k < 19; k++) scratch[k] = buf[start + k] as number;
  scratch[10] = 0x54; // 'T'
  scratch[19] = 0x2e; // '.'
  let o = 20;
  for (i = i + 1; i < fractionEnd && o < 26; i++) scratch[o++] = buf[i] as number;
  while (o < 26) scratch[o++] = 0x30;
  scratch[26] = 0x5a; // 'Z'
  return scratch.latin1Slice(0, ISO_LENGTH);
}

const TIMESTAMP_TEXT = /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$/;

function slowTimestamp(text: string): string {
  const m = TIMESTAMP_TEXT.exec(text);
  // infinity, -infinity and BC dates have no ISO-8601 form that JSON readers agree on: keep them.
  if (!m || m[12]) return text;
  const [, y, mo, d, h, mi, s, frac = '', sign, oh = '0', om = '0', os = '0'] = m;
  const offset = (sign === '-' ? -1 : 1) * (Number(oh) * 3600 + Number(om) * 60 + Number(os));
  const date = new Date(0);
  date.setUTCFullYear(Number(y), Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(s) - (sign ? offset : 0), 0);
  const iso = date.toISOString(); // ±YYYYYY-... beyond year 9999
  return `${iso.slice(0, iso.length - 5)}.${frac.padEnd(6, '0').slice(0, 6)}Z`;
}

/** Postgres array literals: `{1,2}`, `{"a b",NULL}`, `{{1,2},{3,4}}`. */
export function parseArray(text: string, elementKind: ValueKind): JsonValue[] {
  let i = 0;
  // A leading dimension decoration such as `[0:1]={1,2}`.
  if (text[0] === '[') i = text.indexOf('=') + 1;
  const parse = (): JsonValue[] => {
    if (text[i] !== '{') throw new ValueError('malformed array literal');
    i++;
    const out: JsonValue[] = [];
    if (text[i] === '}') {
      i++;
      return out;
    }
    for (;;) {
      if (text[i] === '{') out.push(parse());
      else if (text[i] === '"') {
        let s = '';
        i++;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === '\\') i++;
          s += text[i++];
        }
        if (text[i] !== '"') throw new ValueError('unterminated quoted array element');
        i++;
        out.push(element(s, elementKind));
      } else {
        let j = i;
        while (j < text.length && text[j] !== ',' && text[j] !== '}') j++;
        const raw = text.slice(i, j).trim();
        i = j;
        out.push(raw === 'NULL' ? null : element(raw, elementKind));
      }
      if (text[i] === ',') i++;
      else if (text[i] === '}') {
        i++;
        return out;
      } else throw new ValueError('malformed array literal');
    }
  };
  return parse();
}

function element(text: string, kind: ValueKind): JsonValue {
  const bytes = Buffer.from(text, 'utf8') as FastBuffer;
  return readValue(bytes, 0, bytes.length, makeType(kind, ValueKind.Text));
}
