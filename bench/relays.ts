/**
 * `npm run bench:relays [-- --clients 8000 --relays 4 --single 5000 --flow-clients 200 --rounds 3 --only fanout,flows]`
 *
 * Relay objects (docs/architecture.md#relays) in local workerd (the real bundle on the Miniflare
 * API, as bench:edge), one embedded Postgres, the `ws` package as devices, in one run:
 * 1. one policy change fanned out to `--clients` sockets of one account spread over `--relays`
 *    relays (RELAY_PLACEMENT=always, RELAY_MAX_SOCKETS = clients / relays), with a plain `ws`
 *    broadcast to as many sockets of this process as the baseline, then once after hibernation;
 * 2. the same with one object holding `--single` sockets (the default placement);
 * 3. create_flow -> authorize_flow with the client and the gateway on different relays
 *    (RELAY_MAX_SOCKETS = flow clients / 2: the clients fill two relays, the gateway a third),
 *    against the single object.
 * The sockets of this process and the baseline's add up: clients + baseline stay under the
 * machine's 20,000 open files per process.
 *
 * Not a test: it prints figures for bench/RESULTS.md.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { startEmbeddedPostgres, type EmbeddedCluster } from '../dev/embedded-postgres.ts';
import { freePort } from '../dev/ports.ts';
import { migrate } from '../migrations/migrate.ts';
import type { Device } from './edge-devices.ts';
import { policyFanout, type Bench } from './edge-fanout.ts';
import { flows } from './edge-flows.ts';
import { processes, startWorker, type Processes, type RunningWorker } from './edge-worker.ts';

const argv = process.argv.slice(2);
const num = (name: string, fallback: number) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const onlyArg = argv.indexOf('--only') >= 0 ? argv[argv.indexOf('--only') + 1]!.split(',') : null;
const only = (part: string) => onlyArg === null || onlyArg.includes(part);
const CLIENTS = num('clients', 8000);
const RELAYS = num('relays', 4);
const SINGLE = num('single', 5000);
const FLOW_CLIENTS = num('flow-clients', 200);
const ROUNDS = num('rounds', 3);

const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;
const say = (line: string) => console.log(line.startsWith('\n') ? `${line}  (${load()})` : line);

/** One Worker with these variables for the duration of `fn`, its sockets closed after it. */
async function withWorker(sql: Sql, url: string, postmaster: number | undefined, label: string, vars: Record<string, string>, fn: (b: Bench) => Promise<Device[]>): Promise<void> {
  const stamp = `${Date.now()}-${randomBytes(3).toString('hex')}`;
  const persistTo = path.join(tmpdir(), `edgeplane-bench-relays-state-${stamp}`);
  let worker: RunningWorker | undefined;
  let devices: Device[] = [];
  try {
    worker = await startWorker({
      runtime: 'miniflare',
      port: await freePort(),
      inspectorPort: await freePort(),
      databaseUrl: url,
      secret: randomBytes(24).toString('hex'),
      persistTo,
      echo: false,
      // Sequential create_flow from one client: no per-socket rate limit.
      vars: { FLOW_RATE_PER_SECOND: '0', ...vars },
      directPort: await freePort(),
    });
    say(
      `\n== ${label}: ${
        Object.entries(vars)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ') || 'default placement'
      }`,
    );
    let procs: Processes | undefined;
    const w = worker;
    devices = await fn({ sql, worker: w, procs: () => (procs ??= processes(w, postmaster)), say, profile: undefined });
  } finally {
    for (const d of devices) d.close();
    await worker?.stop();
    await rm(persistTo, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${load()}`);
  const stamp = `${Date.now()}-${randomBytes(3).toString('hex')}`;
  let cluster: EmbeddedCluster | undefined;
  try {
    if (!process.env.DATABASE_URL) {
      cluster = await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-bench-relays-pg-${stamp}`), settings: { max_connections: '2000' } });
    }
    const url = process.env.DATABASE_URL ?? cluster!.url;
    const sql = postgres(url, { max: 4, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
    await migrate(sql);
    const postmaster = cluster ? Number(readFileSync(path.join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) : undefined;
    const perRelay = String(Math.ceil(CLIENTS / RELAYS));
    if (only('fanout')) {
      await withWorker(
        sql,
        url,
        postmaster,
        `${CLIENTS} sockets over ${RELAYS} relays`,
        { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: perRelay },
        // Past 9,000 clients this process cannot also hold the baseline's sockets: the one-object part's baseline stands for it.
        async (b) => (await policyFanout(b, CLIENTS, ROUNDS, CLIENTS <= 9_000)).devices,
      );
      await withWorker(sql, url, postmaster, `${SINGLE} sockets on one object`, {}, async (b) => (await policyFanout(b, SINGLE, ROUNDS)).devices);
    }
    if (only('flows')) {
      const half = String(Math.ceil(FLOW_CLIENTS / 2));
      await withWorker(
        sql,
        url,
        postmaster,
        'flows, client and gateway on different relays',
        { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: half },
        async (b) => (await flows(b, FLOW_CLIENTS, 1)).devices,
      );
      await withWorker(sql, url, postmaster, 'flows, one object', {}, async (b) => (await flows(b, FLOW_CLIENTS, 1)).devices);
    }
    await sql.end();
  } finally {
    await cluster?.stop();
  }
}

await main();
