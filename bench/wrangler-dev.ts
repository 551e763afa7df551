import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Child } from '../dev/child.ts';
import { ROOT, WRANGLER_TOML } from '../dev/root.ts';
import { quietWranglerEnv, wranglerBin } from '../dev/worker-process.ts';

/**
 * `wrangler dev`, which the local run used before the Miniflare API (docs/protocol.md#local-run), kept
 * for the benchmarks' comparisons only: wrangler's ProxyWorker in one workerd in front of the
 * Worker and its objects in another.
 */
export interface WranglerDevOptions {
  port: number;
  databaseUrl: string;
  secret: string;
  persistTo: string;
  /** A bundle made by `buildWorkerBundle`, served as it is (`--no-bundle`); else wrangler.toml's `main`. */
  bundle?: string;
  /** Any free one when unset. */
  inspectorPort?: number;
  rateLimits?: 'off';
  /** Worker variables on top of wrangler.toml's. */
  vars?: Record<string, string>;
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

/** With a dev registry of its own: another `wrangler dev` coming and going would reload this one, closing its sockets. */
export function startWranglerDev(o: WranglerDevOptions): Child {
  const registry = mkdtempSync(path.join(tmpdir(), 'edgeplane-wrangler-registry-'));
  const args = [
    wranglerBin(),
    'dev',
    ...(o.bundle ? [o.bundle, '--no-bundle'] : []),
    '--config',
    WRANGLER_TOML,
    '--ip',
    '127.0.0.1',
    '--port',
    String(o.port),
    '--inspector-port',
    String(o.inspectorPort ?? 0),
    '--show-interactive-dev-session=false',
    '--persist-to',
    o.persistTo,
    '--var',
    'EDGEPLANE_ENV:local',
    '--var',
    `REPLICATOR_SECRET:${o.secret}`,
    ...(o.rateLimits === 'off' ? ['--var', 'RATE_LIMITS:off'] : []),
    ...Object.entries(o.vars ?? {}).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
  ];
  const env = { ...quietWranglerEnv(), WRANGLER_REGISTRY_PATH: registry, CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB: o.databaseUrl };
  const child = new Child('wrangler', process.execPath, args, { cwd: ROOT, env, ...(o.onLine ? { onLine: o.onLine } : {}) });
  void child.exited.then(() => rm(registry, { recursive: true, force: true }));
  return child;
}
