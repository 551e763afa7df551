import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { errorMessage } from '../src/errors.ts';
import { Child } from './child.ts';
import { ROOT } from './root.ts';

export interface WorkerOptions {
  port: number;
  /** The Hyperdrive binding `DB` connects here (CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB). */
  databaseUrl?: string;
  /** REPLICATOR_SECRET (`--var`); without it, `.dev.vars`'s. */
  secret?: string;
  /** `off`: no connect rate limits (benchmarks that connect thousands of devices from one address). */
  rateLimits?: 'off';
  /** Where the objects' SQLite storage lives (`--persist-to`). */
  persistTo?: string;
  /** A bundle made by `wrangler deploy --dry-run --outdir` to serve as it is (`--no-bundle`), instead of wrangler.toml's `main`. */
  bundle?: string;
  /** wrangler's dev registry (default: the user's shared one). */
  registryPath?: string;
  extraArgs?: readonly string[];
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

function wranglerBin(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve('wrangler/package.json')), 'bin', 'wrangler.js');
}

/** The `wrangler dev` command line and environment that serve the Worker with the given database and secret. */
export function wranglerDevCommand(options: WorkerOptions): { command: string; args: string[]; env: Record<string, string | undefined> } {
  const args = [
    wranglerBin(),
    'dev',
    ...(options.bundle ? [options.bundle, '--no-bundle'] : []),
    '--config',
    path.join(ROOT, 'wrangler.toml'),
    '--ip',
    '127.0.0.1',
    '--port',
    String(options.port),
    // Any free port: two local Workers must not fight over 9229.
    '--inspector-port',
    '0',
    '--show-interactive-dev-session=false',
  ];
  if (options.persistTo) args.push('--persist-to', options.persistTo);
  // A local run (docs/protocol.md#worker-configuration): the dev CLIs' headers, its own secret.
  args.push('--var', 'EDGEPLANE_ENV:local');
  if (options.secret) args.push('--var', `REPLICATOR_SECRET:${options.secret}`);
  if (options.rateLimits === 'off') args.push('--var', 'RATE_LIMITS:off');
  args.push(...(options.extraArgs ?? []));
  const env: Record<string, string | undefined> = {
    ...process.env,
    WRANGLER_SEND_METRICS: 'false',
    WRANGLER_HIDE_BANNER: 'true',
    // The update check and Request.cf download need the internet; neither matters locally.
    NO_UPDATE_NOTIFIER: '1',
    CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  };
  if (options.registryPath) env.WRANGLER_REGISTRY_PATH = options.registryPath;
  if (options.databaseUrl) env.CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB = options.databaseUrl;
  return { command: process.execPath, args, env };
}

/** Lines wrangler prints on every start on a machine without internet access; they say nothing. */
export function isWranglerNoise(line: string): boolean {
  return /Unable to fetch the `Request\.cf` object|getaddrinfo ENOTFOUND workers\.cloudflare\.com|^\s+at (GetAddrInfoReqWrap|process\.processTicksAndRejections|.*node:internal)|update available|^npm warn/.test(
    line,
  );
}

/** Builds the Worker like a deploy would (`wrangler deploy --dry-run`) into `outDir`; returns the entry file. */
export async function buildWorkerBundle(outDir: string): Promise<string> {
  const { env } = wranglerDevCommand({ port: 0 });
  try {
    await promisify(execFile)(process.execPath, [wranglerBin(), 'deploy', '--dry-run', '--outdir', outDir, '--config', path.join(ROOT, 'wrangler.toml')], {
      cwd: ROOT,
      env,
      maxBuffer: 16 << 20,
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`wrangler deploy --dry-run failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
  return path.join(outDir, 'index.js');
}

/**
 * `wrangler dev` as a child process, with a dev registry of its own: other `wrangler dev` processes
 * on the machine (tests, benchmarks) come and go, and a change of a shared registry can reload the
 * Worker, which closes its sockets.
 */
export function startWorkerProcess(options: WorkerOptions): Child {
  const registryPath = options.registryPath ?? mkdtempSync(path.join(tmpdir(), 'edgeplane-wrangler-registry-'));
  const { command, args, env } = wranglerDevCommand({ ...options, registryPath });
  const child = new Child('worker', command, args, { cwd: ROOT, env, ...(options.onLine ? { onLine: options.onLine } : {}) });
  if (!options.registryPath) void child.exited.then(() => rm(registryPath, { recursive: true, force: true }));
  return child;
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
