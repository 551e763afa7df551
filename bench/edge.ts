/**
 * `npm run bench:edge [-- --runtime miniflare|wrangler --clients 5000 --rounds 6 --bulk 10000
 *   --bulk-connected 500 --bulk-rounds 3 --flows 1000 --gateways 2 --only fanout,bulk,flows,cache
 *   --wakes 1 --profile --through-entry --echo]`
 *
 * The edge (the Worker and its AccountDO) in local workerd, in a child process: by default the
 * local Worker `npm start` runs (dev/worker.ts: the real bundle on the Miniflare API), or `wrangler dev` (--runtime
 * wrangler), whose ProxyWorker cannot hold 5,000 sockets under this machine's fd limit. An
 * embedded Postgres sits behind the Hyperdrive binding (or DATABASE_URL); the `ws` package plays
 * the devices:
 * 1. apply + fan-out of one policy change to 5,000 client sockets of one account, next to a plain
 *    `ws` server's broadcast to as many sockets of the same client process, and once more after
 *    the object hibernated;
 * 2. a 10k-membership bulk delete (and insert) in one batch with some sockets connected;
 * 3. cache bytes per record against the full-row JSON the replicator sends (plain Node);
 * 4. create_flow -> authorize_flow latency, and revocation fan-out for 1,000 live flows;
 * 5. one-change batches one after the other: latency and the Worker's CPU per batch.
 *
 * --profile adds CPU profiles of the Worker's isolate (through the inspector) of 300 connects, a
 * fan-out round (warm and after hibernation), a bulk batch, create_flow and a revocation, run in
 * addition to the measured rounds. Each part's sockets stay open while the later parts run.
 * Change batches go to the local Worker's direct port, past Miniflare's entry worker, as
 * `npm start`'s replicator posts them; --through-entry sends them through it too, as devices connect.
 *
 * Not a test: it prints figures for bench/RESULTS.md.
 */
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { cacheBytes } from './edge-cache-bytes.ts';
import type { Device } from './edge-devices.ts';
import { bulkMemberships, policyFanout, type Bench } from './edge-fanout.ts';
import { smallBatches } from './edge-batch.ts';
import { flows } from './edge-flows.ts';
import { summarizeProfile, WorkerProfiler } from './edge-profile.ts';
import { flag, numArg, only, textArg } from './bench-args.ts';
import { startBenchDatabase, startBenchWorker, type BenchDatabase } from './bench-stack.ts';
import { cpuSample, memory, processes, type Processes, type Runtime, type RunningWorker } from './edge-worker.ts';

const CLIENTS = numArg('clients', 5000);
const ROUNDS = numArg('rounds', 6);
/** Rounds after the object hibernated (each after 15 s idle). */
const WAKES = numArg('wakes', 1);
const BULK = numArg('bulk', 10_000);
const BULK_CONNECTED = numArg('bulk-connected', 500);
const BULK_ROUNDS = numArg('bulk-rounds', 3);
const FLOWS = numArg('flows', 1000);
const GATEWAYS = numArg('gateways', 2);
const BATCHES = numArg('batches', 1000);
const ECHO = flag('echo');
const PROFILE = flag('profile');
/** Change batches through Miniflare's entry worker too, as devices connect (the local Worker only). */
const THROUGH_ENTRY = flag('through-entry');
const RUNTIME = textArg<Runtime>('runtime', 'miniflare');
if (RUNTIME !== 'miniflare' && RUNTIME !== 'wrangler') throw new Error('--runtime is miniflare or wrangler');

const say = (line: string) => console.log(line);

function versions(): string {
  const fromHere = createRequire(import.meta.url);
  // The miniflare the local Worker runs (the version wrangler pins too), and its workerd.
  const fromMiniflare = createRequire(fromHere.resolve('miniflare/package.json'));
  const version = (req: NodeRequire, name: string) => (req(`${name}/package.json`) as { version: string }).version;
  return `wrangler ${version(fromHere, 'wrangler')}, miniflare ${version(fromHere, 'miniflare')}, workerd ${version(fromMiniflare, 'workerd')}, ws ${version(fromHere, 'ws')}`;
}

const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}, ${versions()}; ${load()}`);
  let db: BenchDatabase | undefined;
  let worker: RunningWorker | undefined;
  const devices: Device[] = [];
  try {
    // Room for the connects of the fan-out's thousands of devices.
    db = await startBenchDatabase('edge', { maxConnections: 2000 });
    const { sql, postmaster, stamp } = db;
    const started = Date.now();
    worker = await startBenchWorker(db, 'edge', {
      runtime: RUNTIME,
      echo: ECHO,
      // Part 4 measures one client's sequential create_flow: no per-socket rate limit.
      vars: { FLOW_RATE_PER_SECOND: '0' },
      // Batches as `npm start`'s replicator posts them, past Miniflare's entry worker (unless --through-entry).
      direct: !THROUGH_ENTRY,
    });
    say(
      `${RUNTIME === 'wrangler' ? 'wrangler dev' : 'Miniflare (real bundle)'} on ${worker.url} ready in ${((Date.now() - started) / 1000).toFixed(1)} s (state in ${worker.persistTo})`,
    );
    let procs: Processes | undefined;
    const profiler = PROFILE ? await WorkerProfiler.connect(worker.inspectorPort) : undefined;
    const b: Bench = {
      sql,
      worker,
      procs: () => (procs ??= processes(worker!, postmaster)),
      say: (line) => say(line.startsWith('\n') ? `${line}  (${load()})` : line),
      profile:
        profiler &&
        (async (label, fn) => {
          const before = cpuSample(b.procs());
          await profiler.start();
          try {
            await fn();
          } finally {
            const file = path.join(tmpdir(), `edgeplane-bench-edge-${label.replace(/\W+/g, '-')}-${stamp}.cpuprofile`);
            const lines = summarizeProfile(await profiler.stop(file));
            const cpu = Math.round(cpuSample(b.procs()).worker - before.worker);
            say(`  profile of the Worker's isolate, ${label} (${file}); the workerd process used ${cpu} ms of CPU meanwhile:`);
            for (const l of lines) say(`    ${l}`);
          }
        }),
    };
    if (only('fanout')) devices.push(...(await policyFanout(b, CLIENTS, ROUNDS, true, WAKES)).devices);
    if (only('bulk')) devices.push(...(await bulkMemberships(b, BULK, BULK_CONNECTED, BULK_ROUNDS)).devices);
    if (only('flows')) devices.push(...(await flows(b, FLOWS, GATEWAYS)).devices);
    if (only('batch')) await smallBatches(b, BATCHES);
    if (procs) say(`\n${memory(procs)}; ${devices.length} sockets open`);
    profiler?.close();
    if (only('cache')) await cacheBytes(sql, say);
  } catch (err) {
    if (worker) for (const l of worker.lines.slice(-60)) console.error(`  [wrangler] ${l}`);
    throw err;
  } finally {
    for (const d of devices) d.close();
    await worker?.stop();
    await db?.stop();
  }
}

await main();
