/**
 * `npm run bench:replicator [-- --backlog 200000]`
 *
 * 1. Decoder throughput: our pgoutput decoder against pg-logical-replication's PgoutputParser on the
 *    same bytes, captured from a real server (protocol 1, which both read).
 * 2. Catch-up: a backlog drained by the replicator process (decode, change_logs, forward to a local
 *    sink answering 200, acknowledge) against `pg_recvlogical` reading the same backlog to /dev/null.
 *
 * Not a test: it prints figures for bench/RESULTS.md.
 */
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { PgoutputParser } from 'pg-logical-replication/dist/output-plugins/pgoutput/pgoutput-parser.js';
import { migrate } from '../migrations/migrate.ts';
import { startEmbeddedPostgres } from '../replicator/dev/embedded-postgres.ts';
import { PgoutputDecoder } from '../replicator/pgoutput/decoder.ts';
import { parseLsn } from '../src/lsn.ts';
import { DOMAIN_TABLES } from '../src/tables.ts';
import { writeWorkload } from './capture-workload.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const BACKLOG = arg('backlog', 200_000);
const ACTORS_PER_ACCOUNT = 1000;
const CHANGES_PER_ACCOUNT = 2 * ACTORS_PER_ACCOUNT + 72 + 111 + 111; // see writeWorkload, updates and deletes included
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

