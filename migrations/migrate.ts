import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import postgres, { type Sql } from 'postgres';

const MIGRATIONS_DIR = path.dirname(fileURLToPath(import.meta.url));
// Any constant works; it only has to be the same for every runner so that two never interleave.
const MIGRATION_LOCK = 7_246_113_301;

export interface MigrationResult {
  applied: string[];
  skipped: string[];
}

/** Applies every `NNNN_*.sql` file not yet recorded in `schema_migrations`, each in its own transaction. */
export async function migrate(sql: Sql): Promise<MigrationResult> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d+_.*\.sql$/.test(f)).sort();
  const result: MigrationResult = { applied: [], skipped: [] };
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx`create table if not exists schema_migrations (
      name text primary key,
      applied_at timestamptz not null default now()
    )`;
    const done = new Set((await tx<{ name: string }[]>`select name from schema_migrations`).map((r) => r.name));
    for (const file of files) {
      if (done.has(file)) {
        result.skipped.push(file);
        continue;
      }
      await tx.unsafe(await readFile(path.join(MIGRATIONS_DIR, file), 'utf8'));
      await tx`insert into schema_migrations (name) values (${file})`;
      result.applied.push(file);
    }
  });
  return result;
}

async function main(): Promise<void> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    console.error('DATABASE_URL is required: the Postgres connection string to migrate, e.g. postgres://user:pass@host:5432/db');
    process.exit(2);
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const { applied, skipped } = await migrate(sql);
    console.log(JSON.stringify({ msg: 'migrations done', applied, already_applied: skipped.length }));
  } finally {
    await sql.end();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  main().catch((err: unknown) => {
    console.error(JSON.stringify({ msg: 'migration failed', error: String(err) }));
    process.exit(1);
  });
}
