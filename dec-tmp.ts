import { startEmbeddedPostgres } from './replicator/dev/embedded-postgres.ts';
import { migrate } from './migrations/migrate.ts';
import { PgoutputDecoder } from './replicator/pgoutput/decoder.ts';
import { writeWorkload } from './bench/capture-workload.ts';
import { capturePgoutput } from './test/support/capture.ts';
import { PgoutputParser } from 'pg-logical-replication/dist/output-plugins/pgoutput/pgoutput-parser.js';
import postgres from 'postgres';
const pg = await startEmbeddedPostgres({ dataDir: '/tmp/dec-pg-' + Date.now() });
const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connection: { TimeZone: 'UTC' } });
await migrate(sql);
await sql`create publication bp for table accounts, actors, actor_groups, actor_group_memberships, sites, resources, resource_connections, policies`;
await sql`select pg_create_logical_replication_slot('bs', 'pgoutput')`;
const n = await writeWorkload(sql, { accounts: 50, actorsPerAccount: 1000 });
const msgs = (await capturePgoutput(sql, 'bs', 'bp', { protocol: 1, streaming: false, messages: false })).map(m => m.data);
const rows = msgs.filter(m => m[0] === 0x49 || m[0] === 0x55 || m[0] === 0x44).length;
console.log('written', n, 'messages', msgs.length, 'row changes', rows, 'bytes', msgs.reduce((a, m) => a + m.length, 0));
for (let round = 0; round < 3; round++) {
  let t = performance.now(); const d = new PgoutputDecoder(); for (const m of msgs) d.decode(m); let el = performance.now() - t;
  console.log('ours', Math.round(rows / el * 1000), '/s');
  t = performance.now(); const p = new PgoutputParser(); for (const m of msgs) p.parse(m); el = performance.now() - t;
  console.log('peer', Math.round(rows / el * 1000), '/s');
}
await sql.end(); await pg.stop();
