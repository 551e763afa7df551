import type { Sql } from 'postgres';
import { afterEach, expect, it, onTestFailed } from 'vitest';
import { insertAccount, Pipeline, insertActors } from '../support/pipeline.ts';
import { firstDeliveries, isSortedByPosition } from '../support/positions.ts';
import { eventually } from '../support/replicator-process.ts';

// docs/architecture.md#10-one-account-never-holds-another: retention keeps what an account still
// needs while it is younger than the retention; past that, the account re-hydrates and resumes.

let pipeline: Pipeline | undefined;
afterEach(async () => {
  await pipeline?.close();
  pipeline = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function logged(sql: Sql, account: string): Promise<{ n: number; last: string | null }> {
  const [row] = await sql<{ n: number; last: string | null }[]>`
    select count(*)::int as n, (array_agg(lsn || ':' || seq order by lsn::pg_lsn desc, seq desc))[1] as last
    from change_logs where account_id = ${account}`;
  return row!;
}

interface CursorRow {
  needs_rehydrate: boolean;
  skip: string | null;
}

async function cursor(sql: Sql, account: string): Promise<CursorRow | undefined> {
  const [row] = await sql<CursorRow[]>`
    select needs_rehydrate, skip_lsn::text || ':' || skip_seq as skip from delivery_cursors where account_id = ${account}`;
  return row;
}

it('an account refused for longer than the retention is marked, its old rows go, another account’s young undelivered rows stay; it re-hydrates, then gets exactly the changes after the pruned ones', {
  timeout: 180_000,
}, async () => {
  const retentionMs = 20_000;
  const p = await Pipeline.create('retain');
  pipeline = p;
  onTestFailed(() => {
    for (const r of p.processes)
      console.error(
        r.logs
          .slice(-60)
          .map((l) => JSON.stringify(l))
          .join('\n'),
      );
  });
  const env = { CHANGE_LOG_RETENTION_DAYS: String(retentionMs / 86_400_000), CHANGE_LOG_RETENTION_INTERVAL_MS: '1000' };
  let r = await p.replicator(env);
  const refused = new Set<string>();
  p.sink.behaviour = ({ accountId }) => (refused.has(accountId) ? 503 : 200);
  const lagging = await insertAccount(p.sql, 'lagging');
  refused.add(lagging);
  const young = await insertAccount(p.sql, 'young');
  // The young account's first change is delivered; from then on it is refused too.
  await eventually(() => p.sink.changesOf(young).length === 1, 20_000, 'the young account created');
  refused.add(young);
  const start = Date.now();
  const pruned = await insertActors(p.sql, lagging, 'old', 50);
  const before = await eventually(
    async () => {
      const l = await logged(p.sql, lagging);
      return l.n === 51 ? l : undefined;
    },
    10_000,
    'the old rows logged',
  );

  // Half a retention later, the young account writes; its rows stay undelivered.
  await sleep(retentionMs / 2);
  const youngNames = await insertActors(p.sql, young, 'y', 40);
  await eventually(async () => (await logged(p.sql, young)).n === 40 + 1, 10_000, 'the young rows logged');

  // Past the retention, the lagging account is marked and its rows go; the young rows stay.
  await eventually(async () => (await cursor(p.sql, lagging))?.needs_rehydrate === true, retentionMs + 20_000, 'the lagging account marked');
  expect(Date.now() - start).toBeGreaterThanOrEqual(retentionMs);
  await eventually(async () => (await logged(p.sql, lagging)).n === 0, 10_000, 'the lagging account’s rows pruned');
  expect(await cursor(p.sql, lagging)).toEqual({ needs_rehydrate: true, skip: before.last });
  // Young enough: kept although undelivered (its first row was delivered, and is pruned now or soon).
  expect(Date.now() - start).toBeLessThan(retentionMs * 1.5);
  expect((await logged(p.sql, young)).n).toBeGreaterThanOrEqual(40);
  expect((await cursor(p.sql, young))?.needs_rehydrate).toBe(false);
  // The mark is durable: a SIGKILLed replicator's successor re-hydrates the account all the same.
  r.kill('SIGKILL');
  await r.exited;
  r = await p.replicator(env);
  const health = await eventually(
    async () => {
      const h = await r.health();
      return h.accounts.worst.length === 2 ? h : undefined;
    },
    10_000,
    'both accounts behind after the restart',
  );
  expect(health.accounts.worst.map((w) => w.account).sort()).toEqual([lagging, young].sort());

  // The young account answers: everything, in order, without a re-hydration.
  refused.delete(young);
  await eventually(() => firstDeliveries([...p.sink.changesOf(young)]).length === 41, 20_000, 'the young account gets everything');
  const youngGot = firstDeliveries([...p.sink.changesOf(young)]);
  expect(youngGot.slice(1).map((c) => c.data?.name)).toEqual(youngNames);
  expect(isSortedByPosition(youngGot)).toBe(true);

  // The lagging account writes more, then answers: a re-hydration in the current epoch first,
  // then exactly the changes after the pruned ones, in order.
  const after = await insertActors(p.sql, lagging, 'new', 30);
  await eventually(async () => (await logged(p.sql, lagging)).n === 30, 10_000, 'the new rows logged');
  refused.delete(lagging);
  await eventually(() => p.sink.changesOf(lagging).length >= 30, 20_000, 'the lagging account gets the rest');
  await sleep(1000);
  // Every request before it answered was refused (503): the answered ones are what it took.
  const answered = p.sink.requestsOf(lagging).filter((x) => x.status === 200);
  expect(answered[0]).toMatchObject({ route: 'rehydrate', epoch: health.epoch });
  expect(health.epoch).toMatch(/^1-/);
  expect(answered.slice(1).every((x) => x.route === 'changes' && x.epoch === health.epoch)).toBe(true);
  expect(p.sink.rehydrates.map((x) => x.accountId)).toEqual([lagging]);
  const got = [...p.sink.changesOf(lagging)];
  expect(got.map((c) => c.data?.name)).toEqual(after);
  expect(isSortedByPosition(got)).toBe(true);
  expect(got.some((c) => pruned.includes(String(c.data?.name)))).toBe(false);
  expect((await cursor(p.sql, lagging))?.needs_rehydrate).toBe(false);
  expect(await r.metric('edgeplane_replicator_rehydrations_total')).toBe(1);
  await eventually(async () => (await r.health()).status === 'ok', 10_000, '/healthz ok');
});
