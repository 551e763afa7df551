/**
 * `npm run bench:big-transaction [-- --rows 1000000 --compare 400000]`
 *
 * One transaction of `--rows` actor inserts (one statement, one account) through the replicator
 * process: its peak RSS (VmHWM), and the time from the commit until the slot is confirmed past it
 * (every row in change_logs) and until a local sink answering 200 got every row. `--compare N`
 * runs a transaction of N rows first, each through its own slot and replicator process. The
 * embedded Postgres keeps the default `logical_decoding_work_mem` (64 MB), so transactions this
 * large reach the replicator streamed (protocol 2) before their commit.
 *
 * Not a test: it prints figures for bench/RESULTS.md. `DATABASE_URL` runs it against an existing
 * server instead of an embedded one.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { startEmbeddedPostgres } from '../dev/embedded-postgres.ts';
import { ROOT } from '../dev/root.ts';
import { migrate } from '../migrations/migrate.ts';
import { parseLsn } from '../src/lsn.ts';
import { DOMAIN_TABLES } from '../src/tables.ts';
import { countingSink } from './counting-sink.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const ROWS = arg('rows', 1_000_000);
const COMPARE = arg('compare', 0);
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => (ms / 1000).toFixed(1);

interface Run {
  rows: number;
  idleRssMb: number;
  peakRssMb: number;
  /** Peak RSS by the commit (reading and spilling), by logged and confirmed, by delivered. */
  peaks: [number, number, number];
  statementMs: number;
  loggedMs: number;
  deliveredMs: number;
  logged: number;
}

async function main(): Promise<void> {
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}`);
  const cluster = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-bench-big-${Date.now()}`) });
  const url = process.env.DATABASE_URL ?? cluster!.url;
  const sql = postgres(url, { max: 2, onnotice: () => {} });
  try {
    const [server] = await sql<{ version: string; mem: string }[]>`select current_setting('server_version') as version, current_setting('logical_decoding_work_mem') as mem`;
    console.log(`postgres ${server!.version}, logical_decoding_work_mem ${server!.mem}${cluster ? ' (embedded-postgres, fsync=off, full_page_writes=off)' : ''}`);
    await migrate(sql);
    await sql.unsafe(`drop publication if exists edgeplane; create publication edgeplane for table ${DOMAIN_TABLES.join(', ')}`);
    const runs: Run[] = [];
    for (const rows of COMPARE > 0 ? [COMPARE, ROWS] : [ROWS]) runs.push(await bigTransaction(sql, url, rows));
    console.log('\nsummary');
    for (const r of runs) {
      console.log(
        `  ${fmt(r.rows)} rows: statement ${secs(r.statementMs)} s; from its commit, logged and confirmed ${secs(r.loggedMs)} s (${fmt(r.rows / (r.loggedMs / 1000))} changes/s), delivered ${secs(r.deliveredMs)} s; peak RSS ${r.peakRssMb} MB (idle ${r.idleRssMb} MB; by the commit ${r.peaks[0]} MB, by logged ${r.peaks[1]} MB); change_logs ${fmt(r.logged)} rows`,
      );
    }
  } finally {
    await sql.end();
    await cluster?.stop();
  }
}

function memoryOf(pid: number): { rss: number; hwm: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
    return { rss: Math.round(kb('VmRSS') / 1024), hwm: Math.round(kb('VmHWM') / 1024) };
  } catch {
    return { rss: 0, hwm: 0 }; // not on Linux
  }
}

async function bigTransaction(sql: Sql, url: string, rows: number): Promise<Run> {
  const slot = `bench_big_${rows}`;
  await sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`;
  await sql`truncate change_logs, delivery_cursors, accounts cascade`;
  await sql`select pg_create_logical_replication_slot(${slot}, 'pgoutput')`;
  let received = 0;
  const sink = countingSink((n) => (received += n));
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const child = spawn(process.execPath, ['--import', 'tsx', 'replicator/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: url,
      EDGE_URL: `http://127.0.0.1:${(sink.address() as AddressInfo).port}`,
      REPLICATOR_SECRET: 'bench-secret-0123456789',
      SLOT_NAME: slot,
      REPLICATOR_PORT: '0',
      LOG_LEVEL: 'warn',
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(NODE_OPTIONS|MAX_UNACKED|SPILL_|FORWARD_|CHANGE_LOG_)/.test(k))),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout!.on('data', () => {});
  const confirmed = async () => {
    const [row] = await sql<{ lsn: string | null }[]>`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = ${slot}`;
    return row?.lsn ? parseLsn(row.lsn) : 0n;
  };
  const until = async (what: string, done: () => Promise<boolean> | boolean, onTick: () => void = () => {}) => {
    for (const deadline = Date.now() + 30 * 60_000; !(await done()); ) {
      if (Date.now() > deadline) throw new Error(`${what}: not within 30 minutes`);
      if (child.exitCode !== null) throw new Error(`the replicator exited (${child.exitCode}) before ${what}`);
      onTick();
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await until('streaming', async () => (await sql`select 1 from pg_replication_slots where slot_name = ${slot} and active`).length > 0);
    const [account] = await sql<{ id: string }[]>`insert into accounts (name, slug) values ('big', 'big') returning id::text`;
    await until('the account delivered', () => received >= 1);
    await new Promise((r) => setTimeout(r, 2000));
    const idle = memoryOf(child.pid!);
    let peak = idle.hwm;
    const sample = () => (peak = Math.max(peak, memoryOf(child.pid!).hwm));
    const sampler = setInterval(sample, 100);
    try {
      console.log(`\n${fmt(rows)} rows in one transaction, slot ${slot}: replicator idle at ${idle.rss} MB RSS`);
      const statementStart = performance.now();
      await sql`insert into actors (account_id, name, type) select ${account!.id}, 'actor-' || g, 'account_user' from generate_series(1, ${rows}) g`;
      const committed = performance.now();
      const atCommit = sample();
      const [wal] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
      const end = parseLsn(wal!.lsn);
      console.log(`  statement: ${secs(committed - statementStart)} s, WAL end ${wal!.lsn}`);
      let loggedAt = 0;
      let deliveredAt = 0;
      let atLogged = 0;
      await until('logged and delivered', async () => {
        if (!loggedAt && (await confirmed()) >= end) {
          loggedAt = performance.now();
          atLogged = sample();
        }
        if (!deliveredAt && received >= rows + 1) deliveredAt = performance.now();
        return loggedAt > 0 && deliveredAt > 0;
      });
      sample();
      const [logged] = await sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
      console.log(
        `  logged and confirmed ${secs(loggedAt - committed)} s after the commit, delivered ${secs(deliveredAt - committed)} s; peak RSS ${peak} MB (${atCommit} MB by the commit, ${atLogged} MB by logged); ${fmt(received)} changes received, ${fmt(logged!.n)} change_logs rows`,
      );
      return {
        rows,
        idleRssMb: idle.rss,
        peakRssMb: peak,
        peaks: [atCommit, atLogged, peak],
        statementMs: committed - statementStart,
        loggedMs: loggedAt - committed,
        deliveredMs: deliveredAt - committed,
        logged: logged!.n,
      };
    } finally {
      clearInterval(sampler);
    }
  } finally {
    child.kill('SIGKILL');
    sink.close();
    await new Promise((r) => setTimeout(r, 500));
    await sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`;
  }
}

await main();