async function main(): Promise<void> {
  console.log(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}`);
  const cluster = process.env.DATABASE_URL
    ? undefined
    : await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-bench-${Date.now()}`) });
  const url = process.env.DATABASE_URL ?? cluster!.url;
  const sql = postgres(url, { max: 2, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  try {
    await migrate(sql);
    for (const slot of ['bench_capture', 'bench_peer', 'bench_edgeplane']) {
      await sql`select pg_drop_replication_slot(${slot}) from pg_replication_slots where slot_name = ${slot}`;
    }
    await sql.unsafe(`drop publication if exists edgeplane; create publication edgeplane for table ${DOMAIN_TABLES.join(', ')}`);
    for (const slot of ['bench_capture', 'bench_peer', 'bench_edgeplane']) await sql`select pg_create_logical_replication_slot(${slot}, 'pgoutput')`;

    const started = Date.now();
    let written = 0;
    const accounts = Math.ceil(BACKLOG / CHANGES_PER_ACCOUNT);
    for (let i = 0; i < accounts; i += 10) written += await writeWorkload(sql, { accounts: Math.min(10, accounts - i), actorsPerAccount: ACTORS_PER_ACCOUNT });
    const [end] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
    console.log(`backlog: ${fmt(written)} row changes in ${accounts} accounts, written in ${((Date.now() - started) / 1000).toFixed(1)} s, WAL end ${end!.lsn}`);

    await decoderBench(sql);
    const peer = await recvlogical(url, end!.lsn);
    const ours = await replicatorCatchUp(sql, url, end!.lsn, written);
    console.log('\ncatch-up summary');
    console.log(`  pg_recvlogical:       ${(peer / 1000).toFixed(2)} s  (${fmt(written / (peer / 1000))} changes/s)`);
    console.log(`  edgeplane replicator: ${(ours.streamingMs / 1000).toFixed(2)} s from streaming to acked (${fmt(written / (ours.streamingMs / 1000))} changes/s), ${(ours.totalMs / 1000).toFixed(2)} s including process start`);
    console.log(`  ratio (ours / pg_recvlogical): ${(ours.streamingMs / peer).toFixed(2)}x; replicator peak RSS ${ours.peakRssMb} MB`);
  } finally {
    await sql.end();
    await cluster?.stop();
  }
}

async function decoderBench(sql: Sql): Promise<void> {
  const rows = await sql<{ data: Buffer }[]>`
    select data from pg_logical_slot_get_binary_changes('bench_capture', null, null, 'proto_version', '1', 'publication_names', 'edgeplane')`;
  const messages = rows.map((r) => r.data);
  const changes = messages.filter((m) => m[0] === 0x49 || m[0] === 0x55 || m[0] === 0x44).length;
  const bytes = messages.reduce((n, m) => n + m.length, 0);
  console.log(`\ndecoder: ${fmt(messages.length)} messages, ${fmt(changes)} row changes, ${(bytes / 1e6).toFixed(1)} MB captured`);
  const run = (name: string, decode: () => void) => {
    const rates: number[] = [];
    for (let round = 0; round < 7; round++) {
      const t = performance.now();
      decode();
      rates.push(changes / ((performance.now() - t) / 1000));
    }
    rates.sort((a, b) => a - b);
    const median = rates[3]!;
    console.log(`  ${name.padEnd(38)} median ${fmt(median)} changes/s (best ${fmt(rates[6]!)}, worst ${fmt(rates[0]!)})`);
    return median;
  };
  const ours = run('edgeplane PgoutputDecoder', () => {
    const d = new PgoutputDecoder();
    for (const m of messages) d.decode(m);
  });
  const peer = run('pg-logical-replication PgoutputParser', () => {
    const p = new PgoutputParser();
    for (const m of messages) p.parse(m);
  });
  console.log(`  ratio: ${(ours / peer).toFixed(2)}x`);
}

async function recvlogical(url: string, endLsn: string): Promise<number> {
  const started = performance.now();
  await promisify(execFile)('pg_recvlogical', [
    '-d', url, '--slot', 'bench_peer', '--start', '--endpos', endLsn, '--no-loop', '-f', '/dev/null',
    '-o', 'proto_version=2', '-o', 'publication_names=edgeplane', '-o', 'streaming=on',
  ]);
  const ms = performance.now() - started;
  console.log(`\npg_recvlogical -P pgoutput to /dev/null: ${(ms / 1000).toFixed(2)} s`);
  return ms;
}

async function replicatorCatchUp(sql: Sql, url: string, endLsn: string, expected: number): Promise<{ totalMs: number; streamingMs: number; peakRssMb: number }> {
  let received = 0;
  const sink = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      // Counting is all this sink does; a real Worker's cost is measured by bench:edge.
      received += body.split('"lsn":').length - 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"applied":0,"skipped":0}');
    });
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const started = performance.now();
  let streamingAt = 0;
  const child = spawn(process.execPath, ['--import', 'tsx', 'replicator/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      DATABASE_URL: url,
      EDGE_URL: `http://127.0.0.1:${(sink.address() as AddressInfo).port}`,
      REPLICATOR_SECRET: 'bench-secret-0123456789',
      SLOT_NAME: 'bench_edgeplane',
      REPLICATOR_PORT: '0',
      LOG_LEVEL: 'warn',
      ...(process.env.MAX_UNACKED ? { MAX_UNACKED: process.env.MAX_UNACKED } : {}),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout!.on('data', () => {});
  const end = parseLsn(endLsn);
  let peakRssMb = 0;
  try {
    for (;;) {
      await new Promise((r) => setTimeout(r, 20));
      if (!streamingAt) {
        const [active] = await sql`select 1 from pg_replication_slots where slot_name = 'bench_edgeplane' and active`;
        if (active) streamingAt = performance.now();
      }
      try {
        const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
        peakRssMb = Math.max(peakRssMb, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
      } catch {
        // not on Linux
      }
      const [row] = await sql<{ lsn: string | null }[]>`select confirmed_flush_lsn::text as lsn from pg_replication_slots where slot_name = 'bench_edgeplane'`;
      if (row?.lsn && parseLsn(row.lsn) >= end && received >= expected) break;
    }
  } finally {
    child.kill('SIGKILL');
    sink.close();
  }
  const done = performance.now();
  const [logged] = await sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
  console.log(`edgeplane replicator: ${fmt(received)} changes forwarded, ${fmt(logged!.n)} change_logs rows, acked ${endLsn}`);
  return { totalMs: done - started, streamingMs: done - streamingAt, peakRssMb: Math.round(peakRssMb) };
}

await main();
