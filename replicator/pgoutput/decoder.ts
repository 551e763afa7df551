import { errorMessage } from '../../src/errors.ts';
import type { JsonValue, Row } from '../../src/json.ts';
import type { Lsn } from '../../src/lsn.ts';
import { PgoutputDecodeError, TruncatedMessageError } from '../errors.ts';
import type { PgoutputMessage, Relation, RelationColumn } from './messages.ts';
import { columnType, readValue, type FastBuffer } from './values.ts';

/**
 * A function that makes a relation's row as one object literal with constant keys. V8 then creates
 * rows of one shape directly, where assigning `row[name]` column by column goes through slow,
 * megamorphic stores: this is most of a tuple's cost. Column names come from the server and are
 * embedded as JSON string literals, which cannot break out of the generated code.
 */
export function rowBuilder(columns: readonly RelationColumn[]): (values: readonly JsonValue[]) => Row {
  const fields = columns.map((c, i) => `${JSON.stringify(c.name)}: v[${i}]`).join(', ');
  return new Function('v', `return { ${fields} };`) as (values: readonly JsonValue[]) => Row;
}

const TAG_NAMES: Record<number, string> = {};
for (const c of 'BCORYIUDTMSEcA') TAG_NAMES[c.charCodeAt(0)] = c;

/**
 * The pgoutput decoder, protocol versions 1 and 2 (streamed transactions). Hot path: it reads the
 * frame's Buffer in place, with one bounds check per field, and keeps the relation cache that
 * tuple decoding needs (a Relation message replaces its entry, which is how schema changes arrive).
 */
export class PgoutputDecoder {
  private readonly relations = new Map<number, Relation>();
  private buf: FastBuffer = Buffer.alloc(0) as FastBuffer;
  private pos = 0;
  private end = 0;
  /** Between Stream Start and Stream Stop, messages carry the xid of their (sub)transaction. */
  private inStream = false;
  /** Column values of the tuple being read, reused from tuple to tuple. */
  private readonly values: JsonValue[] = [];

  relation(oid: number): Relation | undefined {
    return this.relations.get(oid);
  }

  /**
   * Decodes one message (an XLogData payload). `lsn` is the frame's WAL start, for error messages.
   * Throws PgoutputDecodeError and leaves the decoder usable for the next message.
   */
  decode(payload: Buffer, lsn?: Lsn): PgoutputMessage {
    this.buf = payload as FastBuffer;
    this.pos = 0;
    this.end = payload.length;
    const type = payload.length > 0 ? (payload[0] as number) : -1;
    try {
      if (type < 0) throw new TruncatedMessageError();
      this.pos = 1;
      const message = this.message(type);
      if (this.pos !== this.end && message.tag !== 'unknown') throw new Error(`${this.end - this.pos} trailing bytes`);
      return message;
    } catch (err) {
      const messageType = TAG_NAMES[type] ?? (type < 0 ? 'empty' : `0x${type.toString(16)}`);
      throw new PgoutputDecodeError(errorMessage(err), { lsn, messageType, offset: this.pos }, { cause: err });
    }
  }

  private message(type: number): PgoutputMessage {
    switch (type) {
      case 0x42: // B
        return { tag: 'begin', finalLsn: this.lsn(), commitTime: this.int64(), xid: this.uint32() };
      case 0x43: // C
        return { tag: 'commit', flags: this.uint8(), commitLsn: this.lsn(), endLsn: this.lsn(), commitTime: this.int64() };
      case 0x4f: // O
        return { tag: 'origin', originLsn: this.lsn(), name: this.cstring() };
      case 0x52: // R
        return this.relationMessage();
      case 0x59: {
        // Y
        const xid = this.streamXid();
        return { tag: 'type', xid, oid: this.uint32(), namespace: this.cstring(), name: this.cstring() };
      }
      case 0x49: {
        // I
        const xid = this.streamXid();
        const relation = this.relationRef();
        if (this.uint8() !== 0x4e) throw new Error("insert without 'N' tuple");
        return { tag: 'insert', xid, relation, new: this.tuple(relation, null, null) };
      }
      case 0x55: // U
        return this.updateMessage();
      case 0x44: {
        // D
        const xid = this.streamXid();
        const relation = this.relationRef();
        const kind = this.uint8();
        if (kind !== 0x4b && kind !== 0x4f) throw new Error("delete without 'K' or 'O' tuple");
        const row = this.tuple(relation, null, null);
        return { tag: 'delete', xid, relation, old: kind === 0x4f ? row : null, key: kind === 0x4b ? row : null };
      }
      case 0x54: {
        // T
        const xid = this.streamXid();
        const count = this.uint32();
        const options = this.uint8();
        const relations: Relation[] = [];
        for (let i = 0; i < count; i++) relations.push(this.relationRef());
        return { tag: 'truncate', xid, options, relations };
      }
      case 0x4d: {
        // M
        const xid = this.streamXid();
        const flags = this.uint8();
        const lsn = this.lsn();
        const prefix = this.cstring();
        const length = this.uint32();
        this.need(length);
        const content = this.buf.subarray(this.pos, this.pos + length);
        this.pos += length;
        return { tag: 'message', xid, transactional: (flags & 1) === 1, lsn, prefix, content };
      }
      case 0x53: {
        // S
        const xid = this.uint32();
        const firstSegment = this.uint8() === 1;
        this.inStream = true;
        return { tag: 'stream_start', xid, firstSegment };
      }
      case 0x45: // E
        this.inStream = false;
        return { tag: 'stream_stop' };
      case 0x63: // c
        return {
          tag: 'stream_commit',
          xid: this.uint32(),
          flags: this.uint8(),
          commitLsn: this.lsn(),
          endLsn: this.lsn(),
          commitTime: this.int64(),
        };
      case 0x41: {
        // A
        const message = { tag: 'stream_abort' as const, xid: this.uint32(), subxid: this.uint32() };
        // Protocol 4 appends the abort LSN and time; we ask for 2, but accept them.
        if (this.end - this.pos === 16) this.pos += 16;
        return message;
      }
      default:
        return { tag: 'unknown', type };
    }
  }

