/**
 * `npm run worker` (docs/protocol.md#local-run): the local Worker (dev/local-worker.ts, the Miniflare
 * API) with its objects, configured by environment: PORT (default 8787), REPLICATOR_SECRET (else
 * `.dev.vars`'s, which `npm start` writes; one of them is required), the Hyperdrive binding's
 * database from DATABASE_URL (or CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB; default
 * wrangler.toml's localConnectionString), the objects' storage in EDGEPLANE_WORKER_PERSIST
 * (default `.wrangler/state`), variables on top of wrangler.toml's in EDGEPLANE_WORKER_VARS (a JSON
 * object), and EDGEPLANE_WORKER_DIRECT_PORT, a second port that serves the Worker without
 * Miniflare's entry worker, for the replicator (dev/local-worker.ts). It builds the bundle as a deploy would, unless
 * EDGEPLANE_WORKER_BUNDLE names one already built. `npm start`, the e2e tests and the benchmarks run
 * this same process (worker-process.ts). Ctrl-C or SIGTERM stops it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { errorMessage } from '../src/errors.ts';
import { survivePipeReaders } from './broken-pipes.ts';
import { ConfigProblem, parseWorkerConfig, type WorkerConfig } from './local-config.ts';
import { devVarsSecret } from './local-files.ts';
import { startLocalWorker, type LocalWorker } from './local-worker.ts';
import { ROOT } from './root.ts';
import { buildWorkerBundle } from './worker-process.ts';

survivePipeReaders();
let config: WorkerConfig;
try {
  config = parseWorkerConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigProblem)) throw err;
  console.error(`npm run worker: ${err.message}`);
  process.exit(2);
}
if (!config.databaseUrl)
  console.error("npm run worker: DATABASE_URL is not set; the Hyperdrive binding uses wrangler.toml's localConnectionString (the embedded server of `npm start`).");
const secret = config.secret ?? (await devVarsSecret());
if (!secret) {
  console.error("npm run worker: REPLICATOR_SECRET is not set and .dev.vars has none (`npm start` writes one); set it to the replicator's secret.");
  process.exit(2);
}

/** A path under the current folder relative to it, others as they are. */
const shown = (p: string) => (p.startsWith(`${process.cwd()}${path.sep}`) ? path.relative(process.cwd(), p) : p);
const persistTo = config.persistTo ?? path.join(ROOT, '.wrangler', 'state');
const miniflareVersion = (createRequire(import.meta.url)('miniflare/package.json') as { version: string }).version;
let built: string | undefined;
let worker: LocalWorker | undefined;
let stopping = false;

async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    // workerd may be gone already (a signal to the whole group reaches it too): do not wait long.
    await Promise.race([worker?.dispose().catch(() => undefined), new Promise((r) => setTimeout(r, 3000).unref())]);
    if (built) await rm(built, { recursive: true, force: true });
  }
  process.exit(code);
}
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, () => void stop(0));

try {
  let bundle = config.bundle;
  if (!bundle) {
    // The current code, every start: the bundle `wrangler deploy` would upload.
    built = await mkdtemp(path.join(tmpdir(), 'edgeplane-worker-bundle-'));
    bundle = await buildWorkerBundle(built);
  }
  worker = await startLocalWorker({
    port: config.port,
    databaseUrl: config.databaseUrl,
    secret,
    bundle,
    persistTo,
    ...(config.rateLimits ? { rateLimits: config.rateLimits } : {}),
    ...(config.inspectorPort ? { inspectorPort: config.inspectorPort } : {}),
    ...(config.directPort ? { directPort: config.directPort } : {}),
    ...(config.vars ? { vars: config.vars } : {}),
  });
  if (stopping) await worker.dispose();
  else
    console.log(
      `The Worker is ready at ${worker.url}${worker.directUrl ? `, for the replicator at ${worker.directUrl}` : ''} (Miniflare ${miniflareVersion}; the objects' storage in ${shown(persistTo)}).`,
    );
} catch (err) {
  console.error(`npm run worker: ${errorMessage(err)}`);
  await stop(1);
}
