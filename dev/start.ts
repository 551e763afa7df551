/**
 * `npm start` (docs/protocol.md#local-run): PostgreSQL (embedded, or DATABASE_URL), migrations, the demo
 * account, the replicator and the local Worker (dev/worker.ts: the bundle a deploy uploads, on the
 * Miniflare API), then `.edgeplane/dev.json`. Ctrl-C or SIGTERM stops the replicator first (it
 * drains into the Worker), then the Worker, drops the slot this local run uses, and stops the
 * embedded server.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { migrate } from '../migrations/migrate.ts';
import { errorMessage } from '../src/errors.ts';
import type { Child } from './child.ts';
import { ensureDemo } from './demo.ts';
import { BUNDLE_DIR, DEV_JSON, ensureLocalDir, LOCAL_DIR, PG_DIR, removeFile, WORKER_DIR, writeDevVars, writeJson, type DevJson } from './local-files.ts';
import { LocalPostgresError, startLocalPostgres, type LocalPostgres } from './local-postgres.ts';
import { ConfigProblem, parseLocalConfig, type LocalConfig } from './local-config.ts';
import { freePort, portInUse } from './ports.ts';
import { formatReplicatorLine, startReplicatorProcess } from './replicator-child.ts';
import { objectsDir, placeObjectStorage } from './object-storage.ts';
import { databaseIdentity, dropSlot, prepareWorkerState, PROCESSES_JSON, recordProcesses, slotExists, stopLeftovers } from './local-state.ts';
import { ROOT } from './root.ts';
import { buildWorkerBundle, isWorkerNoise, startWorkerProcess, waitForHttp } from './worker-process.ts';
import { survivePipeReaders } from './broken-pipes.ts';

const say = (line: string) => process.stdout.write(`${line}\n`);
const warn = (line: string) => process.stderr.write(`${line}\n`);
/** A path under the current folder relative to it, others as they are. */
const rel = (p: string) => (p.startsWith(`${process.cwd()}${path.sep}`) ? path.relative(process.cwd(), p) : p);

interface Running {
  pg?: LocalPostgres;
  sql?: Sql;
  replicator?: Child;
  worker?: Child;
  /** Drop the slot on a clean stop: always for the embedded server; for DATABASE_URL only when this run created it. */
  dropSlotOnStop: boolean;
}

const running: Running = { dropSlotOnStop: false };
const abort = new AbortController();
let ready = false;
let shuttingDown = false;

class Aborted extends Error {
  override name = 'Aborted';
}

function checkAbort(): void {
  if (abort.signal.aborted) throw new Aborted('stopped during start-up');
}

/** Child output: hidden until everything is ready (shown if start-up fails), then printed with a prefix. */
function outputSink(name: string, format: (line: string) => string | null) {
  const early: string[] = [];
  return {
    early,
    onLine(line: string) {
      const shown = format(line);
      if (shown === null) return;
      if (!ready) {
        early.push(`[${name}] ${shown}`);
        if (early.length > 200) early.shift();
      } else say(`[${name}] ${shown}`);
    },
  };
}

