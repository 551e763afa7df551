import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import type { Sql } from 'postgres';
import { createAccount } from './edge-db.ts';
import { websocketUrl } from './edge-devices.ts';
import { summarizeProfile, WorkerProfiler } from './edge-profile.ts';
import { fmt, ms, percentile, sleep } from './edge-stats.ts';
import { startBenchDatabase, startBenchWorker, type BenchDatabase } from './bench-stack.ts';
import { cpuDelta, cpuSample, memory, processes, type RunningWorker } from './edge-worker.ts';
import { deviceAddress, SocketHolders } from '../test/support/socket-holders.ts';
import { flag, numArg } from './bench-args.ts';

const DEVICES = numArg('devices', 10_000);
const CHANGED = numArg('changed', 100);
const HOLDERS = numArg('holders', 4);
const IN_FLIGHT = numArg('in-flight', 256);
const ECHO = flag('echo');
const PROFILE = flag('profile');
/**
 * Devices connect past Miniflare's entry worker (the Worker's direct port), each sending the
 * `cf-connecting-ip` that Cloudflare's front line would set: in production that front line runs
 * on Cloudflare's machines, while locally the entry worker copies every upgrade in JavaScript on
 * the same workerd thread as the Worker and its object.
 */
const DIRECT = flag('direct');
/** --relay-max-sockets N: every device on relays of N sockets (RELAY_PLACEMENT=always), the storm of a large account. */
const RELAY_MAX_SOCKETS = numArg('relay-max-sockets', 0);
/** Time for the object to handle the closes of a storm's sockets before the next storm. */
const SETTLE_MS = 5_000;

const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;
const say = (line: string) => console.log(line);

async function written(sql: Sql, accountId: string, since: Date): Promise<{ rows: number; statements: number }> {
  const [r] = await sql<{ rows: number; statements: number }[]>`
    select count(*)::int as rows, count(distinct xmin::text)::int as statements
    from clients where account_id = ${accountId} and updated_at >= ${since}`;
  return r!;
}

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${load()}`);
  let db: BenchDatabase | undefined;
  let worker: RunningWorker | undefined;
  let holders: SocketHolders | undefined;
  try {
    // Room for a connection per connect, as the code before batching opened.
    db = await startBenchDatabase('storm', { maxConnections: 2000, pool: 2 });
    const { sql, postmaster, stamp } = db;
    const vars: Record<string, string> = RELAY_MAX_SOCKETS > 0 ? { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: String(RELAY_MAX_SOCKETS) } : {};
    worker = await startBenchWorker(db, 'storm', { echo: ECHO, direct: DIRECT, vars });
    const account = await createAccount(sql, 'storm', { actors: DEVICES });
    const base = DIRECT ? worker.changesUrl : worker.url;
    const address = (i: number) => (DIRECT ? { address: deviceAddress(i % 62_500, Math.floor(i / 62_500)) } : {});
    const devices = (version: (i: number) => string) =>
      account.clientTokens.map((t, i) => ({ url: websocketUrl(base, 'client', t, { externalId: `storm-${i}`, version: version(i) }), ...address(i) }));
    holders = await SocketHolders.spawn(HOLDERS);
    say(
      `${fmt(DEVICES)} clients of one account over ${HOLDERS} holder processes, ${IN_FLIGHT} handshakes in flight each, ${DIRECT ? "past Miniflare's entry worker (direct port)" : "through Miniflare's entry worker"}${RELAY_MAX_SOCKETS > 0 ? `, every device on relays of ${fmt(RELAY_MAX_SOCKETS)}` : ''}`,
    );
    const hydrating = Date.now();
    const first = await holders.connectAll(devices(() => '1.4.2').slice(0, 1), 1, false);
    await holders.close();
    say(`  one device alone (hydrates the object): init after ${ms(first.initAt[0]! - hydrating)}`);
    const storms: Array<{ label: string; version: (i: number) => string; changed: number }> = [
      { label: `1. ${fmt(DEVICES)} devices at once, all but the first new`, version: () => '1.4.2', changed: DEVICES - 1 },
      { label: `2. reconnect, ${fmt(CHANGED)} changed (new version)`, version: (i) => (i < CHANGED ? '1.4.3' : '1.4.2'), changed: CHANGED },
      { label: '3. reconnect, none changed', version: (i) => (i < CHANGED ? '1.4.3' : '1.4.2'), changed: 0 },
    ];
    const profiler = PROFILE ? await WorkerProfiler.connect(worker.inspectorPort) : undefined;
    for (const [n, storm] of storms.entries()) {
      const profiled = profiler && n === storms.length - 1;
      if (profiled) await profiler.start();
      const procs = processes(worker, postmaster);
      const [clock] = await sql<{ now: Date }[]>`select now()`;
      const before = cpuSample(procs);
      const startedAt = Date.now();
      const result = await holders.connectAll(devices(storm.version), IN_FLIGHT, false);
      if (result.failed > 0) throw new Error(`${result.failed} devices got no init: ${result.firstError}`);
      const after = cpuSample(procs);
      const times = result.initAt.map((at) => at - startedAt);
      const w = await written(sql, account.id, clock!.now);
      say(`\n${storm.label}  (${load()})`);
      say(
        `  all ${fmt(times.length)} init within ${ms(Math.max(...times))} (${fmt(times.length / (Math.max(...times) / 1000))}/s); p50 ${ms(percentile(times, 50))}, p99 ${ms(percentile(times, 99))}; ${result.retries} retried`,
      );
      say(`  Postgres: ${fmt(w.rows)} clients rows written (devices changed: ${fmt(storm.changed)}) by ${fmt(w.statements)} statements`);
      say(`  ${cpuDelta(before, after)}`);
      say(`  ${memory(procs)}`);
      if (profiled) {
        const file = path.join(tmpdir(), `edgeplane-bench-storm-${stamp}.cpuprofile`);
        say(`  profile of the Worker's isolate (${file}):`);
        for (const l of summarizeProfile(await profiler.stop(file))) say(`    ${l}`);
      }
      await holders.close();
      await sleep(SETTLE_MS);
    }
    profiler?.close();
  } catch (err) {
    if (worker) for (const l of worker.lines.slice(-60)) console.error(`  [miniflare] ${l}`);
    throw err;
  } finally {
    await holders?.stop();
    await worker?.stop();
    await db?.stop();
  }
}

await main();
