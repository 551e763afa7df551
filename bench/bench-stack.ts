/**
 * What every edge benchmark starts before its first measurement: a Postgres (an embedded cluster
 * of its own, or DATABASE_URL's), migrated, and the Worker under benchmark on it (bench/edge-worker.ts)
 * with fresh ports, a random secret and a state folder of its own (its objects' SQLite files in
 * memory where `npm start` would keep them there). `stop()` undoes all of it.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';
import { startEmbeddedPostgres, type EmbeddedCluster } from '../dev/embedded-postgres.ts';
import { objectsDir, placeObjectStorage, removeObjectStorage } from '../dev/object-storage.ts';
import { freePort } from '../dev/ports.ts';
import { migrate } from '../migrations/migrate.ts';
import { startWorker, type RunningWorker, type WorkerOptions } from './edge-worker.ts';

export interface BenchDatabase {
  url: string;
  sql: Sql;
  /** The embedded cluster's postmaster, whose processes' CPU the benchmarks count; none with DATABASE_URL. */
  postmaster: number | undefined;
  /** Unique to this run: names its folders. */
  stamp: string;
  stop(): Promise<void>;
}

/** `maxConnections`: room for what the benchmark's connects open at once. */
export async function startBenchDatabase(name: string, o: { maxConnections?: number; pool?: number } = {}): Promise<BenchDatabase> {
  const stamp = `${Date.now()}-${randomBytes(3).toString('hex')}`;
  let cluster: EmbeddedCluster | undefined;
  if (!process.env.DATABASE_URL) {
    const settings = o.maxConnections ? { max_connections: String(o.maxConnections) } : undefined;
    cluster = await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-bench-${name}-pg-${stamp}`), ...(settings ? { settings } : {}) });
  }
  const url = process.env.DATABASE_URL ?? cluster!.url;
  const sql = postgres(url, { max: o.pool ?? 4, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
  try {
    await migrate(sql);
  } catch (err) {
    await sql.end();
    await cluster?.stop();
    throw err;
  }
  const postmaster = cluster ? Number(readFileSync(path.join(cluster.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]) : undefined;
  return {
    url,
    sql,
    postmaster,
    stamp,
    async stop() {
      await sql.end({ timeout: 5 });
      await cluster?.stop();
    },
  };
}

export type BenchWorkerOptions = Partial<Pick<WorkerOptions, 'runtime' | 'echo' | 'vars' | 'rateLimits'>> & {
  /** Post change batches past Miniflare's entry worker, as `npm start`'s replicator does. */
  direct?: boolean;
};

/** The Worker on `db`, its state in a folder of its own that `stop()` removes. */
export async function startBenchWorker(db: BenchDatabase, name: string, o: BenchWorkerOptions = {}): Promise<RunningWorker> {
  const persistTo = path.join(tmpdir(), `edgeplane-bench-${name}-state-${db.stamp}`);
  // Where `npm start` keeps them: in memory when the machine has room (dev/object-storage.ts).
  await placeObjectStorage(objectsDir(persistTo));
  const worker = await startWorker({
    runtime: o.runtime ?? 'miniflare',
    port: await freePort(),
    inspectorPort: await freePort(),
    databaseUrl: db.url,
    secret: randomBytes(24).toString('hex'),
    persistTo,
    echo: o.echo ?? false,
    ...(o.vars ? { vars: o.vars } : {}),
    ...(o.rateLimits ? { rateLimits: o.rateLimits } : {}),
    ...(o.direct ? { directPort: await freePort() } : {}),
  });
  return {
    ...worker,
    async stop() {
      await worker.stop();
      await removeObjectStorage(objectsDir(persistTo));
      await rm(persistTo, { recursive: true, force: true });
    },
  };
}