async function start(config: LocalConfig): Promise<void> {
  await ensureLocalDir();
  await removeFile(DEV_JSON);
  const leftovers = await stopLeftovers();
  if (leftovers.length > 0) say(`Stopped what an earlier run that was killed left running: ${leftovers.join(', ')}.`);
  const ports: [string, number][] = [
    ['PORT', config.port],
    ['REPLICATOR_PORT', config.replicatorPort],
  ];
  // A server of this folder still running (its run was killed) is ours: startLocalPostgres restarts it.
  if (!config.databaseUrl && !existsSync(path.join(PG_DIR, 'postmaster.pid'))) ports.push(['EDGEPLANE_PG_PORT', config.pgPort]);
  for (const [name, port] of ports) {
    if (await portInUse(port)) throw new ConfigProblem(`port ${port} (${name}) is in use: is another \`npm start\` running? Stop it, or set ${name} to a free port.`);
  }
  // The current code, on every start, built as `wrangler deploy` builds it; meanwhile the database starts.
  const bundle = buildWorkerBundle(BUNDLE_DIR);
  bundle.catch(() => undefined);

  let databaseUrl = config.databaseUrl;
  if (!databaseUrl) {
    say(`Starting PostgreSQL on 127.0.0.1:${config.pgPort} (data in ${rel(PG_DIR)})...`);
    running.pg = await startLocalPostgres({ dataDir: PG_DIR, port: config.pgPort });
    const moved = running.pg.relocated;
    if (moved) say(`  its files are in ${path.dirname(running.pg.dataDir)} (${rel(moved.link)} and ${rel(moved.logLink)} link there)${moved.reason ? `: ${moved.reason}` : ''}.`);
    databaseUrl = running.pg.url;
    running.dropSlotOnStop = true;
    checkAbort();
  } else {
    say(`Using the database at DATABASE_URL (${new URL(databaseUrl).host}).`);
  }
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {}, connect_timeout: 10 });
  running.sql = sql;
  const [settings] = await sql<{ wal_level: string }[]>`select current_setting('wal_level') as wal_level`;
  if (settings!.wal_level !== 'logical') {
    throw new ConfigProblem(`the database at DATABASE_URL has wal_level=${settings!.wal_level}; the replicator needs wal_level=logical (set it and restart Postgres)`);
  }
  const migrations = await migrate(sql);
  if (migrations.applied.length > 0) say(`Applied migrations: ${migrations.applied.join(', ')}.`);
  const demo = await ensureDemo(sql);
  for (const note of demo.notes) say(note);
  checkAbort();

  const existed = await slotExists(sql, config.slot);
  if (!running.pg && !existed) running.dropSlotOnStop = true;
  const wiped = await prepareWorkerState(await databaseIdentity(sql, databaseUrl), config.slot, existed);
  if (wiped) say(`The objects' local storage starts empty (${wiped}); they load their accounts from Postgres on first use.`);
  const objects = await placeObjectStorage(objectsDir(WORKER_DIR));

  const secret = config.secret ?? randomBytes(24).toString('hex');
  // The Worker gets it in its environment; the file serves an `npm run worker` or `wrangler dev` started by hand beside this run.
  await writeDevVars(secret);
  const workerUrl = `http://127.0.0.1:${config.port}`;
  const replicatorUrl = `http://127.0.0.1:${config.replicatorPort}`;
  // The replicator's way into the Worker: the same Worker without Miniflare's entry worker in front
  // (dev/local-worker.ts), on a port of the system's choosing. Devices use PORT.
  const directPort = await freePort();

  say('Starting the replicator...');
  const replicatorOut = outputSink('replicator', (line) => {
    try {
      const level = (JSON.parse(line) as { level?: string }).level;
      if (level === 'debug' || level === 'trace') return null;
    } catch {
      // Not JSON: show it as it is.
    }
    return formatReplicatorLine(line);
  });
  running.replicator = startReplicatorProcess({
    databaseUrl,
    edgeUrl: `http://127.0.0.1:${directPort}`,
    secret,
    port: config.replicatorPort,
    // Lowest latency for the local run: a batch goes as soon as its account's previous one is
    // answered (changes that arrive meanwhile still batch). bench/RESULTS.md "End to end": the 2 ms
    // default linger was the largest share of the replicator's part at 100 commits/s.
    env: { SLOT_NAME: config.slot, PUBLICATION_NAME: config.publication, FORWARD_LINGER_MS: process.env.FORWARD_LINGER_MS || '0' },
    onLine: replicatorOut.onLine,
  });
  try {
    // Streaming means the slot exists: only then may an object hydrate (its snapshot must not predate the slot).
    await waitForHttp(`${replicatorUrl}/readyz`, running.replicator, 60_000, 'the replicator', abort.signal);
  } catch (err) {
    for (const l of replicatorOut.early) warn(l);
    throw err;
  }

  const where = objects.inMemory ? `${rel(objects.dir)}, a link to ${objects.inMemory} (memory)` : `${rel(objects.dir)} (${objects.onDisk})`;
  say(`Starting the Worker (the Miniflare API; the bundle in ${rel(BUNDLE_DIR)}, the objects' storage in ${where})...`);
  const workerOut = outputSink('worker', (line) => (isWorkerNoise(line) || line.trim() === '' ? null : line));
  running.worker = startWorkerProcess({ port: config.port, directPort, databaseUrl, secret, persistTo: WORKER_DIR, bundle: await bundle, onLine: workerOut.onLine });
  await recordProcesses([
    { name: 'the replicator', pid: running.replicator.pid!, marker: 'replicator/main.ts' },
    { name: 'the Worker', pid: running.worker.pid!, marker: 'dev/worker.ts' },
  ]);
  try {
    await waitForHttp(`${workerUrl}/healthz`, running.worker, 120_000, 'the Worker', abort.signal);
  } catch (err) {
    for (const l of workerOut.early) warn(l);
    throw err;
  }
  checkAbort();

  const dev: DevJson = {
    databaseUrl,
    workerUrl,
    replicatorUrl,
    demo: demo.demo ? { accountId: demo.demo.accountId, clientToken: demo.demo.clientToken, siteToken: demo.demo.siteToken } : null,
  };
  await writeJson(DEV_JSON, dev);
  ready = true;
  printReady(dev, config);
  for (const child of [running.replicator, running.worker]) {
    void child.exited.then((exit) => {
      if (shuttingDown) return;
      warn(`\nThe ${child.name} stopped unexpectedly (code ${exit.code}, signal ${exit.signal}); stopping everything.`);
      void shutdown(1);
    });
  }
}

