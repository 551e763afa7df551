import postgres, { type Sql } from 'postgres';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChangeLogWriter, type LogEntry } from '../../replicator/log/change-log-writer.ts';
import { copyIn } from '../../replicator/log/copy-in.ts';
import { toDelivery } from '../../replicator/deliver/delivery.ts';
import { createLogger } from '../../replicator/logger.ts';
import { Metrics } from '../../replicator/metrics.ts';
import { withNoDelay } from '../../replicator/pg-socket.ts';
import { formatLsn } from '../../src/lsn.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { keyOf } from '../support/positions.ts';

let db: TestDatabase;
const clients: Sql[] = [];
beforeAll(async () => {
  db = await createTestDatabase('changelog');
});
beforeEach(async () => {
  await db.sql`truncate change_logs`;
});
afterAll(async () => {
  for (const c of clients) await c.end({ timeout: 1 });
  await db.drop();
});

function client(): Sql {
  const sql = postgres(db.url, withNoDelay({ max: 1, onnotice: () => {} }));
  clients.push(sql);
  return sql;
}

const ACCOUNT = '7d0c5a4e-8a59-4f7e-9a53-2f8f0f7f8b11';
const ticket = { endLsn: 0n, changes: 0, receivedAt: 0, pending: 0 };

function delivery(lsn: bigint, seq: number, name = `actor ${seq}`): LogEntry {
  const data = { id: `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`, account_id: ACCOUNT, name };
  const d = toDelivery({
    accountId: ACCOUNT,
    change: { lsn: formatLsn(lsn), seq, xid: 700, table: 'actors', op: 'insert', old: null, data, committed_at: '2026-11-22T20:00:00.000000Z' },
  });
  return { ...d, ticket };
}

const COPY = 'copy change_logs (account_id, lsn, seq, xid, table_name, op, old_data, data, vsn) from stdin';
const row = (seq: number, json = '{}') => `${ACCOUNT}\t0/10\t${seq}\t1\tactors\tinsert\t\\N\t${json}\t1\n`;

describe('copyIn', () => {
  it('rejects (does not hang) when the server refuses the data after CopyDone, and the connection stays usable', async () => {
    const sql = client();
    await copyIn(sql, COPY, row(0) + row(1));
    const duplicate = copyIn(sql, COPY, row(2) + row(1));
    await expect(duplicate).rejects.toMatchObject({ code: '23505' });
    await expect(copyIn(sql, COPY, row(3, '{"not json'))).rejects.toMatchObject({ code: '22P02' });
    await copyIn(sql, COPY, row(4));
    const rows = await sql<{ seq: number }[]>`select seq from change_logs order by seq`;
    expect(rows.map((r) => r.seq)).toEqual([0, 1, 4]);
  });
});

describe('ChangeLogWriter', () => {
  it('logs each position once when batches repeat logged ones (replays), on several lanes, and reports every batch', async () => {
    const logged: LogEntry[] = [];
    const writer = new ChangeLogWriter(
      client,
      { batchSize: 7, lingerMs: 2, lanes: 3, retryBaseMs: 5, retryMaxMs: 20 },
      (b) => logged.push(...b),
      createLogger('silent'),
      new Metrics(),
    );
    const first = Array.from({ length: 40 }, (_, i) => delivery(0x1000n + BigInt(Math.floor(i / 10)) * 0x100n, i % 10));
    for (const d of first) writer.enqueue(d);
    await writer.idle();
    // A replay after a reconnect: the last 25 again (one with different content, which must not win), then 30 new ones.
    const replay = first.slice(15).map((d) => delivery(d.position.lsn, d.position.seq, d.position.seq === 3 ? 'changed' : undefined));
    const fresh = Array.from({ length: 30 }, (_, i) => delivery(0x2000n + BigInt(Math.floor(i / 10)) * 0x100n, i % 10));
    for (const d of [...replay, ...fresh]) writer.enqueue(d);
    await writer.idle();
    writer.stop();
    expect(logged).toHaveLength(40 + 25 + 30);
    const rows = await db.sql<{ lsn: string; seq: number; name: string }[]>`select lsn, seq, data->>'name' as name from change_logs`;
    expect(rows).toHaveLength(70);
    expect(new Set(rows.map(keyOf))).toEqual(new Set([...first, ...fresh].map((d) => keyOf({ lsn: d.lsn, seq: d.position.seq }))));
    // Every account with a logged row has a delivery cursor (a restart finds it when it is behind).
    expect(await db.sql`select account_id::text from delivery_cursors`).toEqual([{ account_id: ACCOUNT }]);
    expect(rows.filter((r) => r.name === 'changed')).toEqual([]);
  });

  it('retries a batch the server refuses for a passing reason and never drops it', async () => {
    const logged: LogEntry[] = [];
    const metrics = new Metrics();
    // Statements of the writer give up after 50 ms while another session holds the table locked.
    const impatient = () => {
      const sql = postgres(db.url, withNoDelay({ max: 1, onnotice: () => {}, connection: { lock_timeout: 50 } }));
      clients.push(sql);
      return sql;
    };
    const writer = new ChangeLogWriter(
      impatient,
      { batchSize: 5, lingerMs: 1, lanes: 1, retryBaseMs: 20, retryMaxMs: 50 },
      (b) => logged.push(...b),
      createLogger('silent'),
      metrics,
    );
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holder = db.sql.begin(async (tx) => {
      await tx`lock table change_logs in access exclusive mode`;
      locked();
      await new Promise((r) => setTimeout(r, 400));
    });
    await isLocked;
    for (let i = 0; i < 12; i++) writer.enqueue(delivery(0x3000n, i));
    await holder;
    await writer.idle();
    writer.stop();
    expect(logged).toHaveLength(12);
    const [count] = await db.sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
    expect(count!.n).toBe(12);
    expect((await metrics.retries.get()).values.some((v) => v.labels.target === 'change_logs' && v.labels.reason === '55P03' && v.value > 0)).toBe(true);
  });
});
