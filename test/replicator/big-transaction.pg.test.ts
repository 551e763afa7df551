import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { parseLsn } from '../../src/lsn.ts';
import { insertAccount, insertActor, Pipeline } from '../support/pipeline.ts';
import { firstDeliveries, isSortedByPosition } from '../support/positions.ts';
import { eventually, type ReplicatorProcess } from '../support/replicator-process.ts';

let pipeline: Pipeline | undefined;
let spillDir: string | undefined;
afterEach(async () => {
  await pipeline?.close();
  pipeline = undefined;
  if (spillDir) rmSync(spillDir, { recursive: true, force: true });
  spillDir = undefined;
});

async function setup(): Promise<{ p: Pipeline; dir: string }> {
  pipeline = await Pipeline.create('big');
  spillDir = mkdtempSync(path.join(tmpdir(), 'edgeplane-spill-test-'));
  return { p: pipeline, dir: spillDir };
}

function dumpLogsOnFailure(r: ReplicatorProcess): void {
  onTestFailed(() => {
    console.error(
      `--- replicator ${r.pid} ---\n${r.logs
        .slice(-40)
        .map((l) => JSON.stringify(l))
        .join('\n')}\n${r.stderr.slice(-10).join('\n')}`,
    );
  });
}

/** Spill files in the replicator's temporary folder (tsx keeps its cache there too). */
const spillFiles = (dir: string) => readdirSync(dir).filter((name) => name.startsWith('edgeplane-spill-'));

/** The process's peak resident memory (VmHWM), in MB. */
function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]) / 1024;
}

