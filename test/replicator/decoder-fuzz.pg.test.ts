import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgoutputDecodeError } from '../../replicator/errors.ts';
import { PgoutputDecoder } from '../../replicator/pgoutput/decoder.ts';
import { capturePgoutput, type CapturedMessage } from '../support/capture.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let db: TestDatabase;
let corpus: CapturedMessage[];

/** xorshift32: the same mutations on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

beforeAll(async () => {
  db = await createTestDatabase('fuzz');
  const sql = postgres(db.url, { max: 1, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  try {
    await sql`create publication fuzz_pub for table accounts, actors, resources, policies`;
    await sql`select pg_create_logical_replication_slot('fuzz_slot', 'pgoutput')`;
    const [a] = await sql<{ id: string }[]>`insert into accounts (name, slug) values ('F', 'f') returning id`;
    await sql`insert into actors (account_id, name, type) select ${a!.id}, 'n' || g, 'account_user' from generate_series(1, 20) g`;
    await sql`insert into resources (account_id, type, name, address, filters) values (${a!.id}, 'dns', 'r', '*.example.com', '[{"protocol":"tcp","ports":["80","1000-2000"]}]')`;
    await sql`update actors set disabled_at = now() where name = 'n1'`;
    await sql`delete from actors where name = 'n2'`;
    await sql`truncate policies`;
    await sql`select pg_logical_emit_message(true, 'p', 'content')`;
    corpus = await capturePgoutput(sql, 'fuzz_slot', 'fuzz_pub', { protocol: 2 });
  } finally {
    await sql.end();
  }
});

afterAll(async () => {
  await db.drop();
});

describe('pgoutput decoder fuzzing', () => {
  it('answers every mutated message with a message or a PgoutputDecodeError, and keeps decoding', () => {
    const tags = new Set(corpus.map((m) => String.fromCharCode(m.data[0]!)));
    expect([...tags].sort()).toEqual(['B', 'C', 'D', 'I', 'M', 'R', 'T', 'U']);
    const random = rng(0x5eed);
    const decoder = new PgoutputDecoder();
    const prime = () => {
      // A mutated message may have been a Stream Start: a Stream Stop ends that state.
      decoder.decode(Buffer.from('E'));
      for (const m of corpus) if (m.data[0] === 0x52) decoder.decode(m.data);
    };
    prime();
    let errors = 0;
    let decoded = 0;
    for (let i = 0; i < 30_000; i++) {
      const original = corpus[Math.floor(random() * corpus.length)]!.data;
      let bytes = Buffer.from(original);
      const mutation = Math.floor(random() * 5);
      if (mutation === 0) {
        for (let k = 0; k < 1 + Math.floor(random() * 4); k++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      } else if (mutation === 1) bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
      else if (mutation === 2) bytes = Buffer.concat([bytes, Buffer.from(Array.from({ length: 1 + Math.floor(random() * 8) }, () => Math.floor(random() * 256)))]);
      else if (mutation === 3) bytes[0] = Math.floor(random() * 256);
      else bytes.writeUInt32BE(Math.floor(random() * 0x1_0000_0000), 1 + Math.floor(random() * Math.max(1, bytes.length - 5)));
      try {
        decoder.decode(bytes, BigInt(i));
        decoded++;
      } catch (err) {
        if (!(err instanceof PgoutputDecodeError)) throw new Error(`untyped error on mutation ${mutation} of ${original.toString('hex')}: ${String(err)}`);
        expect(err.message).toMatch(/WAL 0\/[0-9A-F]+/);
        errors++;
      }
      // A mutated Relation message may have replaced a relation: restore them, as the next
      // session would, and check that originals still decode.
      if (i % 100 === 99) {
        prime();
        for (const m of corpus) decoder.decode(m.data);
      }
    }
    expect(errors).toBeGreaterThan(1000);
    expect(decoded).toBeGreaterThan(1000);
  });
});
