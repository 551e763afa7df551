import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, expect, it, onTestFailed } from 'vitest';
import { startLocalPostgres, type LocalPostgres } from '../../dev/local-postgres.ts';
import { freePort } from '../../dev/ports.ts';
import { migrate } from '../../migrations/migrate.ts';
import { withDatabase, type TestDatabase } from '../support/database.ts';
import { expectConverged } from '../support/e2e-convergence.ts';
import type { Device } from '../support/e2e-device.ts';
import { Stack } from '../support/e2e-stack.ts';
import { Workload } from '../support/e2e-workload.ts';

/**
 * Postgres restarts while changes stream: a cluster of this file's own (the run's shared one must
 * not restart under other tests), the replicator and the Worker's objects reconnect, and the views
 * converge. Commits that failed during the restart are allowed to be lost or kept (the writer
 * cannot know); every answered one must be in change_logs. The cluster is the local run's kind
 * (pg_ctl), so that a restart is the ordinary `pg_ctl restart -m fast` with a time limit.
 */
let cluster: LocalPostgres;
let dir: string;
let stack: Stack;
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'edgeplane-e2e-restart-'));
  // As root, the server runs as `postgres`, which must be able to enter the folder.
  await chmod(dir, 0o755);
  cluster = await startLocalPostgres({ dataDir: path.join(dir, 'pg'), port: await freePort(), settings: { fsync: 'off', full_page_writes: 'off' } });
  const name = 'e2e_restart';
  const admin = postgres(cluster.url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`).finally(() => admin.end());
  const url = withDatabase(cluster.url, name);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  await migrate(sql);
  const db: TestDatabase = { name, url, sql, drop: async () => void (await sql.end({ timeout: 1 })) };
  stack = await Stack.start({ db });
});

afterAll(async () => {
  await stack?.close();
  await cluster?.stop('immediate');
  await rm(dir, { recursive: true, force: true });
});

it('Postgres restarts during a stream of commits: the replicator reconnects and resumes from the slot; views converge', async () => {
  onTestFailed(() => console.error(`--- stack logs ---\n${stack.tail(80)}`));
  const sql = stack.db.sql;
  const w = await Workload.create(sql, 2);
  const clients: Device[] = [];
  for (const a of w.accounts) {
    const d = stack.device('client', a.clientToken);
    await d.connect();
    clients.push(d);
  }
  const writer = w.run(14_000, 30, { tolerateErrors: true });
  await new Promise((r) => setTimeout(r, 4000));
  // A fast shutdown (what `systemctl restart postgresql` does) waits for each walsender to have
  // its client confirm everything sent; 30 s is far more than that takes when nothing is stuck.
  await cluster.restart('fast', 30);
  await writer;
  expect(w.failures).toBeGreaterThan(0);
  expect(w.commits).toBeGreaterThan(200);
  await expectConverged(sql, clients, 90_000);
  // Every answered commit is logged; an unanswered one at most once.
  const deadline = Date.now() + 60_000;
  let problems: string[] = [];
  do {
    const logged = await w.logged();
    problems = [];
    for (const [key, committed] of w.counts.committed) {
      const n = logged.get(key) ?? 0;
      const most = committed + (w.counts.uncertain.get(key) ?? 0);
      if (n < committed || n > most) problems.push(`${key}: committed ${committed} (+${most - committed} unanswered), logged ${n}`);
    }
    if (problems.length === 0) break;
    await new Promise((r) => setTimeout(r, 250));
  } while (Date.now() < deadline);
  expect(problems).toEqual([]);
  const reconnects = stack.logs.filter((l) => l.source === 'replicator' && l.line.includes('replication session ended')).length;
  expect(reconnects).toBeGreaterThan(0);
});

it('Postgres restarts (fast shutdown) while a delivered change waits for its change_logs row: the restart completes and nothing is lost', async () => {
  onTestFailed(() => console.error(`--- stack logs ---\n${stack.tail(80)}`));
  // A pool of its own: postgres.js hears that the last test's restart ended an idle connection of
  // the shared pool only when it next sends a query on it, which would then fail.
  const sql = postgres(stack.db.url, { max: 2, onnotice: () => {} });
  cleanups.push(() => sql.end({ timeout: 1 }));
  const w = await Workload.create(sql, 1, 2, 1);
  const c = stack.device('client', w.accounts[0]!.clientToken);
  await c.connect();
  // A session holds change_logs, so the replicator's insert of the next change waits: the change
  // reaches the Worker, its acknowledgement to Postgres cannot happen yet.
  const blocker = postgres(stack.db.url, { max: 1, onnotice: () => {} });
  const held = blocker
    .begin(async (tx) => {
      await tx`lock table change_logs in exclusive mode`;
      await new Promise((r) => setTimeout(r, 60_000));
    })
    .catch(() => undefined);
  await new Promise((r) => setTimeout(r, 200));
  await w.step(0);
  await c.next('resource_created_or_updated', 15_000);
  // The fast shutdown ends every session (the lock holder too) and then waits for the walsender.
  await cluster.restart('fast', 30);
  void held;
  await blocker.end({ timeout: 0 }).catch(() => undefined);
  await expectConverged(sql, [c], 60_000);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const logged = await w.logged();
    if ([...w.counts.committed].every(([k, n]) => logged.get(k) === n)) break;
    if (Date.now() > deadline) throw new Error(`change_logs misses committed changes: ${JSON.stringify([...logged])} vs ${JSON.stringify([...w.counts.committed])}`);
    await new Promise((r) => setTimeout(r, 250));
  }
});
