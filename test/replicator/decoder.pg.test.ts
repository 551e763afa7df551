import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/lsn.ts';
import { PgoutputDecodeError } from '../../replicator/errors.ts';
import { PgoutputDecoder } from '../../replicator/pgoutput/decoder.ts';
import type { PgoutputMessage } from '../../replicator/pgoutput/messages.ts';
import { TransactionAssembler } from '../../replicator/assemble/transaction-assembler.ts';
import { capturePgoutput, LiveCapture } from '../support/capture.ts';
import { eventually } from '../support/replicator-process.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let db: TestDatabase;
let sql: Sql;

beforeAll(async () => {
  db = await createTestDatabase('decoder', { migrate: false });
  // Decoding through the SQL interface runs in this session: its TimeZone shapes timestamps, and
  // a small work_mem makes the server stream big transactions.
  sql = postgres(db.url, { max: 1, onnotice: () => {}, connection: { TimeZone: 'UTC', logical_decoding_work_mem: '64kB' } });
  await sql.unsafe(`
    create type mood as enum ('happy', 'sad');
    create table probe (
      id uuid primary key default gen_random_uuid(),
      i2 int2, i4 int4, i8 int8, n numeric, f8 float8, b bool, t text,
      ts timestamptz, tsn timestamp, d date, j json, jb jsonb,
      arr int4[], tarr text[], m mood, big text
    );
    alter table probe alter column big set storage external;
    alter table probe replica identity full;
    create table keyed (id int primary key, v text, big text);
    alter table keyed alter column big set storage external;
    create publication probe_pub for table probe, keyed;
  `);
  await sql`select pg_create_logical_replication_slot('probe_slot', 'pgoutput')`;
});

afterAll(async () => {
  await sql.end();
  await db.drop();
});

function decodeAll(captured: { lsn: string; data: Buffer }[], decoder = new PgoutputDecoder()): PgoutputMessage[] {
  return captured.map((m) => decoder.decode(m.data, parseLsn(m.lsn)));
}

/** Aborts and non-transactional messages are not flushed by themselves; a commit flushes all WAL before it. */
async function flushWal(): Promise<void> {
  await sql`create table if not exists unpublished (x int)`;
  await sql`insert into unpublished values (1)`;
}

const capture = (opts?: Parameters<typeof capturePgoutput>[3]) => capturePgoutput(sql, 'probe_slot', 'probe_pub', opts);

