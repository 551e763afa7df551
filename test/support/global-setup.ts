import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';
import { migrate } from '../../migrations/migrate.ts';
import { withDatabase } from './database.ts';
import { startEmbeddedPostgres, type EmbeddedCluster } from '../../dev/embedded-postgres.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string;
    /** A migrated database for the workerd tests, reached through their Hyperdrive binding. */
    workersPgUrl: string;
  }
}

/**
 * One PostgreSQL cluster per test run. `DATABASE_URL` points the tests at an existing server instead
 * (it needs wal_level=logical and a role that may create databases and replication slots).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let cluster: EmbeddedCluster | undefined;
  let url = process.env.DATABASE_URL;
  if (!url) {
    cluster = await startEmbeddedPostgres({
      dataDir: path.join(tmpdir(), `edgeplane-test-${randomBytes(4).toString('hex')}`),
      // Small, so that tests can make a transaction that the server streams before its commit.
      settings: { logical_decoding_work_mem: '64kB', wal_sender_timeout: '20s' },
    });
    url = cluster.url;
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ wal_level: string }[]>`select current_setting('wal_level') as wal_level`;
    if (row?.wal_level !== 'logical') throw new Error(`the test server at DATABASE_URL has wal_level=${row?.wal_level}; logical is required`);
  } finally {
    await sql.end();
  }
  project.provide('pgUrl', url);
  const workersDb = `workers_${randomBytes(5).toString('hex')}`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${workersDb}`);
  } finally {
    await admin.end();
  }
  const workersUrl = withDatabase(url, workersDb);
  const workers = postgres(workersUrl, { max: 1, onnotice: () => {} });
  try {
    await migrate(workers);
  } finally {
    await workers.end();
  }
  project.provide('workersPgUrl', workersUrl);
  return async () => {
    if (!cluster) {
      const cleanup = postgres(url, { max: 1, onnotice: () => {} });
      await cleanup.unsafe(`drop database if exists ${workersDb} with (force)`).finally(() => cleanup.end());
    }
    await cluster?.stop();
  };
}
