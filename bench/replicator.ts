/**
 * `npm run bench:replicator [-- --backlog 200000 --rounds 2]`
 *
 * 1. Decoder throughput: our pgoutput decoder against pg-logical-replication's PgoutputParser on the
 *    same bytes, captured from a real server (protocol 1, which both read).
 * 2. Catch-up: a backlog drained by the replicator process (decode, change_logs, acknowledge, and
 *    forward to a local sink answering 200), timed to "logged and confirmed" (the slot's
 *    confirmed_flush_lsn at the backlog's end: what Postgres waits for) and to "delivered" (every
 *    change at the sink), against `pg_recvlogical` reading the same backlog to /dev/null,
 *    alternating, `--rounds` times each (every round reads the backlog through its own slot).
 * 3. Postgres alone: the change_logs rows of the catch-up COPYed again into an empty copy of the
 *    table, the floor of what logging them costs the server.
 *
 * Not a test: it prints figures for bench/RESULTS.md. `DATABASE_URL` runs it against an existing
 * server instead of an embedded one (CPU figures of Postgres processes need it on this machine).
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { PgoutputParser } from 'pg-logical-replication/dist/output-plugins/pgoutput/pgoutput-parser.js';
import { startEmbeddedPostgres } from '../dev/embedded-postgres.ts';
import { ROOT } from '../dev/root.ts';
import { migrate } from '../migrations/migrate.ts';
import { copyIn } from '../replicator/log/copy-in.ts';
import { withNoDelay } from '../replicator/pg-socket.ts';
import { PgoutputDecoder } from '../replicator/pgoutput/decoder.ts';
import { parseLsn } from '../src/lsn.ts';
import { DOMAIN_TABLES } from '../src/tables.ts';
import { writeWorkload } from './capture-workload.ts';
import { countingSink } from './counting-sink.ts';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const BACKLOG = arg('backlog', 200_000);
/** Catch-up rounds, pg_recvlogical and ours alternating; the best of each is reported (other load only ever slows a run). */
const ROUNDS = arg('rounds', 2);
const SLOTS = ['bench_capture', ...Array.from({ length: ROUNDS }, (_, i) => [`bench_peer_${i}`, `bench_edgeplane_${i}`]).flat()];
const ACTORS_PER_ACCOUNT = 1000;
const CHANGES_PER_ACCOUNT = 2 * ACTORS_PER_ACCOUNT + 72 + 111 + 111; // see writeWorkload, updates and deletes included
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => (ms / 1000).toFixed(2);

