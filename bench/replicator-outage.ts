/**
 * `npm run bench:outage [-- --accounts 88 --changes 200000 --rate 4000]`
 *
 * One account down while the others write (docs/architecture.md#10-one-account-never-holds-another):
 * the replicator process streams from a real Postgres to a local sink that answers 200, except for
 * one account it answers 503 during the outage.
 *   A. baseline: every account up, `--changes`/4 changes: the others' commit-to-delivery latency.
 *   B. outage: the down account gets a quarter of `--changes`, the others the rest: their latency
 *      again, and the WAL the slot retains (sampled every 250 ms).
 *   C. back: the down account answers again; how long until its backlog is delivered, and the
 *      catch-up rate from change_logs.
 * Latency: the sink's clock at arrival minus the change's `committed_at` (same machine).
 */
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { startEmbeddedPostgres } from '../dev/embedded-postgres.ts';
import { ROOT } from '../dev/root.ts';
import { migrate } from '../migrations/migrate.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const ACCOUNTS = arg('accounts', 88);
const CHANGES = arg('changes', 200_000);
const RATE = arg('rate', 4000);
const PER_TXN = 10;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

interface Arrival {
  account: string;
  latencyMs: number;
  at: number;
}

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Records every change's arrival; the down account is answered 503 while `down` is set. */
function sink(arrivals: Arrival[], state: { down: string | null; refused: number }) {
  return createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const account = /\/v1\/accounts\/([^/]+)\//.exec(req.url ?? '')?.[1] ?? '';
      if (account === state.down) {
        state.refused++;
        res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"down"}');
        return;
      }
      const now = Date.now();
      if (req.url?.endsWith('/changes')) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { changes: { committed_at: string }[] };
        for (const c of body.changes) arrivals.push({ account, latencyMs: now - Date.parse(c.committed_at), at: now });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"applied":0,"skipped":0,"position":null}');
    });
  });
}

/** Writes `changes` actor inserts, PER_TXN per transaction, at about `rate` changes/s; `pick` chooses each transaction's account. */
async function write(sql: Sql, changes: number, rate: number, pick: (i: number) => string): Promise<void> {
  const txns = Math.ceil(changes / PER_TXN);
  const started = performance.now();
  const writers = 4;
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      for (let i = w; i < txns; i += writers) {
        const due = started + ((i * PER_TXN) / rate) * 1000;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        await sql`insert into actors (account_id, name, type) select ${pick(i)}, 'bench', 'account_user' from generate_series(1, ${PER_TXN})`;
      }
    }),
  );
}

async function until(test: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await test())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main(): Promise<void> {
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}`);
  const cluster = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-bench-outage-${Date.now()}`) });
  const url = process.env.DATABASE_URL ?? cluster!.url;
  const sql = postgres(url, { max: 6, onnotice: () => {} });
  const arrivals: Arrival[] = [];
  const state = { down: null as string | null, refused: 0 };
  const server = sink(arrivals, state);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let child: ReturnType<typeof spawn> | undefined;
  try {
    await migrate(sql);
    await sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = 'bench_outage'`;
    const accounts = (
      await sql<
        { id: string }[]
      >`insert into accounts (name, slug) select 'a' || g, 'bench-outage-' || g || '-' || ${Date.now()} from generate_series(1, ${ACCOUNTS}) g returning id::text`
    ).map((r) => r.id);
    const down = accounts[0]!;
    const others = accounts.slice(1);
    child = spawn(process.execPath, ['--import', 'tsx', 'replicator/main.ts'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        DATABASE_URL: url,
        EDGE_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        REPLICATOR_SECRET: 'bench-secret-0123456789',
        SLOT_NAME: 'bench_outage',
        REPLICATOR_PORT: '0',
        LOG_LEVEL: 'warn',
        FORWARD_LINGER_MS: '0',
        ...Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(MAX_UNACKED|FORWARD_|CHANGE_LOG_|RETRY_|CATCHUP_|PERMANENT_)/.test(k))),
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await until(async () => (await sql`select 1 from pg_replication_slots where slot_name = 'bench_outage' and active`).length > 0, 30_000, 'the replicator to stream');
    // Its first rehydrate round (a new slot is a new epoch) settles before measuring.
    await new Promise((r) => setTimeout(r, 1000));

    const phase = async (name: string, changes: number, pick: (i: number) => string) => {
      const from = arrivals.length;
      let maxRetained = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const [row] = await sql<{ retained: string | null }[]>`
            select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::text as retained from pg_replication_slots where slot_name = 'bench_outage'`;
          maxRetained = Math.max(maxRetained, Number(row?.retained ?? 0));
          await new Promise((r) => setTimeout(r, 250));
        }
      })();
      const started = performance.now();
      await write(sql, changes, RATE, pick);
      const writtenMs = performance.now() - started;
      const expectedOthers = changes - (state.down ? Math.ceil(changes / PER_TXN / 4) * PER_TXN : 0);
      await until(() => arrivals.slice(from).filter((a) => a.account !== state.down).length >= expectedOthers, 120_000, `${name}: the others' changes`);
      sampling = false;
      await sampler;
      const latencies = arrivals
        .slice(from)
        .filter((a) => a.account !== down)
        .map((a) => a.latencyMs);
      console.log(
        `${name}: ${fmt(changes)} changes written in ${(writtenMs / 1000).toFixed(1)} s; the other accounts' commit-to-delivery p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms, max ${percentile(latencies, 100)} ms over ${fmt(latencies.length)} changes; WAL retained at most ${(maxRetained / 2 ** 20).toFixed(1)} MB`,
      );
    };

    let n = 0;
    await phase('A. baseline, every account up', CHANGES / 4, () => others[n++ % others.length]!);
    state.down = down;
    let m = 0;
    await phase('B. one account down', CHANGES, (i) => (i % 4 === 0 ? down : others[m++ % others.length]!));
    const backlog = Math.ceil(CHANGES / PER_TXN / 4) * PER_TXN;
    const [slot] = await sql<
      { lag: string }[]
    >`select pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::text as lag from pg_replication_slots where slot_name = 'bench_outage'`;
    console.log(
      `   meanwhile the down account refused ${fmt(state.refused)} requests; the slot's confirmed position trails the WAL by ${(Number(slot!.lag) / 2 ** 20).toFixed(2)} MB`,
    );

    const back = Date.now();
    state.down = null;
    const caughtUp = () => arrivals.filter((a) => a.account === down && a.at >= back);
    await until(() => caughtUp().length >= backlog, 300_000, 'the down account to catch up');
    const got = caughtUp();
    const first = got[0]!.at;
    const last = got.at(-1)!.at;
    console.log(
      `C. back: its ${fmt(backlog)} changes arrived from ${((first - back) / 1000).toFixed(2)} s after it answered again (the retry backoff) to ${((last - back) / 1000).toFixed(2)} s: catch-up from change_logs at ${fmt(backlog / Math.max(0.001, (last - first) / 1000))} changes/s`,
    );
  } finally {
    child?.kill('SIGKILL');
    server.close();
    await sql.end();
    await cluster?.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
