import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from './root.ts';

/**
 * Everything the local run keeps lives here (git-ignored); `rm -rf .edgeplane` resets it.
 * `EDGEPLANE_DIR` moves it (the tests of the local run use a folder of their own).
 */
export const LOCAL_DIR = process.env.EDGEPLANE_DIR ? path.resolve(process.env.EDGEPLANE_DIR) : path.join(ROOT, '.edgeplane');
export const DEV_JSON = path.join(LOCAL_DIR, 'dev.json');
/** The demo tokens' secrets (the database keeps only their hashes), so that a restart prints the same dev.json. */
export const DEMO_JSON = path.join(LOCAL_DIR, 'demo.json');
/** Which database the objects' local storage was filled from, and whether its slot carried on. */
export const WORKER_STATE_JSON = path.join(LOCAL_DIR, 'worker-state.json');
export const PG_DIR = path.join(LOCAL_DIR, 'pg');
export const WORKER_DIR = path.join(LOCAL_DIR, 'worker');
/** The Worker as `wrangler deploy --dry-run --outdir` builds it, rebuilt on every start. */
export const BUNDLE_DIR = path.join(LOCAL_DIR, 'bundle');

/** docs/protocol.md#local-run. */
export interface DevJson {
  databaseUrl: string;
  workerUrl: string;
  replicatorUrl: string;
  demo: { accountId: string; clientToken: string; siteToken: string } | null;
}

export async function ensureLocalDir(): Promise<void> {
  await mkdir(LOCAL_DIR, { recursive: true, mode: 0o755 });
}

export async function readJson<T>(file: string): Promise<T | undefined> {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export async function writeJson(file: string, value: unknown, mode = 0o600): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode });
  await rename(tmp, file);
}

/**
 * `.dev.vars` next to wrangler.toml (git-ignored): the local run's Worker variables, for an
 * `npm run worker` or `wrangler dev` started by hand next to it (docs/protocol.md#local-run).
 */
export const DEV_VARS = path.join(ROOT, '.dev.vars');

export async function writeDevVars(secret: string): Promise<void> {
  const text = [
    '# Written by `npm start` on every start (docs/protocol.md#local-run); git-ignored.',
    '# A local run: never deploy these values.',
    'EDGEPLANE_ENV=local',
    `REPLICATOR_SECRET=${secret}`,
    '',
  ].join('\n');
  const tmp = `${DEV_VARS}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, DEV_VARS);
}

/** REPLICATOR_SECRET from `.dev.vars`, if the file has one. */
export async function devVarsSecret(): Promise<string | undefined> {
  if (!existsSync(DEV_VARS)) return undefined;
  const line = (await readFile(DEV_VARS, 'utf8')).split('\n').find((l) => /^\s*REPLICATOR_SECRET\s*=/.test(l));
  const value = line
    ?.slice(line.indexOf('=') + 1)
    .trim()
    .replace(/^"(.*)"$/, '$1');
  return value || undefined;
}

export async function removeFile(file: string): Promise<void> {
  await rm(file, { force: true });
}

/** dev.json of a running local stack, or a clear error saying how to get one. */
export async function readDevJson(): Promise<DevJson> {
  const dev = await readJson<DevJson>(DEV_JSON);
  if (!dev) throw new Error(`${path.relative(process.cwd(), DEV_JSON) || DEV_JSON} not found: start the local stack with \`npm start\` first`);
  return dev;
}