async function main(): Promise<void> {
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}`);
  const cluster = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-bench-${Date.now()}`) });
  const url = process.env.DATABASE_URL ?? cluster!.url;
  const sql = postgres(url, { max: 2, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  try {
    const [server] = await sql<{ version: string }[]>`select current_setting('server_version') as version`;
    console.log(`postgres ${server!.version}${cluster ? ' (embedded-postgres, the test settings: fsync=off, full_page_writes=off)' : ''}`);
    await migrate(sql);
    await sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'bench\_%'`;
    await sql`drop table if exists bench_change_logs`;
    await sql`truncate change_logs`;
    await sql.unsafe(`drop publication if exists edgeplane; create publication edgeplane for table ${DOMAIN_TABLES.join(', ')}`);
    for (const slot of SLOTS) await sql`select pg_create_logical_replication_slot(${slot}, 'pgoutput')`;

    const started = Date.now();
    let written = 0;
    const accounts = Math.ceil(BACKLOG / CHANGES_PER_ACCOUNT);
    for (let i = 0; i < accounts; i += 10) written += await writeWorkload(sql, { accounts: Math.min(10, accounts - i), actorsPerAccount: ACTORS_PER_ACCOUNT });
    const [end] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
    console.log(`backlog: ${fmt(written)} row changes in ${accounts} accounts, written in ${((Date.now() - started) / 1000).toFixed(1)} s, WAL end ${end!.lsn}`);
    await sql`checkpoint`;

    const decoder = await decoderBench(sql);
    const peers: Array<Awaited<ReturnType<typeof recvlogical>>> = [];
    const runs: Array<Awaited<ReturnType<typeof replicatorCatchUp>>> = [];
    for (let round = 0; round < ROUNDS; round++) {
      peers.push(await recvlogical(sql, url, `bench_peer_${round}`, end!.lsn));
      await sql`truncate change_logs, delivery_cursors`;
      await sql`checkpoint`;
      runs.push(await replicatorCatchUp(sql, url, `bench_edgeplane_${round}`, end!.lsn, written));
    }
    const alone = await changeLogsAlone(sql, url);

    console.log('\nsummary');
    console.log(`  decoder: ours ${fmt(decoder.ours)} changes/s median, pg-logical-replication ${fmt(decoder.peer)}: ${(decoder.ours / decoder.peer).toFixed(2)}x`);
    console.log(`           per CPU-second: ours ${fmt(decoder.oursCpu)}, pg-logical-replication ${fmt(decoder.peerCpu)}: ${(decoder.oursCpu / decoder.peerCpu).toFixed(2)}x`);
    console.log(`  catch-up of ${fmt(written)} changes, ${ROUNDS} rounds:`);
    for (let round = 0; round < ROUNDS; round++) {
      const peer = peers[round]!;
      const ours = runs[round]!;
      console.log(`    round ${round + 1}`);
      console.log(`      pg_recvlogical:       ${secs(peer.ms)} s  (${fmt(written / (peer.ms / 1000))} changes/s)${cpuNote(peer.cpu)}`);
      console.log(
        `      edgeplane replicator: ${secs(ours.confirmedMs)} s from streaming to logged and confirmed (${fmt(written / (ours.confirmedMs / 1000))} changes/s), ${secs(ours.streamingMs)} s to delivered, ${secs(ours.totalMs)} s including process start, peak RSS ${ours.peakRssMb} MB${cpuNote(ours.cpu)}`,
      );
      console.log(`      ratio: ${(ours.confirmedMs / peer.ms).toFixed(2)}x to logged and confirmed, ${(ours.streamingMs / peer.ms).toFixed(2)}x to delivered`);
    }
    const bestPeer = Math.min(...peers.map((p) => p.ms));
    const bestOurs = Math.min(...runs.map((r) => r.streamingMs));
    const bestConfirmed = Math.min(...runs.map((r) => r.confirmedMs));
    console.log(
      `    best: pg_recvlogical ${secs(bestPeer)} s; edgeplane logged and confirmed ${secs(bestConfirmed)} s (${(bestConfirmed / bestPeer).toFixed(2)}x), delivered ${secs(bestOurs)} s (${fmt(written / (bestOurs / 1000))} changes/s, ${(bestOurs / bestPeer).toFixed(2)}x); peak RSS ${Math.max(...runs.map((r) => r.peakRssMb))} MB`,
    );
    console.log(
      `  Postgres alone, COPY of the same ${fmt(alone.rows)} change_logs rows in batches of 2000 on one connection: ${secs(alone.ms)} s (${(alone.ms / bestPeer).toFixed(2)}x pg_recvlogical's best)`,
    );
  } finally {
    await sql.end();
    await cluster?.stop();
  }
}

function cpuNote(cpu: Record<string, number>): string {
  const parts = Object.entries(cpu).filter(([, s]) => s > 0);
  return parts.length === 0 ? '' : `; CPU ${parts.map(([k, s]) => `${k} ${s.toFixed(2)} s`).join(', ')}`;
}

async function decoderBench(sql: Sql): Promise<{ ours: number; peer: number; oursCpu: number; peerCpu: number }> {
  const rows = await sql<{ data: Buffer }[]>`
    select data from pg_logical_slot_get_binary_changes('bench_capture', null, null, 'proto_version', '1', 'publication_names', 'edgeplane')`;
  const messages = rows.map((r) => r.data);
  const changes = messages.filter((m) => m[0] === 0x49 || m[0] === 0x55 || m[0] === 0x44).length;
  const bytes = messages.reduce((n, m) => n + m.length, 0);
  console.log(
    `\ndecoder: ${fmt(messages.length)} messages, ${fmt(changes)} row changes, ${(bytes / 1e6).toFixed(1)} MB captured; 3 warm-up rounds each, then 9 rounds, alternating`,
  );
  const decoders: Array<[string, () => void]> = [
    [
      'edgeplane PgoutputDecoder',
      () => {
        const d = new PgoutputDecoder();
        for (const m of messages) d.decode(m);
      },
    ],
    [
      'pg-logical-replication PgoutputParser',
      () => {
        const p = new PgoutputParser();
        for (const m of messages) p.parse(m);
      },
    ],
  ];
  // Wall-clock rates, and rates per CPU-second of this process, which other load on a shared machine
  // disturbs much less (it also counts V8's helper threads, so it slightly favours neither).
  const rates = decoders.map(() => [] as number[]);
  const cpuRates = decoders.map(() => [] as number[]);
  for (let round = 0; round < 12; round++) {
    decoders.forEach(([, decode], i) => {
      const cpu = process.cpuUsage();
      const t = performance.now();
      decode();
      const wall = performance.now() - t;
      const used = process.cpuUsage(cpu);
      if (round < 3) return;
      rates[i]!.push(changes / (wall / 1000));
      cpuRates[i]!.push(changes / ((used.user + used.system) / 1e6));
    });
  }
  const medianOf = (r: number[]) => [...r].sort((a, b) => a - b)[r.length >> 1]!;
  const medians = decoders.map(([name], i) => {
    const r = [...rates[i]!].sort((a, b) => a - b);
    console.log(
      `  ${name.padEnd(38)} median ${fmt(medianOf(r))} changes/s (best ${fmt(r[r.length - 1]!)}, worst ${fmt(r[0]!)}); per CPU-second: median ${fmt(medianOf(cpuRates[i]!))}`,
    );
    return medianOf(r);
  });
  const cpuMedians = cpuRates.map(medianOf);
  console.log(`  ratio: ${(medians[0]! / medians[1]!).toFixed(2)}x (per CPU-second ${(cpuMedians[0]! / cpuMedians[1]!).toFixed(2)}x)`);
  return { ours: medians[0]!, peer: medians[1]!, oursCpu: cpuMedians[0]!, peerCpu: cpuMedians[1]! };
}

/** CPU seconds of Postgres backends (when the server runs on this machine) and of local processes, sampled while a run goes. */
class CpuSampler {
  private readonly seen = new Map<number, { label: string; first: number; last: number }>();

  constructor(private readonly sql: Sql) {}

  static read(pid: number): number | undefined {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(fields[11]) + Number(fields[12])) / 100;
    } catch {
      return undefined;
    }
  }

  track(pid: number, label: string): void {
    const t = CpuSampler.read(pid);
    if (t === undefined) return;
    const entry = this.seen.get(pid);
    if (entry) entry.last = t;
    else this.seen.set(pid, { label, first: t, last: t });
  }

  /** Backends of the given application names: walsenders and the rest, separately. */
  async sample(applications: string[], local: Array<[number | undefined, string]> = []): Promise<void> {
    const rows = await this.sql<{ pid: number; walsender: boolean }[]>`
      select pid, backend_type = 'walsender' as walsender from pg_stat_activity where application_name = any(${applications})`;
    for (const r of rows) this.track(r.pid, r.walsender ? 'walsender' : 'Postgres backends');
    for (const [pid, label] of local) if (pid !== undefined) this.track(pid, label);
  }

  totals(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.seen.values()) out[e.label] = (out[e.label] ?? 0) + e.last - e.first;
    return out;
  }
}

