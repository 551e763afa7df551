import { startEmbeddedPostgres } from './replicator/dev/embedded-postgres.ts';
import { migrate } from './migrations/migrate.ts';
import { writeWorkload } from './bench/capture-workload.ts';
import { capturePgoutput } from './test/support/capture.ts';
import postgres from 'postgres';
import { writeFileSync } from 'node:fs';
const pg = await startEmbeddedPostgres({ dataDir: '/tmp/dec-pg-' + Date.now() });
const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
await migrate(sql);
await sql`create publication bp for table accounts, actors, actor_groups, actor_group_memberships, sites, resources, resource_connections, policies`;
await sql`select pg_create_logical_replication_slot('bs', 'pgoutput')`;
await writeWorkload(sql, { accounts: 50, actorsPerAccount: 1000 });
const msgs = (await capturePgoutput(sql, 'bs', 'bp', { protocol: 1, streaming: false, messages: false })).map(m => m.data);
// length-prefixed dump
const parts: Buffer[] = [];
for (const m of msgs) { const h = Buffer.alloc(4); h.writeUInt32BE(m.length); parts.push(h, m); }
writeFileSync('/tmp/corpus.bin', Buffer.concat(parts));
await sql.end(); await pg.stop();
