import postgres from 'postgres';
import { migrate } from '../../migrations/migrate.ts';
import { copyIn } from '../../replicator/log/copy-in.ts';

/**
 * What a dump and restore does, for a server version this machine has no pg_dump for: the schema
 * from the migrations, then every table's rows with COPY (foreign keys not checked meanwhile, as
 * pg_restore adds them after the data), then every sequence where the source left it. Slots are
 * not copied: a restored cluster has none.
 */
export async function copyDatabase(sourceUrl: string, targetUrl: string): Promise<Record<string, number>> {
  const source = postgres(sourceUrl, { max: 1, onnotice: () => {} });
  const target = postgres(targetUrl, { max: 1, onnotice: () => {}, connection: { session_replication_role: 'replica' } });
  const copied: Record<string, number> = {};
  try {
    await migrate(target);
    const tables = await source<{ name: string }[]>`
      select tablename as name from pg_tables where schemaname = 'public' and tablename <> 'schema_migrations' order by tablename`;
    for (const { name } of tables) {
      const chunks: Buffer[] = [];
      for await (const chunk of await source.unsafe(`copy public.${name} to stdout`).readable()) chunks.push(chunk as Buffer);
      await copyIn(target, `copy public.${name} from stdin`, Buffer.concat(chunks));
      const [row] = await target.unsafe<{ n: number }[]>(`select count(*)::int as n from public.${name}`);
      copied[name] = row!.n;
    }
    const sequences = await source<{ name: string; value: string | null; called: boolean }[]>`
      select sequencename as name, last_value::text as value, last_value is not null as called from pg_sequences where schemaname = 'public'`;
    for (const s of sequences) if (s.value !== null) await target`select setval(${`public.${s.name}`}::regclass, ${s.value}::bigint, ${s.called})`;
    return copied;
  } finally {
    await source.end();
    await target.end();
  }
}