async function recvlogical(sql: Sql, url: string, slot: string, endLsn: string): Promise<{ ms: number; cpu: Record<string, number> }> {
  const sampler = new CpuSampler(sql);
  const started = performance.now();
  const child = promisify(execFile)('pg_recvlogical', [
    '-d',
    url,
    '--slot',
    slot,
    '--start',
    '--endpos',
    endLsn,
    '--no-loop',
    '-f',
    '/dev/null',
    '-o',
    'proto_version=2',
    '-o',
    'publication_names=edgeplane',
    '-o',
    'streaming=on',
  ]);
  let done = false;
  const finished = child.then(() => (done = true));
  while (!done) {
    await sampler.sample(['pg_recvlogical']);
    await Promise.race([finished, new Promise((r) => setTimeout(r, 100))]);
  }
  const ms = performance.now() - started;
  console.log(`\npg_recvlogical -P pgoutput to /dev/null: ${secs(ms)} s`);
  return { ms, cpu: sampler.totals() };
}

async function replicatorCatchUp(
  sql: Sql,
  url: string,
  slot: string,
  endLsn: string,
  expected: number,
): Promise<{ totalMs: number; confirmedMs: number; streamingMs: number; peakRssMb: number; cpu: Record<string, number> }> {
  let received = 0;
  const sink = countingSink((n) => (received += n));
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const sampler = new CpuSampler(sql);
  const benchCpu = process.cpuUsage();
  const started = performance.now();
  let streamingAt = 0;
  let confirmedAt = 0;
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
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(MAX_UNACKED|FORWARD_|CHANGE_LOG_)/.test(k))),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout!.on('data', () => {});
  const end = parseLsn(endLsn);
  let peakRssMb = 0;
  let cpuAtStreaming = 0;
  let cpuAtEnd = 0;
  const applications = ['edgeplane-replicator', 'edgeplane-replicator-writer', 'edgeplane-replicator-change-logs'];
  try {
    for (let tick = 0; ; tick++) {
      await new Promise((r) => setTimeout(r, 20));
      if (!streamingAt) {
        const [active] = await sql`select 1 from pg_replication_slots where slot_name = ${slot} and active`;
        if (active) {
          streamingAt = performance.now();
          cpuAtStreaming = CpuSampler.read(child.pid!) ?? 0;
        }
      }
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
        peakRssMb = Math.max(peakRssMb, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
      } catch {
        // not on Linux
      }
      if (tick % 10 === 0) await sampler.sample(applications);
      const [row] = await sql<{ lsn: string | null }[]>`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = ${slot}`;
      if (!confirmedAt && row?.lsn && parseLsn(row.lsn) >= end) confirmedAt = performance.now();
      if (confirmedAt && received >= expected) break;
    }
    await sampler.sample(applications);
    cpuAtEnd = CpuSampler.read(child.pid!) ?? 0;
  } finally {
    child.kill('SIGKILL');
    sink.close();
  }
  const done = performance.now();
  const [logged] = await sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
  console.log(`edgeplane replicator: ${fmt(received)} changes forwarded, ${fmt(logged!.n)} change_logs rows, acked ${endLsn}`);
  const cpu = sampler.totals();
  // The process's CPU from streaming on (start-up compiles TypeScript).
  if (cpuAtEnd > 0) cpu['replicator process'] = cpuAtEnd - cpuAtStreaming;
  const own = process.cpuUsage(benchCpu);
  cpu['bench process (sink, polling)'] = (own.user + own.system) / 1e6;
  return { totalMs: done - started, confirmedMs: confirmedAt - streamingAt, streamingMs: done - streamingAt, peakRssMb: Math.round(peakRssMb), cpu };
}

