import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { databaseStats } from '../../workers/account/database.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect, tryConnect, type ConnectOptions } from './support/device.ts';
import { database, randomText } from './support/world.ts';

const sql = database();
/** The database's stall deadline the workers projects run with (test/vitest.config.ts). */
const STALL_MS = Number((env as unknown as Record<string, unknown>).DATABASE_STALL_MS);

interface Written {
  id: string;
  xmin: string;
  name: string;
  public_key: string;
  last_seen_version: string;
  deleted_at: Date | null;
}

/** The device's row and its version (xmin: the transaction that last wrote it). */
async function rowOf(table: 'clients' | 'gateways', externalId: string): Promise<Written> {
  const [row] = await sql<Written[]>`select id, xmin::text as xmin, name, public_key, last_seen_version, deleted_at from ${sql(table)} where external_id = ${externalId}`;
  if (!row) throw new Error(`no ${table} row of ${externalId}`);
  return row;
}

/** An account with a client token and a site token. */
async function world() {
  const account = await TestAccount.create(sql);
  const s = await basicSetup(account);
  let siteToken = '';
  await account.apply(async (t) => void (siteToken = (await account.siteToken(t, s.site.id)).token));
  return { account, s, siteToken };
}

describe('reconnects (docs/architecture.md#a-device-connects)', () => {
  it('a known, unchanged client or gateway reconnects with no Postgres write: no connection, the row untouched, the same init', async () => {
    const { s, siteToken } = await world();
    for (const [kind, token, table] of [
      ['client', s.token, 'clients'],
      ['gateway', siteToken, 'gateways'],
    ] as const) {
      const opts: ConnectOptions = { externalId: `known-${randomText(8)}`, name: 'Laptop', publicKey: 'key-1', version: '1.4.2' };
      const first = await connect(kind, token, opts);
      const written = await rowOf(table, opts.externalId!);
      first.device.close();
      const before = databaseStats.clients;
      const again = await connect(kind, token, opts);
      expect(databaseStats.clients - before, `${kind}: Postgres clients made by the reconnect`).toBe(0);
      expect(await rowOf(table, opts.externalId!), kind).toEqual(written);
      expect(again.init, kind).toEqual(first.init);
      again.device.close();
    }
  });

  it('a changed device is written: its name, public key or version; and a deleted one comes back', async () => {
    const { account, s, siteToken } = await world();
    for (const [kind, token, table] of [
      ['client', s.token, 'clients'],
      ['gateway', siteToken, 'gateways'],
    ] as const) {
      const opts: ConnectOptions = { externalId: `changed-${randomText(8)}`, name: 'Laptop', publicKey: 'key-1', version: '1.4.2' };
      (await connect(kind, token, opts)).device.close();
      let previous = await rowOf(table, opts.externalId!);
      for (const change of [{ name: 'Laptop (renamed)' }, { publicKey: 'key-2' }, { version: '1.4.3' }]) {
        Object.assign(opts, change);
        const { device, init } = await connect(kind, token, opts);
        const row = await rowOf(table, opts.externalId!);
        expect(row.xmin, `${kind} ${JSON.stringify(change)}`).not.toBe(previous.xmin);
        expect(row).toMatchObject({ id: previous.id, name: opts.name, public_key: opts.publicKey, last_seen_version: opts.version });
        expect(init.payload[kind === 'client' ? 'client_id' : 'gateway_id']).toBe(row.id);
        device.close();
        previous = row;
      }
      // Deleted in Postgres and delivered: the object no longer holds it, and the connect restores it.
      await account.apply((t) => t.softDelete(table, { id: previous.id }));
      const back = await connect(kind, token, opts);
      expect(await rowOf(table, opts.externalId!)).toMatchObject({ id: previous.id, deleted_at: null });
      back.device.close();
    }
  });

  it('simultaneous new devices are written in fewer statements than devices, each row with its columns, each init with its own id', async () => {
    const { s } = await world();
    const prefix = `many-${randomText(8)}`;
    const opts = Array.from({ length: 40 }, (_, i): ConnectOptions => ({ externalId: `${prefix}-${i}`, name: `Device ${i}`, publicKey: `key-${i}`, version: '1.4.2' }));
    // The same device twice at once: one row, both connected.
    opts.push({ ...opts[0]!, name: 'Device 0 (again)' });
    const connected = await Promise.all(opts.map((o) => connect('client', s.token, o)));
    const rows = await sql<(Written & { external_id: string })[]>`
      select id, xmin::text as xmin, external_id, name, public_key, last_seen_version from clients where external_id like ${`${prefix}-%`}`;
    expect(rows).toHaveLength(40);
    const byExternal = new Map(rows.map((r) => [r.external_id, r]));
    for (const [i, o] of opts.entries()) {
      const row = byExternal.get(o.externalId!)!;
      if (i === 0 || i === 40) expect(['Device 0', 'Device 0 (again)']).toContain(row.name);
      else expect(row).toMatchObject({ name: o.name, public_key: o.publicKey, last_seen_version: '1.4.2' });
      expect(connected[i]!.init.payload.client_id).toBe(row.id);
    }
    // Each statement is a transaction of its own: distinct xmins count the statements.
    const statements = new Set(rows.map((r) => r.xmin)).size;
    expect(statements).toBeLessThan(opts.length / 4);
    for (const c of connected) c.device.close();
  });

  it('a row Postgres refuses fails only its own connect (503); the devices batched with it are written', async () => {
    const { s } = await world();
    const prefix = `batch-${randomText(8)}`;
    const refused = `${prefix}-refused`;
    const trigger = `refuse_${randomText(8)}`;
    await sql.unsafe(`create function ${trigger}() returns trigger language plpgsql as $$ begin raise exception 'refused by the test'; end $$`);
    await sql.unsafe(`create trigger ${trigger} before insert or update on clients for each row when (new.external_id = '${refused}') execute function ${trigger}()`);
    try {
      const ids = [...Array.from({ length: 9 }, (_, i) => `${prefix}-${i}`), refused];
      const responses = await Promise.all(ids.map((externalId) => tryConnect('client', s.token, { externalId })));
      const refusedRes = responses.pop()!;
      expect(refusedRes.status).toBe(503);
      expect(await refusedRes.json()).toEqual({ error: 'database unavailable, retry later' });
      expect(responses.map((r) => r.status)).toEqual(ids.slice(0, 9).map(() => 101));
      for (const r of responses) r.webSocket!.accept();
      const rows = await sql`select external_id from clients where external_id like ${`${prefix}-%`} order by external_id`;
      expect(rows.map((r) => r.external_id)).toEqual(ids.slice(0, 9).sort());
      for (const r of responses) r.webSocket!.close(1000, 'bye');
    } finally {
      await sql.unsafe(`drop trigger ${trigger} on clients; drop function ${trigger}()`);
    }
  });

  it(
    `a statement that never answers fails its connects after the ${STALL_MS} ms stall deadline instead of holding them, and the connects queued behind it go on`,
    async () => {
      const { s } = await world();
      const stuck = `stuck-${randomText(8)}`;
      const trigger = `hang_${randomText(8)}`;
      const endHung = () => sql`select pg_terminate_backend(pid) from pg_stat_activity where wait_event = 'PgSleep' and query like '%insert into clients%'`;
      // A row whose insert does not finish, as a statement on a connection lost without a reset.
      await sql.unsafe(`create function ${trigger}() returns trigger language plpgsql as $$ begin perform pg_sleep(3600); return new; end $$`);
      await sql.unsafe(`create trigger ${trigger} before insert or update on clients for each row when (new.external_id = '${stuck}') execute function ${trigger}()`);
      try {
        const started = Date.now();
        const hung = tryConnect('client', s.token, { externalId: stuck });
        // Queued behind the hung batch (one runs at a time), not in it.
        await new Promise((r) => setTimeout(r, 500));
        const queued = connect('client', s.token, { externalId: `queued-${randomText(8)}` });
        const res = await hung;
        expect(res.status).toBe(503);
        expect(Date.now() - started).toBeGreaterThanOrEqual(STALL_MS);
        expect(Date.now() - started).toBeLessThan(STALL_MS + 2_000);
        // Its batch ran on a new connection, but here it finishes only once the abandoned statement's
        // backend has ended: end it, as the server ends a dead client's backend in time.
        await endHung();
        const ended = Date.now();
        const { device } = await queued;
        expect(Date.now() - ended).toBeLessThan(5_000);
        device.close();
      } finally {
        await endHung();
        await sql.unsafe(`drop trigger ${trigger} on clients; drop function ${trigger}()`);
      }
    },
    STALL_MS + 30_000,
  );
});