function printReady(dev: DevJson, config: LocalConfig): void {
  const lines = [
    '',
    'Edgeplane is running.',
    `  Worker      ${dev.workerUrl}  (WebSockets at /v1/client/websocket and /v1/gateway/websocket)`,
    `  Replicator  ${dev.replicatorUrl}/metrics  (slot ${config.slot})`,
    `  Postgres    ${dev.databaseUrl}`,
    `  Written     ${rel(path.join(LOCAL_DIR, 'dev.json'))}`,
    '',
  ];
  if (dev.demo) {
    lines.push(
      `Demo account ${dev.demo.accountId}. In other terminals (README.md walks through more):`,
      "  npm run client -- --demo      # Ada's laptop: prints every access change it is told about",
      '  npm run gateway -- --demo     # the gateway of the Home lab site',
      `  psql ${dev.databaseUrl}`,
      "    update policies set disabled_at = now() where resource_id = (select id from resources where name = 'Wiki');",
      "    update policies set disabled_at = null where resource_id = (select id from resources where name = 'Wiki');",
      '',
    );
  }
  lines.push('Ctrl-C stops everything.', '');
  say(lines.join('\n'));
}

let forced = false;

async function step(what: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (!forced) warn(`while stopping, ${what} failed: ${errorMessage(err)}`);
  }
}

let stopped: Promise<never> | undefined;

/** Stops what runs, once (a failed start-up and a Ctrl-C may both ask). */
function shutdown(code: number): Promise<never> {
  stopped ??= stopAll(code);
  return stopped;
}

async function stopAll(code: number): Promise<never> {
  shuttingDown = true;
  if (ready) say('\nStopping...');
  const { replicator, worker, sql, pg } = running;
  // The replicator first: on SIGTERM it drains what is in flight into the Worker and acknowledges.
  if (replicator)
    await step('stopping the replicator', async () => {
      const exit = await replicator.stop('SIGTERM', 30_000);
      if (exit.code !== 0 && exit.signal !== 'SIGTERM') warn(`the replicator exited with code ${exit.code} (signal ${exit.signal})`);
    });
  if (worker) await step('stopping the Worker', () => worker.stop('SIGTERM', 10_000));
  if (sql && running.dropSlotOnStop) {
    await step(`dropping the replication slot ${currentConfig?.slot}`, async () => {
      if (await dropSlot(sql, currentConfig!.slot)) say(`Dropped the replication slot ${currentConfig!.slot} (a stopped local run keeps no WAL).`);
    });
  }
  await step('removing dev.json', () => removeFile(DEV_JSON));
  await step('removing processes.json', () => removeFile(PROCESSES_JSON));
  if (sql) await step('closing the database connection', () => sql.end({ timeout: 2 }));
  if (pg) await step('stopping PostgreSQL', () => pg.stop());
  if (ready || code === 0) say('Stopped.');
  process.exit(code);
}

/** A second Ctrl-C: no more waiting. */
async function forceStop(): Promise<never> {
  forced = true;
  warn('\nForced stop: no draining, the slot stays (the next start carries on from it).');
  running.replicator?.signal('SIGKILL');
  running.worker?.signal('SIGKILL');
  await removeFile(DEV_JSON).catch(() => undefined);
  if (running.pg) await running.pg.stop().catch(() => undefined);
  process.exit(130);
}

let currentConfig: LocalConfig | undefined;
let startup: Promise<void> | undefined;
let signals = 0;

function onSignal(): void {
  signals++;
  if (signals > 1) {
    void forceStop();
    return;
  }
  abort.abort();
  // Whatever start-up was doing finishes (or gives up) first, so that nothing it started is missed.
  void (startup ?? Promise.resolve()).catch(() => undefined).then(() => shutdown(0));
}

for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
survivePipeReaders();
// `npm start` runs this under `sh -c`, which dies of a SIGTERM that npm forwards without passing it
// on: a new parent means the one that started us is gone, and that is a stop too.
const parentAtStart = process.ppid;
setInterval(() => {
  if (process.ppid !== parentAtStart && signals === 0) onSignal();
}, 250).unref();

try {
  currentConfig = parseLocalConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigProblem)) throw err;
  warn(`npm start: ${err.message}`);
  process.exit(2);
}
process.chdir(ROOT);
startup = start(currentConfig);
startup.catch(async (err: unknown) => {
  if (err instanceof Aborted || abort.signal.aborted) return;
  if (err instanceof ConfigProblem || err instanceof LocalPostgresError) warn(`\nnpm start: ${err.message}`);
  else warn(`\nnpm start failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  await shutdown(1);
});