/** The rows the replicator logged, COPYed again into an empty table with change_logs's columns and indexes. */
async function changeLogsAlone(sql: Sql, url: string): Promise<{ rows: number; ms: number }> {
  // As the replicator sends them: compact JSON (jsonb's text has spaces), backslashes doubled for COPY.
  const copyJson = (json: string | null) => (json === null ? '\\N' : JSON.stringify(JSON.parse(json)).replaceAll('\\', '\\\\'));
  const logged = await sql<{ account_id: string; lsn: string; seq: number; xid: string; table_name: string; op: string; old: string | null; data: string | null; vsn: number }[]>`
    select account_id::text, lsn, seq, xid::text, table_name, op, old_data::text as old, data::text as data, vsn
    from change_logs order by lsn::pg_lsn, seq`;
  const rows = logged.map((r) => ({ line: [r.account_id, r.lsn, r.seq, r.xid, r.table_name, r.op, copyJson(r.old), copyJson(r.data), r.vsn].join('\t') }));
  await sql`create table bench_change_logs (like change_logs including all)`;
  await sql`checkpoint`;
  const lane = postgres(url, withNoDelay({ max: 1, onnotice: () => {} }));
  const started = performance.now();
  try {
    for (let i = 0; i < rows.length; i += 2000) {
      const text = `${rows
        .slice(i, i + 2000)
        .map((r) => r.line)
        .join('\n')}\n`;
      await copyIn(lane, 'copy bench_change_logs (account_id, lsn, seq, xid, table_name, op, old_data, data, vsn) from stdin', text);
    }
  } finally {
    await lane.end();
  }
  const ms = performance.now() - started;
  await sql`drop table bench_change_logs`;
  console.log(`\nPostgres alone: COPY of ${fmt(rows.length)} change_logs rows (2000 a statement, one connection): ${secs(ms)} s`);
  return { rows: rows.length, ms };
}

await main();
