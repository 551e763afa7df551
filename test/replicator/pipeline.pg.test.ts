import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { parseLsn } from '../../src/lsn.ts';
import { eventually } from '../support/replicator-process.ts';
import { insertAccount, insertActor, Pipeline } from '../support/pipeline.ts';
import { firstDeliveries, isSortedByPosition, keyOf } from '../support/positions.ts';

// Backslashes, quotes, control characters and non-ASCII survive JSON, HTTP and COPY into change_logs.
const ODD_NAME = 'an\\ne "q"\n\t\\N é';

let pipeline: Pipeline | undefined;
afterEach(async () => {
  await pipeline?.close();
  pipeline = undefined;
});

async function setup(prefix = 'pipe'): Promise<Pipeline> {
  pipeline = await Pipeline.create(prefix);
  return pipeline;
}

describe('replicator pipeline (real Postgres, replicator process, recording sink)', () => {
  it('delivers fat, typed changes per account with (commit LSN, seq) positions and logs them', async () => {
    const p = await setup();
    await p.replicator();
    const a = await insertAccount(p.sql, 'alpha');
    const b = await insertAccount(p.sql, 'beta');
    const actor = await p.sql.begin(async (tx) => {
      const id = await insertActor(tx, a, 'ann');
      await tx`update actors set name = ${ODD_NAME} where id = ${id}`;
      await tx`insert into actor_groups (account_id, name) values (${b}, 'eng')`;
      return id;
    });
    await p.sql`update actors set deleted_at = now() where id = ${actor}`;
    await p.sql`update actors set deleted_at = null where id = ${actor}`;
    await p.sql`delete from actors where id = ${actor}`;

    const changes = await eventually(() => (p.sink.changes.length >= 8 ? p.sink.changes : undefined), 20_000, '8 changes');
    const forA = changes.filter((c) => c.accountId === a);
    const forB = changes.filter((c) => c.accountId === b);
    expect(forA.map((c) => `${c.table}:${c.op}`)).toEqual([
      'accounts:insert',
      'actors:insert',
      'actors:update',
      'actors:delete', // soft delete
      'actors:insert', // restored
      'actors:delete',
    ]);
    expect(forB.map((c) => `${c.table}:${c.op}`)).toEqual(['accounts:insert', 'actor_groups:insert']);
    // One transaction: one commit LSN, consecutive seqs across accounts.
    const txn = changes.filter((c) => c.lsn === forA[1]!.lsn);
    expect(txn.map((c) => c.seq).sort()).toEqual([0, 1, 2]);
    expect(new Set(txn.map((c) => c.xid)).size).toBe(1);
    const update = forA[2]!;
    expect(update.old).toMatchObject({ id: actor, name: 'ann', account_id: a, deleted_at: null });
    expect(update.data).toMatchObject({ id: actor, name: ODD_NAME, type: 'account_user' });
    expect(update.committed_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    expect(forA[3]!.data).toBeNull();
    expect(forA[3]!.old).toMatchObject({ id: actor, deleted_at: null });
    expect(forA[4]!.old).toBeNull();
    expect(forA[5]!.old).toMatchObject({ id: actor, name: ODD_NAME });
    expect(isSortedByPosition(forA)).toBe(true);

    const logged = await eventually(
      async () => {
        const rows = await p.sql<{ account_id: string; lsn: string; seq: number; table_name: string; op: string; old_data: unknown; data: unknown; xid: string; vsn: number }[]>`
        select account_id::text, lsn, seq, xid::text, table_name, op, old_data, data, vsn from change_logs`;
        return rows.length >= 8 ? rows : undefined;
      },
      10_000,
      'change_logs rows',
    );
    expect(logged).toHaveLength(8);
    for (const c of changes) {
      const row = logged.find((r) => r.lsn === c.lsn && r.seq === c.seq)!;
      expect(row).toMatchObject({ account_id: c.accountId, table_name: c.table, op: c.op, old_data: c.old, data: c.data, xid: String(c.xid), vsn: 1 });
    }
  });

  it('moves a row whose account_id changes: the old account gets a delete, the new one an insert', async () => {
    const p = await setup();
    await p.replicator();
    const a = await insertAccount(p.sql);
    const b = await insertAccount(p.sql);
    const actor = await insertActor(p.sql, a, 'mover');
    await p.sql`update actors set account_id = ${b}, name = 'moved' where id = ${actor}`;
    // A later row in each account: once both arrived, everything before them has (per-account order).
    await p.sql.begin(async (tx) => [await insertActor(tx, a, 'marker'), await insertActor(tx, b, 'marker')]);
    await eventually(() => p.sink.changes.filter((c) => c.data?.name === 'marker').length === 2, 20_000, 'both markers');
    const actors = (account: string) => p.sink.changes.filter((c) => c.accountId === account && c.table === 'actors' && c.data?.name !== 'marker');
    expect(actors(a).map((c) => c.op)).toEqual(['insert', 'delete']);
    expect(actors(b).map((c) => c.op)).toEqual(['insert']);
    const moved = [actors(a)[1]!, actors(b)[0]!];
    expect(moved.map((c) => c.seq)).toEqual([0, 1]);
    expect(moved[0]!.old).toMatchObject({ id: actor, account_id: a, name: 'mover' });
    expect(moved[1]!.data).toMatchObject({ id: actor, account_id: b, name: 'moved' });
    expect(moved[0]!.lsn).toBe(moved[1]!.lsn);
  });

  it('emits interleaved transactions in commit order, not in the order their rows were written', async () => {
    const p = await setup();
    await p.replicator();
    const a = await insertAccount(p.sql);
    const first = postgres(p.db.url, { max: 1 });
    const second = postgres(p.db.url, { max: 1 });
    try {
      const [t1, t2] = await Promise.all([first.reserve(), second.reserve()]);
      await t1!`begin`;
      await t2!`begin`;
      await t1!`insert into actors (account_id, name, type) values (${a}, 't1-a', 'account_user')`;
      await t2!`insert into actors (account_id, name, type) values (${a}, 't2-a', 'account_user')`;
      await t1!`insert into actors (account_id, name, type) values (${a}, 't1-b', 'account_user')`;
      await t2!`insert into actors (account_id, name, type) values (${a}, 't2-b', 'account_user')`;
      await t2!`commit`;
      await t1!`commit`;
      t1!.release();
      t2!.release();
    } finally {
      await first.end();
      await second.end();
    }
    const actors = await eventually(() => {
      const rows = p.sink.changes.filter((c) => c.table === 'actors');
      return rows.length >= 4 ? rows : undefined;
    });
    expect(actors.map((c) => c.data?.name)).toEqual(['t2-a', 't2-b', 't1-a', 't1-b']);
    expect(actors.map((c) => c.seq)).toEqual([0, 1, 0, 1]);
    expect(parseLsn(actors[0]!.lsn)).toBeLessThan(parseLsn(actors[2]!.lsn));
    expect(isSortedByPosition(actors)).toBe(true);
  });

  it('delivers a transaction bigger than logical_decoding_work_mem (streamed, protocol 2) whole and once', async () => {
    const p = await setup();
    // change_logs batches small enough not to be streamed themselves (the test cluster decodes with
    // logical_decoding_work_mem = 64kB): the slot's streamed transactions are then the test's only.
    const r = await p.replicator({ CHANGE_LOG_BATCH_SIZE: '20' });
    const a = await insertAccount(p.sql);
    const rows = 4000;
    await p.sql`insert into actors (account_id, name, type) select ${a}, 'bulk-' || g || repeat('x', 100), 'account_user' from generate_series(1, ${rows}) g`;
    const actors = await eventually(
      () => {
        const got = p.sink.changes.filter((c) => c.table === 'actors');
        return got.length >= rows ? got : undefined;
      },
      30_000,
      'all bulk rows',
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(p.sink.changes.filter((c) => c.table === 'actors')).toHaveLength(rows);
    expect(new Set(actors.map((c) => c.lsn)).size).toBe(1);
    expect(actors.map((c) => c.seq)).toEqual(Array.from({ length: rows }, (_, i) => i));
    // Once the slot has decoded everything written so far (change_logs included), the server has
    // streamed exactly one transaction, and the replicator counted exactly the rows this test wrote.
    const end = await p.currentWal();
    await eventually(async () => (await p.confirmedFlush()) >= end, 30_000, 'the slot to pass every write');
    const [stats] = await p.sql<{ streamed: number }[]>`select stream_txns::int as streamed from pg_stat_replication_slots where slot_name = ${p.slot}`;
    expect(stats?.streamed).toBe(1);
    expect((await r.get('/metrics')).text).toMatch(new RegExp(`^edgeplane_replicator_changes_total ${rows + 1}$`, 'm'));
  });

  it('retries 503s and timeouts until delivered, in order, and counts the retries', async () => {
    const p = await setup();
    p.sink.behaviour = ({ count }) => (count % 4 === 1 ? 503 : count % 7 === 3 ? 'hang' : 200);
    const r = await p.replicator({ FORWARD_TIMEOUT_MS: '300', FORWARD_BATCH_SIZE: '5' });
    const accounts = [await insertAccount(p.sql), await insertAccount(p.sql)];
    for (let i = 0; i < 40; i++) await insertActor(p.sql, accounts[i % 2]!, `n${i}`);
    await eventually(() => firstDeliveries(p.sink.changes).length >= 42, 30_000, 'all changes delivered');
    for (const account of accounts) {
      const mine = firstDeliveries(p.sink.changes.filter((c) => c.accountId === account));
      expect(mine).toHaveLength(21);
      expect(isSortedByPosition(mine)).toBe(true);
    }
    // Each refusal and each hang was retried once, and counted as such.
    const refused503 = p.sink.refused.filter((x) => x.status === 503).length;
    const hung = p.sink.refused.filter((x) => x.status === 'hang').length;
    expect(refused503).toBeGreaterThan(0);
    expect(hung).toBeGreaterThan(0);
    const metrics = (await r.get('/metrics')).text;
    expect(metrics).toMatch(new RegExp(`^edgeplane_replicator_retries_total\\{target="worker",reason="503"\\} ${refused503}$`, 'm'));
    expect(metrics).toMatch(new RegExp(`^edgeplane_replicator_retries_total\\{target="worker",reason="timeout"\\} ${hung}$`, 'm'));
  });

  it('acknowledges a change once it is in change_logs, before its account took it, and delivers it once the account answers', async () => {
    const p = await setup();
    let blocked: string | undefined;
    p.sink.behaviour = ({ accountId }) => (accountId === blocked ? 503 : 200);
    await p.replicator({ RETRY_MAX_MS: '200' });
    const a = await insertAccount(p.sql);
    const b = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 2);
    blocked = b;
    await insertActor(p.sql, b, 'held');
    for (let i = 0; i < 5; i++) await insertActor(p.sql, a, `later-${i}`);
    await eventually(() => p.sink.changes.filter((c) => c.accountId === a && c.table === 'actors').length >= 5);
    const held = p.sink.refused.find((x) => x.accountId === b)!.changes[0]!;
    // The log is the outbox: the slot is confirmed past the held change and a's later ones, and the held change is logged.
    // (Delivery from memory does not wait for change_logs, so the log is looked at once the ack passed it.)
    const last = p.sink.changes.filter((c) => c.accountId === a).at(-1)!;
    await eventually(async () => (await p.confirmedFlush()) > parseLsn(last.lsn), 10_000, 'the ack passes every logged change while b refuses');
    const [logged] = await p.sql<{ n: number }[]>`select count(*)::int as n from change_logs where lsn = ${held.lsn} and seq = ${held.seq}`;
    expect(logged!.n).toBe(1);
    expect(p.sink.changes.some((c) => c.accountId === b && keyOf(c) === keyOf(held))).toBe(false);
    blocked = undefined;
    await eventually(() => p.sink.changes.some((c) => c.accountId === b && keyOf(c) === keyOf(held)), 10_000, 'b gets the held change once it answers');
  });

  it('follows the server WAL end while its tables are idle and others write', async () => {
    const p = await setup();
    await p.replicator();
    await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    // flows and change_logs are not published.
    await p.sql`insert into flows (account_id, client_id, gateway_id, resource_id, policy_id, token_id)
      select gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid()
      from generate_series(1, 2000)`;
    const target = await p.currentWal();
    await eventually(async () => (await p.confirmedFlush()) >= target, 30_000, 'confirmed_flush_lsn reaches the WAL written to other tables');
  });

  it('delivers a TRUNCATE to every account as a truncate change', async () => {
    const p = await setup();
    await p.replicator();
    const a = await insertAccount(p.sql);
    const b = await insertAccount(p.sql);
    await insertActor(p.sql, a);
    await eventually(() => p.sink.changes.length >= 3);
    await p.sql`truncate actor_group_memberships`;
    const truncates = await eventually(() => {
      const got = p.sink.changes.filter((c) => c.op === 'truncate');
      return got.length >= 2 ? got : undefined;
    });
    expect(truncates.map((c) => c.accountId).sort()).toEqual([a, b].sort());
    expect(truncates.every((c) => c.table === 'actor_group_memberships' && c.old === null && c.data === null)).toBe(true);
    expect(new Set(truncates.map(keyOf)).size).toBe(2);
  });
});
