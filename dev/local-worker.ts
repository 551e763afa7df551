import { createRequire } from 'node:module';
import path from 'node:path';
import { Log, LogLevel, Miniflare, type MiniflareOptions } from 'miniflare';
import { objectsDir } from './object-storage.ts';
import { WRANGLER_TOML } from './root.ts';
import { waitForHttp } from './worker-process.ts';

/**
 * The local Worker (docs/protocol.md#local-run): the bundle a deploy uploads
 * (`wrangler deploy --dry-run --outdir`, worker-process.ts), served by the Miniflare API in one
 * workerd process, with what wrangler.toml declares (compatibility date and flags, the two
 * SQLite-backed object classes, the `[[ratelimits]]`, the `DB` Hyperdrive binding) as wrangler
 * itself translates it (`unstable_getMiniflareWorkerOptions`). Unlike `wrangler dev` there is no
 * dev proxy in front: a socket the object closes ends at the client at once, and a socket costs
 * workerd one file descriptor, not six (bench/RESULTS.md#edge).
 *
 * `port` goes through Miniflare's entry worker, which plays Cloudflare's front line for devices
 * (`cf-connecting-ip` from the peer, `request.cf`); `directPort` serves the Worker itself, for the
 * replicator: the entry worker copies every request in JavaScript, in the same workerd, which cost
 * a one-change batch 0.7 of its 3.6 ms of CPU and 1.4 ms of its answer here (bench/RESULTS.md, "The
 * replicator's batches past Miniflare's entry worker"), and a deployed Worker's front line costs its
 * isolate nothing.
 */
export interface LocalWorkerOptions {
  port: number;
  /** The `DB` Hyperdrive binding's database; wrangler.toml's `localConnectionString` when unset. */
  databaseUrl?: string;
  secret: string;
  /** The entry file of a bundle built by `buildWorkerBundle`. */
  bundle: string;
  /** Where the objects' SQLite storage lives (the layout of `wrangler dev --persist-to`). */
  persistTo: string;
  /** `off`: no connect rate limits (benchmarks that connect thousands of devices from one address). */
  rateLimits?: 'off';
  /** A V8 inspector on this port, for profiling the Worker's isolate. */
  inspectorPort?: number;
  /** The Worker without Miniflare's entry worker in front, for the replicator's changes. */
  directPort?: number;
  /** Worker variables on top of wrangler.toml's. */
  vars?: Record<string, string>;
}

export interface LocalWorker {
  url: string;
  /** `directPort`'s, when given. */
  directUrl: string | undefined;
  dispose(): Promise<void>;
}

interface WranglerApi {
  unstable_getMiniflareWorkerOptions(configPath: string): { workerOptions: Record<string, unknown> };
}

export async function startLocalWorker(o: LocalWorkerOptions): Promise<LocalWorker> {
  const wrangler = createRequire(import.meta.url)('wrangler') as WranglerApi;
  const { workerOptions } = wrangler.unstable_getMiniflareWorkerOptions(WRANGLER_TOML);
  const options = {
    ...workerOptions,
    name: 'edgeplane',
    modulesRoot: path.dirname(o.bundle),
    modules: [{ type: 'ESModule', path: o.bundle }],
    bindings: {
      ...(workerOptions.bindings as Record<string, unknown>),
      ...o.vars,
      // A local run (docs/protocol.md#worker-configuration).
      EDGEPLANE_ENV: 'local',
      REPLICATOR_SECRET: o.secret,
      ...(o.rateLimits === 'off' ? { RATE_LIMITS: 'off' } : {}),
    },
    hyperdrives: o.databaseUrl ? { DB: o.databaseUrl } : workerOptions.hyperdrives,
    // As `wrangler dev --persist-to` lays it out, so that the objects' storage carries over.
    defaultPersistRoot: path.join(o.persistTo, 'v3'),
    durableObjectsPersist: objectsDir(o.persistTo),
    host: '127.0.0.1',
    port: o.port,
    ...(o.directPort ? { unsafeDirectSockets: [{ host: '127.0.0.1', port: o.directPort }] } : {}),
    ...(o.inspectorPort ? { inspectorPort: o.inspectorPort } : {}),
    // No `request.cf` download (no internet needed) and no country in it: the country comes from
    // the device's `cf-ipcountry`, as the dev CLIs' --country sends it (docs/protocol.md#device-address).
    cf: {},
    log: new Log(LogLevel.INFO),
    // As `wrangler dev` runs its Worker, minus the request lines: Miniflare would report every
    // request to this Node process over HTTP, a cost of the simulator rather than of the Worker.
    logRequests: false,
  } as unknown as MiniflareOptions;
  const mf = new Miniflare(options);
  const url = await mf.ready;
  const directUrl = o.directPort ? (await mf.unsafeGetDirectURL('edgeplane')).href : undefined;
  const bare = (href: string) => href.replace(/\/$/, '');
  // Miniflare is ready once its entry worker answers; the replicator's way in must answer too
  // before anyone is told the Worker is up, or its first batches wait on a port not serving yet.
  if (directUrl)
    await waitForHttp(`${bare(directUrl)}/healthz`, undefined, DIRECT_READY_MS, "the Worker's port for the replicator").catch(async (err: unknown) => {
      await mf.dispose();
      throw err;
    });
  return { url: bare(url.href), directUrl: directUrl && bare(directUrl), dispose: () => mf.dispose() };
}

const DIRECT_READY_MS = 30_000;