  private relationMessage(): PgoutputMessage {
    const xid = this.streamXid();
    const oid = this.uint32();
    const namespace = this.cstring();
    const name = this.cstring();
    const replicaIdentity = String.fromCharCode(this.uint8());
    const count = this.uint16();
    const columns: RelationColumn[] = [];
    for (let i = 0; i < count; i++) {
      const flags = this.uint8();
      const columnName = this.cstring();
      const typeOid = this.uint32();
      const typeMod = this.int32();
      columns.push({ name: columnName, typeOid, typeMod, isKey: (flags & 1) === 1, type: columnType(typeOid) });
    }
    const relation: Relation = { oid, namespace, name, replicaIdentity, columns, makeRow: rowBuilder(columns) };
    this.relations.set(oid, relation);
    return { tag: 'relation', xid, relation };
  }

  private updateMessage(): PgoutputMessage {
    const xid = this.streamXid();
    const relation = this.relationRef();
    let kind = this.uint8();
    let old: Row | null = null;
    let key: Row | null = null;
    if (kind === 0x4f || kind === 0x4b) {
      const row = this.tuple(relation, null, null);
      if (kind === 0x4f) old = row;
      else key = row;
      kind = this.uint8();
    }
    if (kind !== 0x4e) throw new Error("update without 'N' tuple");
    const missing: string[] = [];
    const row = this.tuple(relation, old, missing);
    return { tag: 'update', xid, relation, old, key, new: row, unchangedToast: missing.length > 0 ? missing : null };
  }

  /**
   * A TupleData. An unchanged TOAST value ('u') is taken from `fill` when it has the column, and
   * otherwise left out of the row and its name pushed to `missing`.
   */
  private tuple(relation: Relation, fill: Row | null, missing: string[] | null): Row {
    const count = this.uint16();
    const columns = relation.columns;
    if (count !== columns.length) {
      throw new Error(`tuple has ${count} columns, relation ${relation.namespace}.${relation.name} has ${columns.length}`);
    }
    const buf = this.buf;
    const end = this.end;
    let pos = this.pos;
    const values = this.values;
    let unfilled: number[] | null = null;
    for (let i = 0; i < count; i++) {
      const column = columns[i] as RelationColumn;
      if (pos >= end) throw new TruncatedMessageError();
      const kind = buf[pos++];
      if (kind === 0x74) {
        // t
        if (pos + 4 > end) throw new TruncatedMessageError();
        const length = ((buf[pos] as number) << 24) | ((buf[pos + 1] as number) << 16) | ((buf[pos + 2] as number) << 8) | (buf[pos + 3] as number);
        pos += 4;
        if (length < 0 || pos + length > end) throw new TruncatedMessageError();
        values[i] = readValue(buf, pos, pos + length, column.type);
        pos += length;
      } else if (kind === 0x6e) {
        // n
        values[i] = null;
      } else if (kind === 0x75) {
        // u
        if (fill !== null && column.name in fill) values[i] = fill[column.name] as JsonValue;
        else {
          values[i] = null;
          (unfilled ??= []).push(i);
          missing?.push(column.name);
        }
      } else if (kind === 0x62) {
        // b
        this.pos = pos;
        throw new Error(`binary value in column ${column.name}: the stream was not asked for binary format`);
      } else {
        this.pos = pos - 1;
        throw new Error(`unknown tuple value kind 0x${(kind ?? 0).toString(16)} in column ${column.name}`);
      }
    }
    this.pos = pos;
    const row = relation.makeRow(values);
    // Unchanged TOAST values nobody could fill are left out of the row (rare: slow path).
    if (unfilled !== null) for (const i of unfilled) delete row[(columns[i] as RelationColumn).name];
    return row;
  }

  private relationRef(): Relation {
    const oid = this.uint32();
    const relation = this.relations.get(oid);
    if (!relation) throw new Error(`relation ${oid} was never described by a Relation message`);
    return relation;
  }

  private streamXid(): number | undefined {
    return this.inStream ? this.uint32() : undefined;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) throw new TruncatedMessageError();
  }

  private uint8(): number {
    this.need(1);
    return this.buf[this.pos++] as number;
  }

  private uint16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  private int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  private uint32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  private int64(): bigint {
    this.need(8);
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  private lsn(): Lsn {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  private cstring(): string {
    const zero = this.buf.indexOf(0, this.pos);
    if (zero < 0 || zero >= this.end) throw new TruncatedMessageError();
    const s = this.buf.utf8Slice(this.pos, zero);
    this.pos = zero + 1;
    return s;
  }
}
