/**
 * The Worker served by the Miniflare API alone, run as a child process of the edge benchmark:
 * the real bundle (`wrangler deploy --dry-run --outdir`), wrangler.toml's bindings and flags
 * (`unstable_getMiniflareWorkerOptions`), and the Miniflare and workerd that wrangler itself
 * depends on. Unlike `wrangler dev` it has no ProxyWorker in front, which holds six file
 * descriptors per proxied WebSocket and so cannot hold 5,000 sockets under a 20,000 fd limit.
 *
 * Environment: EDGE_PORT, EDGE_DATABASE_URL, EDGE_SECRET, EDGE_PERSIST, EDGE_INSPECTOR_PORT (optional),
 * EDGE_RATE_LIMITS (`on` keeps the connect rate limits; by default they are off: the benchmarks
 * connect thousands of devices from one address), EDGE_VARS (optional: a JSON object of Worker
 * variables added to wrangler.toml's).
 * Prints `ready <url>` once serving; SIGTERM disposes of it.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { ROOT } from '../dev/root.ts';

interface MiniflareLike {
  ready: Promise<URL>;
  dispose(): Promise<void>;
}
interface MiniflareModule {
  Miniflare: new (options: Record<string, unknown>) => MiniflareLike;
  Log: new (level: number) => unknown;
  LogLevel: { INFO: number; WARN: number };
}
interface WranglerModule {
  unstable_getMiniflareWorkerOptions(configPath: string): { workerOptions: Record<string, unknown> };
}

const env = process.env;
const requireFromHere = createRequire(import.meta.url);
const wranglerDir = path.dirname(requireFromHere.resolve('wrangler/package.json'));
const wrangler = requireFromHere('wrangler') as WranglerModule;
// The Miniflare (and so the workerd) that `wrangler dev` runs, not another copy in node_modules.
const { Miniflare, Log, LogLevel } = createRequire(path.join(wranglerDir, 'package.json'))('miniflare') as MiniflareModule;

const config = path.join(ROOT, 'wrangler.toml');
const outdir = path.join(env.EDGE_PERSIST!, 'bundle');
const built = spawnSync(process.execPath, [path.join(wranglerDir, 'bin', 'wrangler.js'), 'deploy', '--dry-run', '--outdir', outdir, '--config', config], {
  cwd: ROOT,
  env: { ...env, WRANGLER_SEND_METRICS: 'false', NO_UPDATE_NOTIFIER: '1' },
  encoding: 'utf8',
});
if (built.status !== 0) {
  console.error(`wrangler deploy --dry-run failed:\n${built.stdout}\n${built.stderr}`);
  process.exit(1);
}

const { workerOptions } = wrangler.unstable_getMiniflareWorkerOptions(config);
const mf = new Miniflare({
  ...workerOptions,
  name: 'edgeplane',
  modulesRoot: outdir,
  modules: [{ type: 'ESModule', path: path.join(outdir, 'index.js') }],
  bindings: {
    ...(workerOptions.bindings as Record<string, unknown>),
    ...(JSON.parse(env.EDGE_VARS ?? '{}') as Record<string, string>),
    REPLICATOR_SECRET: env.EDGE_SECRET,
    EDGEPLANE_ENV: 'local',
    ...(env.EDGE_RATE_LIMITS === 'on' ? {} : { RATE_LIMITS: 'off' }),
  },
  hyperdrives: { DB: env.EDGE_DATABASE_URL },
  durableObjectsPersist: path.join(env.EDGE_PERSIST!, 'do'),
  host: '127.0.0.1',
  port: Number(env.EDGE_PORT),
  ...(env.EDGE_INSPECTOR_PORT ? { inspectorPort: Number(env.EDGE_INSPECTOR_PORT) } : {}),
  log: new Log(LogLevel.INFO),
  // As `wrangler dev` runs its Worker: Miniflare's entry worker would otherwise report every
  // request to this Node process over HTTP, a cost of the simulator rather than of the Worker.
  logRequests: false,
});
const url = await mf.ready;
console.log(`ready ${url.href}`);
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    void mf.dispose().finally(() => process.exit(0));
  });
}
