import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Sql } from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { type EmbeddedCluster, startEmbeddedPostgres } from '../../dev/embedded-postgres.ts';
import { formatPosition, maxLsn, parseLsn } from '../../src/lsn.ts';
import { insertAccount, Pipeline, insertActors } from '../support/pipeline.ts';
import { firstDeliveries, isSortedByPosition, keyOf, positionOf } from '../support/positions.ts';
import { eventually, type ReplicatorProcess } from '../support/replicator-process.ts';

// docs/architecture.md#10-one-account-never-holds-another, on the real replicator process: one
// account's object fails for a long stretch while two others write 30,000 changes.

// A cluster of this file's own: the slot's retained WAL is measured against the cluster's WAL
// position, which other files' writes (and their pg_switch_wal) would move too.
let cluster: EmbeddedCluster;
beforeAll(async () => {
  cluster = await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-isolation-${randomBytes(4).toString('hex')}`) });
});
afterAll(async () => {
  await cluster?.stop();
});

let pipeline: Pipeline | undefined;
afterEach(async () => {
  await pipeline?.close();
  pipeline = undefined;
});

async function setup(prefix: string): Promise<Pipeline> {
  const p = await Pipeline.create(prefix, cluster.url);
  pipeline = p;
  onTestFailed(() => {
    for (const r of p.processes) {
      console.error(
        `--- replicator ${r.pid} ---\n${r.logs
          .slice(-60)
          .map((l) => JSON.stringify(l))
          .join('\n')}\n${r.stderr.slice(-10).join('\n')}`,
      );
    }
  });
  return p;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One transaction of `n` actors named `${tag}-1` .. `${tag}-n` in `account`; returns the names in insertion order. */
/**
 * A paced workload: 30,000 actors for `others` (transactions of 25, alternating) and a transaction
 * of 5 for `down` every 20th, about 25 ms apart. `names` gets each account's names in commit order.
 */
async function workload(sql: Sql, down: string, others: [string, string], names: Map<string, string[]>, progress: { done: number }): Promise<void> {
  const transactions = 30_000 / 25;
  for (let i = 0; i < transactions; i++) {
    const account = others[i % 2]!;
    names.get(account)!.push(...(await insertActors(sql, account, `t${i}`, 25)));
    if (i % 20 === 0) names.get(down)!.push(...(await insertActors(sql, down, `d${i}`, 5)));
    progress.done = i + 1;
    await sleep(20);
  }
}

/** The first deliveries of an account's actors, by name, and whether they came in position order. */
function delivered(p: Pipeline, account: string) {
  const firsts = firstDeliveries([...p.sink.changesOf(account)]);
  return { firsts, names: firsts.filter((c) => c.table === 'actors').map((c) => String(c.data?.name)), sorted: isSortedByPosition(firsts) };
}

async function loggedKeys(sql: Sql): Promise<{ rows: number; distinct: number; keys: Set<string> }> {
  const rows = await sql<{ lsn: string; seq: number }[]>`select lsn, seq from change_logs`;
  const keys = new Set(rows.map(keyOf));
  return { rows: rows.length, distinct: keys.size, keys };
}

/**
 * The scenario of both tests: `refused`'s object answers `status` until `open()`, while two other
 * accounts write 30,000 changes; the replicator is SIGKILLed and started again a third of the way
 * through. Checks what must hold while the account is refused; returns what the test needs next.
 */
async function refusedWhileOthersWrite(p: Pipeline, status: number, env: Record<string, string>) {
  let r: ReplicatorProcess = await p.replicator(env);
  let refused = '';
  let open = false;
  let firstRefusalAt: number | undefined;
  p.sink.behaviour = ({ accountId }) => {
    if (accountId !== refused || open) return 200;
    firstRefusalAt ??= Date.now();
    return status;
  };
  // Its id known before its insert commits: the replicator may deliver the insert at once.
  await p.sql.begin(async (t) => {
    refused = await insertAccount(t, 'refused');
  });
  const b = await insertAccount(p.sql, 'bravo');
  const c = await insertAccount(p.sql, 'charlie');
  const names = new Map<string, string[]>([
    [refused, []],
    [b, []],
    [c, []],
  ]);
  const progress = { done: 0 };
  const startWal = await p.currentWal();
  // The slot's retained WAL, sampled; a standby snapshot each time, as the background writer logs
  // every 15 s, lets restart_lsn follow the confirmed position without waiting for that timer.
  let maxRetained = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await p.sql`select pg_log_standby_snapshot()`;
      maxRetained = Math.max(maxRetained, await p.retainedWal());
      await sleep(1000);
    }
  })();
  // Should the test fail first, the sampler's end (once the database goes) is of no interest.
  sampler.catch(() => {});
  const writing = workload(p.sql, refused, [b, c], names, progress);
  // Nor the workload's.
  writing.catch(() => {});

  // SIGKILL a third of the way through, with the account still refused; start again.
  await eventually(() => progress.done >= 400 && p.sink.acceptedChanges > 5000, 120_000, 'a third written and delivered');
  r.kill('SIGKILL');
  await r.exited;
  const killedAt = Date.now();
  r = await p.replicator(env);
  await writing;
  const lastCommit = await p.currentWal();

  // The others: every change, first deliveries in order, while the account is still refused.
  for (const account of [b, c]) {
    await eventually(() => delivered(p, account).names.length >= 15_000, 120_000, `all 15,000 changes of ${account}`);
    const got = delivered(p, account);
    expect(got.names).toEqual(names.get(account));
    expect(got.firsts[0]).toMatchObject({ table: 'accounts', op: 'insert' });
    expect(got.firsts).toHaveLength(15_001);
    expect(got.sorted).toBe(true);
  }
  expect(p.sink.changesOf(refused)).toEqual([]);
  await eventually(async () => (await r.metric('edgeplane_replicator_accounts_behind')) === 1, 5_000, 'accounts_behind = 1');
  expect(await r.metric('edgeplane_replicator_backlog_changes_max')).toBeGreaterThan(0);
  expect(await r.metric('edgeplane_replicator_catchup_pages_total')).toBeGreaterThan(0);
  // The slot passes their last commit while the refused account's changes are undelivered.
  await eventually(async () => (await p.confirmedFlush()) >= lastCommit, 30_000, 'the slot confirmed past the last commit');
  const lastOther = [b, c].map((a) => parseLsn(delivered(p, a).firsts.at(-1)!.lsn)).reduce(maxLsn);
  expect(await p.confirmedFlush()).toBeGreaterThan(lastOther);

  // WAL: the slot kept little, although much more was written since the refused account's first change.
  sampling = false;
  await sampler;
  const written = Number(lastCommit - startWal);
  console.info(`WAL written ${written} bytes, at most ${maxRetained} retained`);
  expect(written).toBeGreaterThan(20 << 20);
  expect(maxRetained).toBeLessThan(8 << 20);
  await eventually(
    async () => {
      await p.sql`select pg_log_standby_snapshot()`;
      return (await p.retainedWal()) < 1 << 20;
    },
    30_000,
    'retained WAL under 1 MB',
  );
  return {
    r,
    refused,
    names,
    killedAt,
    refusedSince: firstRefusalAt!,
    open: () => {
      open = true;
    },
  };
}

/** Once the refused account answers: every change of it in order, once; change_logs holds each change once. */
async function everythingOnceOpen(p: Pipeline, r: ReplicatorProcess, refused: string, expected: string[]): Promise<void> {
  await eventually(() => delivered(p, refused).names.length >= expected.length, 60_000, 'the refused account gets everything');
  const got = delivered(p, refused);
  expect(got.names).toEqual(expected);
  expect(got.firsts[0]).toMatchObject({ table: 'accounts', op: 'insert' });
  expect(got.firsts).toHaveLength(expected.length + 1);
  expect(got.sorted).toBe(true);
  expect(p.sink.rehydrates).toEqual([]);
  const logged = await loggedKeys(p.sql);
  expect(logged.rows).toBe(30_000 + expected.length + 3);
  expect(logged.distinct).toBe(logged.rows);
  expect(new Set(firstDeliveries(p.sink.changes).map(keyOf))).toEqual(logged.keys);
  await eventually(async () => (await r.health()).status === 'ok', 10_000, '/healthz ok once everyone is delivered');
  // Its cursor reaches its last change.
  const last = formatPosition(positionOf(got.firsts.at(-1)!));
  await eventually(
    async () => {
      const [row] = await p.sql<{ position: string }[]>`select lsn::text || ':' || seq as position from delivery_cursors where account_id = ${refused}`;
      return row?.position === last;
    },
    10_000,
    `the cursor at ${last}`,
  );
}

async function firstLogged(sql: Sql, account: string): Promise<string> {
  const [row] = await sql<{ position: string }[]>`
    select lsn || ':' || seq as position from change_logs where account_id = ${account} order by lsn::pg_lsn, seq limit 1`;
  return row!.position;
}

describe('one account never holds another (real replicator, real Postgres)', () => {
  it('an account answering 503 for over a minute: the others get all of 30,000 changes, the slot is confirmed, WAL stays small, a SIGKILL loses nothing, and the account gets everything in order once it answers', {
    timeout: 300_000,
  }, async () => {
    const p = await setup('down503');
    const s = await refusedWhileOthersWrite(p, 503, { RETRY_MAX_MS: '500' });
    const health = await s.r.health();
    expect(health).toMatchObject({ healthy: true, status: 'lagging', accounts: { behind: 1, refused: 0, worst: [{ account: s.refused, state: 'retrying' }] } });
    expect(health.accounts.worst).toHaveLength(1);
    expect(health.accounts.worst[0]!.failure).toMatchObject({ reason: '503', at: await firstLogged(p.sql, s.refused) });
    // At least a minute of failures, then the account answers.
    while (Date.now() - s.refusedSince < 60_000) await sleep(Math.max(10, s.refusedSince + 60_000 - Date.now()));
    expect(Date.now() - s.refusedSince).toBeGreaterThanOrEqual(60_000);
    expect(p.sink.requestsOf(s.refused).filter((x) => x.status === 503).length).toBeGreaterThan(20);
    s.open();
    await everythingOnceOpen(p, s.r, s.refused, s.names.get(s.refused)!);
  });

  it('an account answering 400 (a permanent refusal): the others are unaffected, /healthz and the metric show it refused, it is retried slowly and never skipped, and gets everything in order once it answers 200', {
    timeout: 300_000,
  }, async () => {
    const p = await setup('refused400');
    const retryMs = 1500;
    const s = await refusedWhileOthersWrite(p, 400, { PERMANENT_RETRY_MS: String(retryMs) });
    const first = await firstLogged(p.sql, s.refused);
    const health = await s.r.health();
    expect(health).toMatchObject({ healthy: true, status: 'lagging', accounts: { behind: 1, refused: 1 } });
    expect(health.accounts.worst).toHaveLength(1);
    expect(health.accounts.worst[0]).toMatchObject({ account: s.refused, state: 'refused', failure: { reason: '400', at: first } });
    expect(health.accounts.worst[0]!.failure!.message).toContain('HTTP 400');
    expect(health.reasons.join(' ')).toContain('1 account(s) refuse their changes');
    await eventually(async () => (await s.r.metric('edgeplane_replicator_accounts_refused')) === 1, 5_000, 'accounts_refused = 1');
    // Slowly: consecutive attempts of one process at least PERMANENT_RETRY_MS apart. Never
    // skipped: every attempt starts at the account's first change.
    const attempts = p.sink.requestsOf(s.refused);
    expect(attempts.length).toBeGreaterThan(5);
    for (const a of attempts) {
      expect(a.route).toBe('changes');
      expect(`${a.changes[0]!.lsn}:${a.changes[0]!.seq}`).toBe(first);
    }
    // (A timeout, which the loaded test process may cause, is retried with the transient backoff.)
    const gaps = attempts.slice(1).flatMap((a, i) => {
      const previous = attempts[i]!;
      const sameProcess = previous.at > s.killedAt || a.at < s.killedAt;
      return sameProcess && previous.status === 400 ? [a.at - previous.at] : [];
    });
    expect(gaps.length).toBeGreaterThan(4);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(retryMs);
    expect(await s.r.metric('edgeplane_replicator_refusals_total')).toBeGreaterThan(0);
    s.open();
    await everythingOnceOpen(p, s.r, s.refused, s.names.get(s.refused)!);
    await eventually(async () => (await s.r.metric('edgeplane_replicator_accounts_refused')) === 0, 5_000, 'accounts_refused = 0');
  });

  it('a restarted replicator sends an account that is behind nothing new before its backlog, however long finding the accounts behind takes', {
    timeout: 120_000,
  }, async () => {
    const p = await setup('behind_at_start');
    let r = await p.replicator();
    const behind = await insertAccount(p.sql, 'behind');
    let open = false;
    p.sink.behaviour = ({ accountId }) => (accountId !== behind || open ? 200 : 503);
    const backlog = await insertActors(p.sql, behind, 'backlog', 20);
    await eventually(async () => (await p.sql`select 1 from change_logs`).length === 21, 10_000, 'the backlog logged');
    // Confirmed too: the next process gets none of it from the stream, only from the log.
    const logged = await p.currentWal();
    await eventually(async () => (await p.confirmedFlush()) >= logged, 10_000, 'the backlog confirmed');
    r.kill('SIGKILL');
    await r.exited;
    open = true;
    // The new process finds the accounts behind in delivery_cursors: make that take a while, and
    // commit a change of the account meanwhile, which the new stream routes at once.
    let release!: () => void;
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = p.sql.begin(async (tx) => {
      await tx`lock table delivery_cursors in access exclusive mode`;
      locked();
      await new Promise<void>((resolve) => (release = resolve));
    });
    await isLocked;
    r = await p.replicator();
    const fresh = await insertActors(p.sql, behind, 'fresh', 1);
    await eventually(async () => (await r.metric('edgeplane_replicator_changes_total')) === 1, 10_000, 'the new change received');
    await sleep(1000);
    release();
    await holder;
    await eventually(() => delivered(p, behind).names.length >= 21, 30_000, 'everything delivered');
    const got = delivered(p, behind);
    expect(got.names).toEqual([...backlog, ...fresh]);
    expect(got.firsts[0]).toMatchObject({ table: 'accounts', op: 'insert' });
    expect(got.sorted).toBe(true);
  });
});