describe('pgoutput decoder on bytes from a real server', () => {
  const decoder = new PgoutputDecoder();

  it('decodes Begin, Type, Relation, Insert and Commit with values typed by OID', async () => {
    const big = 'x'.repeat(10);
    await sql`insert into probe (id, i2, i4, i8, n, f8, b, t, ts, tsn, d, j, jb, arr, tarr, m, big) values (
      '6f1c2f9e-4a57-4b7a-9d1e-2b8c3d4e5f60', -7, 2147483647, 9007199254740993, 12345.6789, 1.5, true, 'héllo "q"',
      '2026-11-22 20:00:00.123456+02', '2026-01-02 03:04:05', '2026-11-22', '{"a":[1,2]}', '{"b": null}',
      '{1,2,NULL}', '{"a b","c,d",e}', 'sad', ${big})`;
    const messages = decodeAll(await capture(), decoder);
    expect(messages.map((m) => m.tag)).toEqual(['begin', 'type', 'relation', 'insert', 'commit']);
    const [begin, type, relation, insert, commit] = messages;
    if (begin?.tag !== 'begin' || commit?.tag !== 'commit' || type?.tag !== 'type' || relation?.tag !== 'relation' || insert?.tag !== 'insert') throw new Error('shape');
    expect(begin.xid).toBeGreaterThan(0);
    expect(begin.finalLsn).toBe(commit.commitLsn);
    expect(commit.endLsn).toBeGreaterThan(commit.commitLsn);
    expect(type.name).toBe('mood');
    expect(relation.relation.name).toBe('probe');
    expect(relation.relation.replicaIdentity).toBe('f');
    expect(insert.new).toEqual({
      id: '6f1c2f9e-4a57-4b7a-9d1e-2b8c3d4e5f60',
      i2: -7,
      i4: 2147483647,
      i8: '9007199254740993',
      n: '12345.6789',
      f8: 1.5,
      b: true,
      t: 'héllo "q"',
      ts: '2026-11-22T18:00:00.123456Z',
      tsn: '2026-01-02T03:04:05.000000Z',
      d: '2026-11-22',
      j: { a: [1, 2] },
      jb: { b: null },
      arr: [1, 2, null],
      tarr: ['a b', 'c,d', 'e'],
      m: 'sad',
      big,
    });
  });

  it('decodes Update with the whole old row and Delete under REPLICA IDENTITY FULL', async () => {
    await sql`update probe set i4 = 1, b = false`;
    await sql`delete from probe`;
    const messages = decodeAll(await capture(), decoder);
    const update = messages.find((m) => m.tag === 'update');
    const del = messages.find((m) => m.tag === 'delete');
    if (update?.tag !== 'update' || del?.tag !== 'delete') throw new Error('missing update/delete');
    expect(update.old?.i4).toBe(2147483647);
    expect(update.new.i4).toBe(1);
    expect(update.new.b).toBe(false);
    expect(update.key).toBeNull();
    expect(del.old?.i4).toBe(1);
    expect(del.key).toBeNull();
  });

  it('fills unchanged TOAST values from the old row, and reports them where no old row exists', async () => {
    const big = Array.from({ length: 400 }, (_, i) => `${i}-${Math.random().toString(36)}`).join('');
    await sql`insert into probe (i4, big) values (1, ${big})`;
    await sql`insert into keyed (id, v, big) values (1, 'a', ${big})`;
    await sql`update probe set i4 = 2`;
    await sql`update keyed set v = 'b'`;
    await sql`update keyed set id = 2`;
    await sql`delete from keyed`;
    const messages = decodeAll(await capture(), decoder);
    const updates = messages.filter((m) => m.tag === 'update');
    const [full, noOld, keyChange] = updates;
    if (full?.tag !== 'update' || noOld?.tag !== 'update' || keyChange?.tag !== 'update') throw new Error('expected three updates');
    expect(full.new.big).toBe(big);
    expect(full.new.i4).toBe(2);
    expect(full.unchangedToast).toBeNull();
    // REPLICA IDENTITY DEFAULT: no old tuple to fill from.
    expect(noOld.old).toBeNull();
    expect(noOld.unchangedToast).toEqual(['big']);
    expect('big' in noOld.new).toBe(false);
    expect(keyChange.key).toEqual({ id: 1, v: null, big: null });
    const del = messages.find((m) => m.tag === 'delete');
    if (del?.tag !== 'delete') throw new Error('expected a delete');
    expect(del.key?.id).toBe(2);
    expect(del.old).toBeNull();
  });

  it('decodes Truncate and logical decoding Messages', async () => {
    await sql`truncate probe, keyed`;
    await sql.begin(async (tx) => {
      await tx`select pg_logical_emit_message(true, 'edgeplane', 'inside')`;
      await tx`insert into keyed (id, v) values (3, 'c')`;
    });
    await sql`select pg_logical_emit_message(false, 'edgeplane', 'outside')`;
    await flushWal();
    const messages = decodeAll(await capture(), decoder);
    const truncate = messages.find((m) => m.tag === 'truncate');
    if (truncate?.tag !== 'truncate') throw new Error('expected a truncate');
    expect(truncate.relations.map((r) => r.name).sort()).toEqual(['keyed', 'probe']);
    const texts = messages.flatMap((m) => (m.tag === 'message' ? [[m.prefix, m.content.toString(), m.transactional]] : []));
    expect(texts).toEqual([
      ['edgeplane', 'inside', true],
      ['edgeplane', 'outside', false],
    ]);
  });

  it('decodes Origin', async () => {
    await sql`select pg_replication_origin_create('upstream')`;
    await sql.begin(async (tx) => {
      await tx`select pg_replication_origin_session_setup('upstream')`;
      await tx`select pg_replication_origin_xact_setup('0/ABCDEF', now())`;
      await tx`insert into keyed (id, v) values (4, 'd')`;
    });
    await sql`select pg_replication_origin_session_reset()`.catch(() => {});
    const messages = decodeAll(await capture(), decoder);
    const origin = messages.find((m) => m.tag === 'origin');
    if (origin?.tag !== 'origin') throw new Error(`expected an origin message, got ${messages.map((m) => m.tag).join(',')}`);
    expect(origin.name).toBe('upstream');
    expect(origin.originLsn).toBe(parseLsn('0/ABCDEF'));
  });

  it('decodes streamed transactions: Stream Start, Stop, Commit and Abort (top level and subtransaction)', async () => {
    // A live walsender decodes while the transactions run, so that it streams them before they end
    // (decoding after an abort, the server would skip the aborted transaction altogether).
    await sql`select pg_create_logical_replication_slot('live_slot', 'pgoutput')`;
    const live = await LiveCapture.start(db.url, 'live_slot', 'probe_pub');
    const other = postgres(db.url, { max: 1, onnotice: () => {} });
    const rows = 3000;
    const streamedSoFar = () => live.messages.filter((m) => m.data[0] === 0x53).length;
    try {
      await sql.begin(async (tx) => {
        await tx`insert into keyed (id, v) select g, repeat('s', 100) from generate_series(100, ${100 + rows - 1}) g`;
        await tx`savepoint sp`;
        await tx`insert into keyed (id, v) select g, repeat('a', 100) from generate_series(10000, ${10000 + rows - 1}) g`;
        await eventually(() => streamedSoFar() > 0, 10_000, 'the open transaction is streamed');
        await tx`rollback to savepoint sp`;
        await tx`insert into keyed (id, v) values (99, 'after')`;
      });
      await eventually(() => live.messages.some((m) => m.data[0] === 0x63), 10_000, 'the first stream commits');
      const before = streamedSoFar();
      await other
        .begin(async (tx) => {
          await tx`insert into keyed (id, v) select g, repeat('r', 100) from generate_series(20000, ${20000 + rows - 1}) g`;
          await eventually(() => streamedSoFar() > before, 10_000, 'the second open transaction is streamed');
          throw new Error('roll back');
        })
        .catch(() => {});
      await flushWal();
      await eventually(() => live.messages.filter((m) => m.data[0] === 0x41).length >= 2, 10_000, 'two stream aborts');
    } finally {
      await other.end();
      await live.close();
    }
    const messages = decodeAll(live.messages);
    const tags = new Set(messages.map((m) => m.tag));
    expect(tags).toContain('stream_start');
    expect(tags).toContain('stream_stop');
    expect(tags).toContain('stream_commit');
    const aborts = messages.filter((m) => m.tag === 'stream_abort');
    expect(aborts.some((a) => a.tag === 'stream_abort' && a.subxid !== a.xid)).toBe(true);
    expect(aborts.some((a) => a.tag === 'stream_abort' && a.subxid === a.xid)).toBe(true);
    const inserts = messages.filter((m) => m.tag === 'insert');
    // Every row of the committed transaction came streamed (with its xid): the 3,000 and the one after the rollback.
    const committedRows = inserts.filter((m) => m.tag === 'insert' && Number(m.new.id) < 10_000);
    expect(committedRows).toHaveLength(rows + 1);
    expect(inserts.filter((m) => m.tag === 'insert' && m.xid === undefined)).toEqual([]);
    const starts = messages.filter((m) => m.tag === 'stream_start');
    expect(starts[0]?.tag === 'stream_start' && starts[0].firstSegment).toBe(true);
    // Assembled, only what committed remains: the rows before the savepoint and the one after it.
    const assembler = new TransactionAssembler();
    const committed = messages.map((m) => assembler.push(m)).filter((t) => t !== null);
    expect(committed).toHaveLength(1);
    expect(committed[0]?.events).toHaveLength(0); // keyed is not a domain table
    expect(assembler.idle).toBe(true);
  });

  it('decodes protocol 1 (no streaming, no xid fields)', async () => {
    await capture();
    await sql`insert into keyed (id, v) values (5, 'e')`;
    const messages = decodeAll(await capture({ protocol: 1, streaming: false, messages: false }), new PgoutputDecoder());
    expect(messages.map((m) => m.tag)).toEqual(['begin', 'relation', 'insert', 'commit']);
    const insert = messages[2];
    expect(insert?.tag === 'insert' && insert.xid).toBeUndefined();
    expect(insert?.tag === 'insert' && insert.new).toEqual({ id: 5, v: 'e', big: null });
  });

  it('replaces a cached relation when its schema changes', async () => {
    await sql`alter table keyed add column extra int4 default 7`;
    await sql`insert into keyed (id, v) values (6, 'f')`;
    const messages = decodeAll(await capture(), decoder);
    const insert = messages.find((m) => m.tag === 'insert');
    expect(insert?.tag === 'insert' && insert.new).toEqual({ id: 6, v: 'f', big: null, extra: 7 });
    expect(decoder.relation(insert?.tag === 'insert' ? insert.relation.oid : 0)?.columns.map((c) => c.name)).toContain('extra');
  });

  it('names the WAL position in a decode error and stays usable', async () => {
    await sql`insert into keyed (id, v) values (7, 'g')`;
    const captured = await capture();
    const fresh = new PgoutputDecoder();
    const insert = captured.find((m) => m.data[0] === 0x49)!;
    // An Insert for a relation this decoder never saw.
    expect(() => fresh.decode(insert.data, parseLsn(insert.lsn))).toThrow(PgoutputDecodeError);
    try {
      fresh.decode(insert.data, parseLsn(insert.lsn));
    } catch (err) {
      expect((err as PgoutputDecodeError).message).toContain(`WAL ${insert.lsn}`);
      expect((err as PgoutputDecodeError).context.messageType).toBe('I');
    }
    expect(decodeAll(captured, fresh).map((m) => m.tag)).toEqual(['begin', 'relation', 'insert', 'commit']);
  });
});