describe('transactions too large to hold in memory (real Postgres, replicator process)', () => {
  it('spills a streamed transaction with savepoints and a TRUNCATE, drops its rolled-back subtransaction, and lets nothing overtake it', async () => {
    const { p, dir } = await setup();
    const r = await p.replicator({ TMPDIR: dir, SPILL_THRESHOLD: '100' });
    dumpLogsOnFailure(r);
    const a = await insertAccount(p.sql);
    const b = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 2);
    // Each rollback comes after a pause, so that the server streamed the rows first (an aborted
    // transaction it has not streamed yet, it drops without a word).
    // Rolled back whole: spilled, then its file goes and nothing of it is delivered.
    await p.sql
      .begin(async (tx) => {
        await tx`insert into actors (account_id, name, type) select ${a}, 'gone-' || g || repeat('x', 200), 'account_user' from generate_series(1, 1000) g`;
        await tx`select pg_sleep(1)`;
        throw new Error('roll back');
      })
      .catch(() => {});
    await p.sql.begin(async (tx) => {
      await tx`insert into actors (account_id, name, type) select ${a}, 'kept-' || g || repeat('x', 200), 'account_user' from generate_series(1, 1000) g`;
      await tx
        .savepoint(async (sp) => {
          await sp`insert into actors (account_id, name, type) select ${a}, 'undone-' || g || repeat('x', 200), 'account_user' from generate_series(1, 500) g`;
          await sp`select pg_sleep(1)`;
          throw new Error('roll back to the savepoint');
        })
        .catch(() => {});
      await tx`truncate actor_group_memberships`;
      await tx`insert into actors (account_id, name, type) select ${b}, 'later-' || g || repeat('x', 200), 'account_user' from generate_series(1, 500) g`;
    });
    // Committed right after it: must come after it.
    await insertActor(p.sql, a, 'after');

    const all = await eventually(() => (firstDeliveries(p.sink.changes).length >= 2 + 1000 + 2 + 500 + 1 ? firstDeliveries(p.sink.changes) : undefined), 60_000, 'every change');
    const big = all.filter((c) => c.xid === all.find((x) => x.data?.name?.toString().startsWith('kept-'))!.xid);
    // Accounts are delivered in parallel: each in order, the transaction's positions all there.
    expect(big.map((c) => c.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 1502 }, (_, i) => i));
    expect(big.some((c) => String(c.data?.name ?? '').startsWith('undone-') || String(c.data?.name ?? '').startsWith('gone-'))).toBe(false);
    expect(
      big
        .filter((c) => c.op === 'truncate')
        .map((c) => c.accountId)
        .sort(),
    ).toEqual([a, b].sort());
    expect(big.filter((c) => c.accountId === b && c.table === 'actors')).toHaveLength(500);
    for (const account of [a, b]) expect(isSortedByPosition(all.filter((c) => c.accountId === account))).toBe(true);
    const after = all.find((c) => c.data?.name === 'after')!;
    expect(parseLsn(after.lsn)).toBeGreaterThan(parseLsn(big[0]!.lsn));
    expect(all.filter((c) => c.accountId === a).at(-1)).toEqual(after);

    // Delivery from memory does not wait for change_logs: the log gets there on its own.
    await eventually(
      async () => {
        const [logged] = await p.sql<{ n: number }[]>`select count(*)::int as n from change_logs where lsn = ${big[0]!.lsn}`;
        return logged!.n === 1502;
      },
      20_000,
      "the transaction's 1,502 changes in change_logs",
    );
    await eventually(async () => (await p.confirmedFlush()) > parseLsn(after.lsn), 20_000, 'the slot confirmed past it and the change after it');
    expect((await r.get('/metrics')).text).toMatch(/edgeplane_replicator_spilled_transactions_total [2-9]/);
    expect(r.logs.some((l) => l.msg === 'routing a spilled transaction in chunks')).toBe(true);
    // The server streamed both rollbacks: the whole transaction's, and the subtransaction's.
    const aborts = r.logs.filter((l) => l.msg.startsWith('streamed transaction rolled back'));
    expect(aborts.some((l) => l.subxid === l.xid)).toBe(true);
    expect(aborts.some((l) => l.subxid !== l.xid)).toBe(true);
    await eventually(() => spillFiles(dir).length === 0, 10_000, 'spill files removed');
  });

  it('stops while it routes a spilled transaction without losing any of it: a SIGKILL leaves a file the next replicator removes, a SIGTERM drains it', async () => {
    const { p, dir } = await setup();
    const rows = 40_000;
    // Small COPYs on one lane: routing takes long enough to be stopped in the middle.
    const env = { TMPDIR: dir, SPILL_THRESHOLD: '500', CHANGE_LOG_BATCH_SIZE: '100', CHANGE_LOG_WRITERS: '1', DRAIN_TIMEOUT_MS: '60000' };
    const first = await p.replicator(env);
    dumpLogsOnFailure(first);
    const a = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    await p.sql`insert into actors (account_id, name, type) select ${a}, 'actor-' || g, 'account_user' from generate_series(1, ${rows}) g`;
    const end = await p.currentWal();
    await first.waitForLog((l) => l.msg === 'routing a spilled transaction in chunks', 60_000);
    first.kill('SIGKILL');
    await first.exited;
    expect(spillFiles(dir)).toHaveLength(1);

    const second = await p.replicator(env);
    dumpLogsOnFailure(second);
    expect(second.logs.some((l) => l.msg === 'removed spill files of replicators that are gone' && l.files === 1)).toBe(true);
    await second.waitForLog((l) => l.msg === 'routing a spilled transaction in chunks', 60_000);
    second.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
    // The drain waited for the transaction's last chunk: it is logged and confirmed, and its file gone.
    expect(second.logs.find((l) => l.msg === 'drained')).toMatchObject({ timedOut: false });
    expect(await p.confirmedFlush()).toBeGreaterThanOrEqual(end);
    expect(spillFiles(dir)).toEqual([]);
    const [logged] = await p.sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
    expect(logged!.n).toBe(rows + 1);

    // What was not delivered yet, the next replicator reads from change_logs.
    dumpLogsOnFailure(await p.replicator(env));
    const delivered = await eventually(
      () => {
        const got = firstDeliveries(p.sink.changes.filter((c) => c.table === 'actors'));
        return got.length >= rows ? got : undefined;
      },
      120_000,
      'every row delivered',
    );
    expect(delivered.map((c) => c.seq)).toEqual(Array.from({ length: rows }, (_, i) => i));
    expect(new Set(delivered.map((c) => c.lsn)).size).toBe(1);
  });

  it('delivers one transaction of 1,000,000 rows completely and in order, logs it once, and stays under 300 MB RSS', { timeout: 900_000 }, async () => {
    const rows = 1_000_000;
    const { p, dir } = await setup();
    // The sink checks each change as it comes instead of keeping a million of them.
    p.sink.record = false;
    let accountDelivered = 0;
    let next = 0;
    let replays = 0;
    const problems: string[] = [];
    let lsn: string | undefined;
    let account: string | undefined;
    p.sink.onAccepted = ({ accountId, changes }) => {
      for (const c of changes) {
        if (c.table === 'accounts') {
          accountDelivered++;
          continue;
        }
        lsn ??= c.lsn;
        if (c.lsn !== lsn || accountId !== account || c.data?.account_id !== account) problems.push(`unexpected change ${c.lsn}:${c.seq} for ${accountId}`);
        else if (c.seq < next) replays++;
        else if (c.seq > next) problems.push(`gap: ${c.seq} after ${next - 1}`);
        else if (c.data?.name !== `actor-${c.seq + 1}`) problems.push(`seq ${c.seq} carries ${String(c.data?.name)}`);
        else next++;
        if (problems.length > 10) problems.length = 10;
      }
    };
    const r = await p.replicator({ TMPDIR: dir, LOG_LEVEL: 'info', FORWARD_BATCH_SIZE: '1000', FORWARD_TIMEOUT_MS: '10000' });
    dumpLogsOnFailure(r);
    account = await insertAccount(p.sql);
    await eventually(() => accountDelivered >= 1);
    const started = Date.now();
    await p.sql`insert into actors (account_id, name, type) select ${account}, 'actor-' || g, 'account_user' from generate_series(1, ${rows}) g`;
    const end = await p.currentWal();
    const committed = Date.now();
    await eventually(() => next >= rows || problems.length > 0, 600_000, 'every row delivered');
    const delivered = Date.now();
    expect(problems).toEqual([]);
    expect(next).toBe(rows);
    await eventually(async () => (await p.confirmedFlush()) >= end, 60_000, 'the slot confirmed past the commit');
    const [logged] = await p.sql<{ n: number; seqs: number; max: number }[]>`
      select count(*)::int as n, count(distinct seq)::int as seqs, max(seq)::int as max from change_logs where lsn = ${lsn!}`;
    expect(logged).toEqual({ n: rows, seqs: rows, max: rows - 1 });
    const [total] = await p.sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
    expect(total!.n).toBe(rows + 1);
    const peak = peakRssMb(r.pid!);
    console.log(
      `1M-row transaction: statement ${((committed - started) / 1000).toFixed(1)} s, delivered ${((delivered - committed) / 1000).toFixed(1)} s after the commit; replays ${replays}; ${r.logs.some((l) => l.msg.startsWith('account falls behind')) ? 'the account fell behind and was fed from change_logs' : 'delivered live'}; replicator peak RSS ${Math.round(peak)} MB`,
    );
    expect(peak).toBeLessThanOrEqual(300);
    expect(spillFiles(dir)).toEqual([]);
  });
});
