import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { afterEach, describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { startEmbeddedPostgres } from '../../dev/embedded-postgres.ts';
import { migrate } from '../../migrations/migrate.ts';
import { parseLsn } from '../../src/lsn.ts';
import { copyDatabase } from '../support/copy-database.ts';
import { withDatabase } from '../support/database.ts';
import { insertAccount, Pipeline, SECRET, insertActors } from '../support/pipeline.ts';
import { isSortedByPosition } from '../support/positions.ts';
import { RecordingSink } from '../support/recording-sink.ts';
import { eventually, type LogLine, ReplicatorProcess } from '../support/replicator-process.ts';

// docs/architecture.md#12-epochs on the real embedded Postgres: a stream that cannot continue the
// previous one starts a new epoch, and every account re-hydrates in it before it gets a change of it.

let pipeline: Pipeline | undefined;
const cleanups: Array<() => Promise<void>> = [];
const processes: ReplicatorProcess[] = [];
afterEach(async () => {
  for (const r of processes.splice(0)) await r.stop();
  for (const c of cleanups.splice(0).reverse()) await c();
  await pipeline?.close();
  pipeline = undefined;
});

function dumpLogsOnFailure(): void {
  onTestFailed(() => {
    for (const r of [...processes, ...(pipeline?.processes ?? [])]) {
      console.error(
        `--- replicator ${r.pid} ---\n${r.logs
          .slice(-40)
          .map((l) => JSON.stringify(l))
          .join('\n')}\n${r.stderr.slice(-10).join('\n')}`,
      );
    }
  });
}

async function setup(prefix: string): Promise<Pipeline> {
  pipeline = await Pipeline.create(prefix);
  dumpLogsOnFailure();
  return pipeline;
}

/** Drops the slot once no walsender holds it (a SIGKILLed replicator's lingers a moment). */
async function dropSlot(sql: Sql, slot: string, terminate = false): Promise<void> {
  await eventually(
    async () => {
      if (terminate) await sql`select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = ${slot} and active_pid is not null`;
      await sql`select pg_drop_replication_slot(${slot})`;
      return true;
    },
    20_000,
    `slot ${slot} dropped`,
  );
}

/**
 * What each account got in `epoch`: its accepted requests from the first one of that epoch on must
 * start with a re-hydration in it and hold nothing of another epoch; returns the changes' names.
 */
function inEpoch(sink: RecordingSink, account: string, epoch: string): string[] {
  const accepted = sink.requestsOf(account).filter((x) => x.status === 200);
  const from = accepted.findIndex((x) => x.epoch === epoch);
  expect(from, `account ${account} got nothing of epoch ${epoch}`).toBeGreaterThanOrEqual(0);
  const since = accepted.slice(from);
  expect(since[0]).toMatchObject({ route: 'rehydrate', epoch });
  expect(since.filter((x) => x.epoch !== epoch)).toEqual([]);
  const changes = since.flatMap((x) => x.changes);
  expect(isSortedByPosition(changes)).toBe(true);
  return changes.map((c) => String(c.data?.name));
}

/** The epoch /healthz shows (once delivery runs in it: `started`, the new epoch's log line, says which). */
async function epochOf(r: ReplicatorProcess, started?: LogLine): Promise<{ id: string; number: number }> {
  const id = await eventually(
    async () => {
      const epoch = (await r.health()).epoch ?? undefined;
      return started === undefined || epoch === started.epoch ? epoch : undefined;
    },
    10_000,
    `epoch ${String(started?.epoch ?? 'any')} in /healthz`,
  );
  return { id, number: await r.metric('edgeplane_replicator_epoch') };
}

/** The log line of a new epoch after the first one. */
const newEpochLog = (r: ReplicatorProcess) =>
  r.waitForLog((l) => l.msg === 'new replication epoch: every account re-hydrates, then gets the new stream' && l.reason !== 'the first stream of this slot', 30_000);

describe('replication epochs (real replicator, real Postgres)', () => {
  it('a slot dropped with changes pending (replicator SIGKILLed): a new epoch, every account re-hydrates in it before any of its changes, which carry it', {
    timeout: 120_000,
  }, async () => {
    const p = await setup('dropslot');
    let r = await p.replicator();
    const a = await insertAccount(p.sql, 'alpha');
    const b = await insertAccount(p.sql, 'bravo');
    await insertActors(p.sql, a, 'e1', 5);
    await insertActors(p.sql, b, 'e1', 5);
    await eventually(() => p.sink.changesOf(a).length === 6 && p.sink.changesOf(b).length === 6, 20_000, 'the first epoch delivered');
    const first = await epochOf(r);
    expect(first.number).toBe(1);
    expect(p.sink.changes.every((c) => c.epoch === first.id)).toBe(true);

    // Pending: logged, refused by the sink; then the replicator dies and the slot goes.
    p.sink.behaviour = () => 503;
    await insertActors(p.sql, a, 'pending', 5);
    await insertActors(p.sql, b, 'pending', 5);
    await eventually(async () => (await p.sql`select 1 from change_logs`).length === 22, 10_000, 'pending changes logged');
    await eventually(() => p.sink.requestsOf(b).some((x) => x.status === 503), 10_000, 'refused');
    r.kill('SIGKILL');
    await r.exited;
    await dropSlot(p.sql, p.slot);
    // Written while there is no slot: no stream has them, only a re-hydration does.
    const c = await insertAccount(p.sql, 'charlie');
    await insertActors(p.sql, a, 'gap', 5);

    p.sink.behaviour = () => 200;
    r = await p.replicator();
    const created = await newEpochLog(r);
    expect(created.reason).toBe('the replication slot was created anew');
    const second = await epochOf(r, created);
    expect(second.id).not.toBe(first.id);
    expect(second.number).toBe(2);
    await eventually(() => [a, b, c].every((x) => p.sink.rehydrates.some((h) => h.accountId === x && h.epoch === second.id)), 20_000, 'every account re-hydrated');

    const expected = new Map<string, string[]>();
    for (const x of [a, b, c]) expected.set(x, await insertActors(p.sql, x, 'e2', 5));
    await eventually(() => [a, b, c].every((x) => p.sink.changesOf(x).filter((ch) => ch.epoch === second.id).length >= 5), 20_000, 'the new epoch delivered');
    for (const x of [a, b, c]) expect(inEpoch(p.sink, x, second.id)).toEqual(expected.get(x));
    expect(p.sink.rehydrates.filter((h) => h.epoch === second.id)).toHaveLength(3);
    expect(await r.metric('edgeplane_replicator_rehydrations_total')).toBe(3);
    // The cursors are past the re-hydration.
    const marked = await p.sql`select 1 from delivery_cursors where needs_rehydrate`;
    expect(marked).toHaveLength(0);
  });

  it('a slot dropped under a running replicator, with one account refusing: the new session starts a new epoch; nothing of the old one is sent after it', {
    timeout: 120_000,
  }, async () => {
    const p = await setup('dropslot_live');
    const r = await p.replicator();
    const a = await insertAccount(p.sql, 'alpha');
    const b = await insertAccount(p.sql, 'bravo');
    await eventually(() => p.sink.changesOf(a).length === 1 && p.sink.changesOf(b).length === 1, 20_000, 'the first epoch delivered');
    const first = await epochOf(r);
    let refuseB = true;
    p.sink.behaviour = ({ accountId }) => (accountId === b && refuseB ? 503 : 200);
    await insertActors(p.sql, b, 'pending', 50);
    await insertActors(p.sql, a, 'e1', 5);
    await eventually(() => p.sink.changesOf(a).length === 6, 20_000, 'alpha delivered');
    await eventually(() => p.sink.requestsOf(b).filter((x) => x.status === 503).length >= 3, 10_000, 'bravo refused');

    // Alpha writes on through the switch: what the new slot streams reaches it after its re-hydration.
    const background: string[] = [];
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        background.push(...(await insertActors(p.sql, a, `bg${i}`, 1)));
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    // Stops with the test, failed or not (its rejection after the database goes is of no interest).
    writer.catch(() => {});
    onTestFinished(() => {
      writing = false;
    });
    await dropSlot(p.sql, p.slot, true);
    const started = await newEpochLog(r);
    const second = await epochOf(r, started);
    expect(second.id).not.toBe(first.id);
    expect(second.number).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    writing = false;
    await writer;
    refuseB = false;
    const expected = new Map<string, string[]>();
    for (const x of [a, b]) expected.set(x, await insertActors(p.sql, x, 'e2', 5));
    await eventually(
      () => [a, b].every((x) => p.sink.changesOf(x).filter((ch) => ch.epoch === second.id && String(ch.data?.name).startsWith('e2')).length >= 5),
      30_000,
      'the new epoch delivered',
    );
    expect(inEpoch(p.sink, b, second.id)).toEqual(expected.get(b));
    // Alpha: the background changes the new slot streamed (those after its start), then the rest.
    const got = inEpoch(p.sink, a, second.id);
    const streamed = got.length - 5;
    expect(streamed).toBeGreaterThan(0);
    expect(got).toEqual([...background.slice(background.length - streamed), ...expected.get(a)!]);
    const firstStreamed = p.sink.changesOf(a).find((ch) => ch.epoch === second.id)!;
    expect(parseLsn(firstStreamed.lsn)).toBeGreaterThan(parseLsn(String(started.start)));
    // Bravo's pending changes of the first epoch were never accepted: its re-hydration covers them.
    expect(p.sink.changesOf(b).filter((ch) => String(ch.data?.name).startsWith('pending'))).toEqual([]);
    expect(r.logs.filter((l) => l.msg === 'streaming')).toHaveLength(2);
  });

  it.each([
    { slot: 'made by the replicator', precreate: false, reason: 'the replication slot was created anew' },
    { slot: 'made beforehand (only the system identifier tells)', precreate: true, reason: /^another cluster \(system identifier \d+ -> \d+\)$/ },
  ])(
    'a database restored into a fresh cluster (lower LSNs, another system identifier), slot $slot: a new epoch, every account re-hydrates, and new changes are delivered',
    { timeout: 180_000 },
    async ({ precreate, reason }) => {
      const p = await setup('restore');
      // The old cluster's positions well past where a fresh one starts.
      for (let i = 0; i < 3; i++) await p.sql`select pg_logical_emit_message(false, 'edgeplane-test', 'x'), pg_switch_wal()`;
      const r = await p.replicator();
      const a = await insertAccount(p.sql, 'alpha');
      const b = await insertAccount(p.sql, 'bravo');
      await insertActors(p.sql, a, 'old', 5);
      await eventually(() => p.sink.changesOf(a).length === 6 && p.sink.changesOf(b).length === 1, 20_000, 'delivered before the restore');
      // Bravo's object is down: it has logged, undelivered changes when the backup is taken.
      p.sink.behaviour = ({ accountId }) => (accountId === b ? 503 : 200);
      await insertActors(p.sql, b, 'old', 5);
      await eventually(async () => (await p.sql`select 1 from change_logs`).length === 12, 10_000, 'logged');
      await eventually(async () => (await p.sql`select 1 from delivery_cursors where account_id = ${a} and lsn is not null`).length === 1, 10_000, 'alpha’s cursor saved');
      const first = await epochOf(r);
      const oldTop = parseLsn((await p.sql<{ lsn: string }[]>`select max(lsn::pg_lsn)::text as lsn from change_logs`)[0]!.lsn);
      r.kill('SIGKILL');
      await r.exited;

      const cluster = await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-restored-${randomBytes(4).toString('hex')}`) });
      cleanups.push(() => cluster.stop());
      const url = withDatabase(cluster.url, 'postgres');
      const copied = await copyDatabase(p.db.url, url);
      expect(copied).toMatchObject({ accounts: 2, actors: 10, change_logs: 12, delivery_cursors: 2, replication_epochs: 1 });
      const sql = postgres(url, { max: 2, onnotice: () => {} });
      cleanups.push(() => sql.end());
      const ids = async (s: Sql) => (await s<{ id: string }[]>`select system_identifier::text as id from pg_control_system()`)[0]!.id;
      expect(await ids(sql)).not.toBe(await ids(p.sql));
      const [{ lsn: freshStart } = { lsn: '' }] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
      expect(parseLsn(freshStart)).toBeLessThan(oldTop);

      if (precreate) await sql`select pg_create_logical_replication_slot(${p.slot}, 'pgoutput')`;
      p.sink.behaviour = () => 200;
      const restored = new ReplicatorProcess(p.env({ DATABASE_URL: url }));
      processes.push(restored);
      await restored.streaming();
      const created = await newEpochLog(restored);
      expect(created).toMatchObject({ reason, dropped_log_rows: 12 });
      const second = await epochOf(restored, created);
      expect(second.id).not.toBe(first.id);
      expect(second.number).toBe(2);
      const [epochRow] = await sql<{ system_identifier: string; epoch: string }[]>`select system_identifier, epoch from replication_epochs where slot_name = ${p.slot}`;
      expect(epochRow).toEqual({ system_identifier: await ids(sql), epoch: second.id });
      await eventually(() => [a, b].every((x) => p.sink.rehydrates.some((h) => h.accountId === x && h.epoch === second.id)), 20_000, 'every account re-hydrated');

      const expected = new Map<string, string[]>();
      for (const x of [a, b]) expected.set(x, await insertActors(sql, x, 'new', 5));
      await eventually(() => [a, b].every((x) => p.sink.changesOf(x).filter((ch) => ch.epoch === second.id).length >= 5), 20_000, 'new changes delivered');
      for (const x of [a, b]) expect(inEpoch(p.sink, x, second.id)).toEqual(expected.get(x));
      // At positions below the old cluster's: delivered all the same, and logged once.
      const fresh = p.sink.changes.filter((ch) => ch.epoch === second.id);
      for (const ch of fresh) expect(parseLsn(ch.lsn)).toBeLessThan(oldTop);
      // (Live delivery does not wait for change_logs: the rows may land a moment later.)
      const count = async () => (await sql<{ n: number }[]>`select count(*)::int as n from change_logs`)[0]!.n;
      await eventually(async () => (await count()) >= 10, 10_000, 'the new changes logged');
      expect(await count()).toBe(10);
    },
  );

  it('an invalidated slot (max_slot_wal_keep_size passed while the replicator was stopped): dropped and recreated in a new epoch; every account re-hydrates', {
    timeout: 180_000,
  }, async () => {
    dumpLogsOnFailure();
    const cluster = await startEmbeddedPostgres({
      dataDir: path.join(tmpdir(), `edgeplane-invalidated-${randomBytes(4).toString('hex')}`),
      settings: { max_slot_wal_keep_size: '1MB' },
    });
    cleanups.push(() => cluster.stop());
    const sink = await new RecordingSink(SECRET).start();
    cleanups.push(() => sink.stop());
    const url = withDatabase(cluster.url, 'postgres');
    const sql = postgres(url, { max: 2, onnotice: () => {} });
    cleanups.push(() => sql.end());
    await migrate(sql);
    const env = { DATABASE_URL: url, EDGE_URL: sink.url, REPLICATOR_SECRET: SECRET, RETRY_BASE_MS: '20', RETRY_MAX_MS: '200' };
    let r = new ReplicatorProcess(env);
    processes.push(r);
    await r.streaming();
    const a = await insertAccount(sql, 'alpha');
    const b = await insertAccount(sql, 'bravo');
    await insertActors(sql, a, 'e1', 5);
    await eventually(() => sink.changesOf(a).length === 6 && sink.changesOf(b).length === 1, 20_000, 'the first epoch delivered');
    const first = await epochOf(r);
    r.kill('SIGKILL');
    await r.exited;

    // Changes, then more WAL than the slot may keep: a checkpoint invalidates it.
    await insertActors(sql, b, 'lost', 5);
    const status = await eventually(
      async () => {
        await sql`select pg_logical_emit_message(false, 'edgeplane-test', 'x'), pg_switch_wal()`;
        await sql`checkpoint`;
        const [row] = await sql<{ wal_status: string }[]>`select wal_status from pg_replication_slots where slot_name = 'edgeplane'`;
        return row?.wal_status === 'lost' ? row.wal_status : undefined;
      },
      60_000,
      'the slot invalidated',
    );
    expect(status).toBe('lost');

    r = new ReplicatorProcess(env);
    processes.push(r);
    await r.streaming();
    const invalidated = await r.waitForLog((l) => String(l.msg).startsWith('the replication slot was invalidated'));
    expect(invalidated.level).toBe('error');
    expect(invalidated.reason).toBe('wal_removed');
    const created = await newEpochLog(r);
    expect(created.reason).toBe('the replication slot was created anew');
    const second = await epochOf(r, created);
    expect(second.id).not.toBe(first.id);
    expect(second.number).toBe(2);
    await eventually(() => [a, b].every((x) => sink.rehydrates.some((h) => h.accountId === x && h.epoch === second.id)), 20_000, 'every account re-hydrated');
    const expected = new Map<string, string[]>();
    for (const x of [a, b]) expected.set(x, await insertActors(sql, x, 'e2', 5));
    await eventually(() => [a, b].every((x) => sink.changesOf(x).filter((ch) => ch.epoch === second.id).length >= 5), 20_000, 'the new epoch delivered');
    for (const x of [a, b]) expect(inEpoch(sink, x, second.id)).toEqual(expected.get(x));
    expect(sink.changesOf(b).filter((ch) => String(ch.data?.name).startsWith('lost'))).toEqual([]);
    const [slot] = await sql<{ wal_status: string }[]>`select wal_status from pg_replication_slots where slot_name = 'edgeplane'`;
    expect(slot?.wal_status).not.toBe('lost');
  });
});
