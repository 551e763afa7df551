import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { promisify } from 'node:util';
import { errorMessage } from '../src/errors.ts';
import { Child } from './child.ts';
import { ROOT, WRANGLER_TOML } from './root.ts';

export interface WorkerOptions {
  port: number;
  /** The Hyperdrive binding `DB` connects here; wrangler.toml's `localConnectionString` when unset. */
  databaseUrl?: string;
  /** REPLICATOR_SECRET; without it, `.dev.vars`'s. */
  secret?: string;
  /** `off`: no connect rate limits (benchmarks that connect thousands of devices from one address). */
  rateLimits?: 'off';
  /** Where the objects' SQLite storage lives. */
  persistTo?: string;
  /** The entry file of a bundle made by `buildWorkerBundle`, served as it is; without it, the child builds one. */
  bundle?: string;
  /** A V8 inspector for the Worker's isolate on this port. */
  inspectorPort?: number;
  /** The Worker also served here without Miniflare's entry worker, for the replicator (dev/local-worker.ts). */
  directPort?: number;
  /** Worker variables on top of wrangler.toml's, e.g. FLOW_RATE_PER_SECOND (docs/protocol.md#limits). */
  vars?: Record<string, string>;
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export function wranglerBin(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('wrangler/package.json')), 'bin', 'wrangler.js');
}

/** wrangler without its banner, metrics, update check and `Request.cf` download (no internet needed). */
export function quietWranglerEnv(): Record<string, string | undefined> {
  return { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_HIDE_BANNER: 'true', NO_UPDATE_NOTIFIER: '1', CLOUDFLARE_CF_FETCH_ENABLED: 'false' };
}

/** Lines the local runtime prints that say nothing (no internet access, a newer wrangler, npm). */
export function isWorkerNoise(line: string): boolean {
  return /Unable to fetch the `Request\.cf` object|getaddrinfo ENOTFOUND workers\.cloudflare\.com|^\s+at (GetAddrInfoReqWrap|process\.processTicksAndRejections|.*node:internal)|update available|^npm warn/.test(
    line,
  );
}

/** Builds the Worker like a deploy would (`wrangler deploy --dry-run`) into `outDir`; returns the entry file. */
export async function buildWorkerBundle(outDir: string): Promise<string> {
  try {
    await promisify(execFile)(process.execPath, [wranglerBin(), 'deploy', '--dry-run', '--outdir', outDir, '--config', WRANGLER_TOML], {
      cwd: ROOT,
      env: quietWranglerEnv(),
      maxBuffer: 16 << 20,
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`wrangler deploy --dry-run failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
  return path.join(outDir, 'index.js');
}

/** The environment `dev/worker.ts` (`npm run worker`) reads, for these options. */
export function workerEnv(options: WorkerOptions): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...quietWranglerEnv(), PORT: String(options.port) };
  if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl;
  // Ours decides, not one inherited for wrangler.
  delete env.CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB;
  if (options.secret) env.REPLICATOR_SECRET = options.secret;
  if (options.persistTo) env.EDGEPLANE_WORKER_PERSIST = options.persistTo;
  if (options.bundle) env.EDGEPLANE_WORKER_BUNDLE = options.bundle;
  if (options.inspectorPort) env.EDGEPLANE_WORKER_INSPECTOR_PORT = String(options.inspectorPort);
  if (options.directPort) env.EDGEPLANE_WORKER_DIRECT_PORT = String(options.directPort);
  else delete env.EDGEPLANE_WORKER_DIRECT_PORT;
  if (options.rateLimits === 'off') env.RATE_LIMITS = 'off';
  else delete env.RATE_LIMITS;
  if (options.vars) env.EDGEPLANE_WORKER_VARS = JSON.stringify(options.vars);
  else delete env.EDGEPLANE_WORKER_VARS;
  return env;
}

/**
 * The local Worker (dev/worker.ts: the Miniflare API, docs/protocol.md#local-run) as a child process in a
 * group of its own, with its workerd: `npm start`, the e2e tests and the benchmarks run this one.
 */
export function startWorkerProcess(options: WorkerOptions): Child {
  return new Child('worker', process.execPath, ['--import', 'tsx', path.join(ROOT, 'dev/worker.ts')], {
    cwd: ROOT,
    env: workerEnv(options),
    ...(options.onLine ? { onLine: options.onLine } : {}),
  });
}

/** Polls `url` until it answers 2xx, the child exits, or the time is up. */
export async function waitForHttp(url: string, child: Child | undefined, timeoutMs: number, what: string, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (signal?.aborted) throw new Error(`stopped while waiting for ${what}`);
    if (child && !child.running) {
      const exit = await child.exited;
      throw new Error(`${what} exited (code ${exit.code}, signal ${exit.signal}) before ${url} answered`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (res.ok) {
        await res.body?.cancel();
        return;
      }
      last = `${res.status} ${(await res.text()).slice(0, 200)}`;
    } catch (err) {
      last = errorMessage(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not answer ${url} within ${timeoutMs} ms (last: ${last})`);
}
