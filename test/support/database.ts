import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { inject } from 'vitest';
import { migrate } from '../../migrations/migrate.ts';

export interface TestDatabase {
  name: string;
  url: string;
  sql: Sql;
  drop(): Promise<void>;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/**
 * A fresh, migrated database on the run's cluster (or on `serverUrl`'s); `drop()` removes it and
 * its replication slots.
 */
export async function createTestDatabase(prefix = 'test', options: { migrate?: boolean; serverUrl?: string } = {}): Promise<TestDatabase> {
  const serverUrl = options.serverUrl ?? inject('pgUrl');
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(serverUrl, name);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  if (options.migrate !== false) await migrate(sql);
  return {
    name,
    url,
    sql,
    async drop() {
      await sql.end({ timeout: 1 });
      const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
      try {
        await admin`select pg_terminate_backend(active_pid) from pg_replication_slots where database = ${name} and active_pid is not null`;
        for (let attempt = 0; ; attempt++) {
          try {
            await admin`select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = ${name}`;
            break;
          } catch (err) {
            if (attempt > 50) throw err;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}
