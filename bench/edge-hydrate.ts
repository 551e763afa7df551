/**
 * `npm run bench:hydrate [-- --rows 250000 --profile --echo]`
 *
 * Hydration of a large account (issue 14): `--rows` live rows of one account in an embedded
 * Postgres, a quarter each actors, group memberships, client tokens and clients (one per actor),
 * and the Worker in Miniflare with the real bundle (bench/edge-miniflare.ts). Measured twice:
 * 1. the object's first hydration, set off by an empty change batch (nothing to apply);
 * 2. a re-hydration of the live object (the signed rehydrate route), its model still in memory.
 * For each: the request's time; the isolate's used heap through the inspector before (after a
 * full collection), at its highest among samples taken every 50 ms meanwhile (the inspector
 * answers only between the isolate's tasks, so a peak inside one long task is missed), and after
 * (collected: what the model keeps); and workerd's peak RSS meanwhile (VmHWM, reset before each).
 * --profile adds a CPU profile of the isolate during the first (no heap samples are taken then).
 *
 * Not a test: it prints figures for bench/RESULTS.md.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Sql } from 'postgres';
import { SIGNATURE_HEADER, signBody } from '../src/signature.ts';
import { createAccount } from './edge-db.ts';
import { summarizeProfile, WorkerProfiler } from './edge-profile.ts';
import { fmt, ms } from './edge-stats.ts';
import { startBenchDatabase, startBenchWorker, type BenchDatabase } from './bench-stack.ts';
import { cpuDelta, cpuSample, processes, type RunningWorker } from './edge-worker.ts';
import { flag, numArg } from './bench-args.ts';

const ROWS = numArg('rows', 250_000);
const ECHO = flag('echo');
const PROFILE = flag('profile');

const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;
const say = (line: string) => console.log(line);

/** One client per actor, inserted in bulk (the object loads them by hydration). */
async function insertClients(sql: Sql, accountId: string, actorIds: readonly string[]): Promise<void> {
  for (let i = 0; i < actorIds.length; i += 1000) {
    const rows = actorIds.slice(i, i + 1000).map((actor, k) => ({
      account_id: accountId,
      actor_id: actor,
      external_id: `device-${i + k}`,
      name: `Device ${i + k}`,
      public_key: randomBytes(32).toString('base64'),
      last_seen_version: '1.4.2',
    }));
    await sql`insert into clients ${sql(rows)}`;
  }
}

async function postSigned(worker: RunningWorker, route: string, body: string): Promise<number> {
  const signature = await signBody(worker.secret, body, Math.floor(Date.now() / 1000));
  const started = performance.now();
  const res = await fetch(`${worker.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature }, body });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${route}: ${res.status} ${text.slice(0, 300)}`);
  return performance.now() - started;
}

/**
 * The isolate's used heap: workerd serves the inspector only while the isolate runs something, so
 * a /healthz request to the Worker (the same isolate) goes with each question.
 */
async function heapMb(worker: RunningWorker, profiler: WorkerProfiler, collect = false): Promise<number> {
  for (let i = 0; i < 6; i++) {
    const measured = profiler.heapMb(collect);
    // Only a wake-up: a keep-alive connection the server closed meanwhile does not matter.
    await fetch(`${worker.url}/healthz`)
      .then((r) => r.text())
      .catch(() => '');
    const mb = await measured;
    if (!Number.isNaN(mb)) return mb;
  }
  return NaN;
}

const vm = (pid: number, field: 'VmRSS' | 'VmHWM') => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;

async function measure(
  label: string,
  worker: RunningWorker,
  profiler: WorkerProfiler,
  pid: number,
  postmaster: number | undefined,
  run: () => Promise<number>,
  profile = false,
): Promise<void> {
  const before = await heapMb(worker, profiler, true);
  const rssBefore = vm(pid, 'VmRSS');
  // Resets the peak RSS to the current one (proc(5), clear_refs).
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const procs = processes(worker, postmaster);
  const cpu = cpuSample(procs);
  let peak = before;
  let sampling = !profile;
  if (profile) await profiler.start();
  const sampler = (async () => {
    while (sampling) {
      const mb = await heapMb(worker, profiler);
      if (mb > peak) peak = mb;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const took = await run();
  sampling = false;
  await sampler;
  const profiled = profile ? summarizeProfile(await profiler.stop(path.join(tmpdir(), `edgeplane-bench-hydrate-${Date.now()}.cpuprofile`))) : [];
  const cpuAfter = cpuSample(procs);
  const after = await heapMb(worker, profiler, true);
  say(`\n${label}  (${load()})`);
  say(`  ${ms(took)}`);
  say(
    `  isolate heap: ${before.toFixed(1)} MB before, highest sample ${peak.toFixed(1)} MB (+${(peak - before).toFixed(1)}), ${after.toFixed(1)} MB after a collection (+${(after - before).toFixed(1)})`,
  );
  say(`  workerd RSS: ${rssBefore.toFixed(0)} MB before, peak ${vm(pid, 'VmHWM').toFixed(0)} MB (+${(vm(pid, 'VmHWM') - rssBefore).toFixed(0)})`);
  say(`  ${cpuDelta(cpu, cpuAfter)}`);
  for (const l of profiled) say(`    ${l}`);
}

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${load()}`);
  let db: BenchDatabase | undefined;
  let worker: RunningWorker | undefined;
  try {
    db = await startBenchDatabase('hydrate', { pool: 2 });
    const { sql, postmaster } = db;
    const quarter = Math.floor(ROWS / 4);
    const started = Date.now();
    const account = await createAccount(sql, 'large', { actors: quarter });
    await insertClients(
      sql,
      account.id,
      account.actors.map((a) => a.id as string),
    );
    const [count] = await sql<{ n: number }[]>`
      select (select count(*) from actors where account_id = ${account.id}) + (select count(*) from actor_group_memberships where account_id = ${account.id})
        + (select count(*) from tokens where account_id = ${account.id}) + (select count(*) from clients where account_id = ${account.id}) as n`;
    say(`one account of ${fmt(Number(count!.n))} rows (+ a group, a site, a resource, its connection and policy), written in ${ms(Date.now() - started)}`);
    await sql`vacuum analyze`;
    worker = await startBenchWorker(db, 'hydrate', { echo: ECHO });
    const profiler = await WorkerProfiler.connect(worker.inspectorPort);
    // Any object makes the Worker's workerd known (processes() finds it by its SQLite files).
    await postSigned(worker, `/v1/accounts/${crypto.randomUUID()}/changes`, JSON.stringify({ changes: [] }));
    const pid = processes(worker, postmaster).worker;
    await measure(
      '1. first hydration (an empty batch)',
      worker,
      profiler,
      pid,
      postmaster,
      () => postSigned(worker!, `/v1/accounts/${account.id}/changes`, JSON.stringify({ changes: [] })),
      PROFILE,
    );
    await measure('2. re-hydration of the live object (rehydrate route)', worker, profiler, pid, postmaster, () =>
      postSigned(worker!, `/v1/accounts/${account.id}/rehydrate`, '{}'),
    );
    profiler.close();
  } catch (err) {
    if (worker) for (const l of worker.lines.slice(-60)) console.error(`  [miniflare] ${l}`);
    throw err;
  } finally {
    await worker?.stop();
    await db?.stop();
  }
}

await main();
