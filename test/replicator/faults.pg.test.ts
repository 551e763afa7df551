import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import { migrate } from '../../migrations/migrate.ts';
import { startEmbeddedPostgres } from '../../dev/embedded-postgres.ts';
import { slotInvalidation, slotProblem } from '../../replicator/stream/setup.ts';
import { parseLsn } from '../../src/lsn.ts';
import { insertAccount, insertActor, Pipeline, SECRET } from '../support/pipeline.ts';
import { firstDeliveries, isSortedByPosition, keyOf } from '../support/positions.ts';
import { RecordingSink } from '../support/recording-sink.ts';
import { eventually, type LogLine, ReplicatorProcess } from '../support/replicator-process.ts';
import { TcpProxy } from '../support/tcp-proxy.ts';
import { withDatabase } from '../support/database.ts';

let pipeline: Pipeline | undefined;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await pipeline?.close();
  pipeline = undefined;
});

/** On failure, the last log lines of every replicator the test ran. */
function dumpLogsOnFailure(processes: () => ReplicatorProcess[]): void {
  onTestFailed(() => {
    for (const r of processes()) {
      console.error(
        `--- replicator ${r.pid} ---\n${r.logs
          .slice(-40)
          .map((l) => JSON.stringify(l))
          .join('\n')}\n${r.stderr.slice(-10).join('\n')}`,
      );
    }
  });
}

async function setup(prefix = 'fault'): Promise<Pipeline> {
  const p = await Pipeline.create(prefix);
  pipeline = p;
  dumpLogsOnFailure(() => p.processes);
  return p;
}

const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

describe('replicator faults', () => {
  it('loses nothing when SIGKILLed mid-stream: every change arrives at least once, first deliveries in order', async () => {
    const p = await setup();
    p.sink.behaviour = () => 200;
    let r = await p.replicator({ FORWARD_BATCH_SIZE: '3' });
    const accounts = [await insertAccount(p.sql), await insertAccount(p.sql), await insertAccount(p.sql)];
    const total = 300;
    let written = 0;
    const writer = (async () => {
      for (; written < total; written++) {
        await p.sql.begin(async (tx) => {
          await insertActor(tx, accounts[written % 3]!, `w${written}`);
          await insertActor(tx, accounts[(written + 1) % 3]!, `w${written}b`);
        });
      }
    })();
    for (let kill = 0; kill < 3; kill++) {
      const seen = p.sink.changes.length;
      await eventually(() => p.sink.changes.length > seen + 40, 30_000, 'progress before the kill');
      r.kill('SIGKILL');
      await r.exited;
      r = await p.replicator({ FORWARD_BATCH_SIZE: '3' });
    }
    await writer;
    const expected = 3 + total * 2;
    await eventually(() => firstDeliveries(p.sink.changes).length >= expected, 60_000, 'every change delivered');
    const firsts = firstDeliveries(p.sink.changes);
    expect(firsts).toHaveLength(expected);
    for (const account of accounts) expect(isSortedByPosition(firsts.filter((c) => c.accountId === account))).toBe(true);
    const names = new Set(firsts.filter((c) => c.table === 'actors').map((c) => c.data?.name));
    for (let i = 0; i < total; i++) expect(names.has(`w${i}`) && names.has(`w${i}b`)).toBe(true);
    // change_logs holds each delivered change exactly once, whatever the replays.
    const logged = await eventually(
      async () => {
        const rows = await p.sql<{ lsn: string; seq: number }[]>`select lsn, seq from change_logs`;
        return rows.length >= expected ? rows : undefined;
      },
      20_000,
      'change_logs complete',
    );
    expect(new Set(logged.map(keyOf))).toEqual(new Set(firsts.map(keyOf)));
    expect(logged).toHaveLength(expected);
  });

  it('drains on SIGTERM: in-flight batches finish, the ack covers them, exit code 0', async () => {
    const p = await setup();
    p.sink.behaviour = () => 200;
    const r = await p.replicator({ FORWARD_BATCH_SIZE: '1' });
    const a = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    // Each request takes 150 ms: when SIGTERM arrives, most changes are still queued or in flight.
    p.sink.behaviour = () => new Promise((resolve) => setTimeout(() => resolve(200), 150));
    for (let i = 0; i < 10; i++) await insertActor(p.sql, a, `t${i}`);
    await eventually(() => p.sink.requests >= 2);
    // Everything received (a busy machine may stream it late; what was never received is not drained)...
    await eventually(async () => metric((await r.get('/metrics')).text, 'edgeplane_replicator_changes_total') >= 11, 10_000, 'all changes received');
    // ...and most of it not delivered yet.
    expect(firstDeliveries(p.sink.changes).length).toBeLessThan(11);
    r.kill('SIGTERM');
    const exit = await r.exited;
    expect(exit.code).toBe(0);
    expect(r.logs.some((l) => l.msg === 'drained')).toBe(true);
    const confirmed = await p.confirmedFlush();
    const delivered = firstDeliveries(p.sink.changes);
    expect(delivered).toHaveLength(11);
    for (const c of delivered) expect(parseLsn(c.lsn)).toBeLessThan(confirmed);
  });

  it('runs a standby that waits while the slot is active and takes over when the first dies', async () => {
    const p = await setup();
    const first = await p.replicator();
    const standby = await p.replicator({}, false);
    await standby.waitForLog((l) => l.msg === 'slot is active elsewhere; waiting as standby');
    expect((await standby.get('/readyz')).status).toBe(503);
    expect((await standby.get('/healthz')).status).toBe(200);
    expect((await first.get('/readyz')).status).toBe(200);
    const a = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    first.kill('SIGKILL');
    await first.exited;
    await standby.streaming(30_000);
    await insertActor(p.sql, a, 'after-takeover');
    await eventually(() => p.sink.changes.some((c) => c.data?.name === 'after-takeover'), 20_000, 'delivery by the standby');
    expect((await standby.get('/readyz')).status).toBe(200);
  });

  it('keeps reading while the Worker refuses: the slot is confirmed past what is logged, and the account gets it all later', async () => {
    const p = await setup();
    let open = false;
    p.sink.behaviour = () => (open ? 200 : 503);
    const r = await p.replicator({ MAX_UNACKED: '50', FORWARD_BATCH_SIZE: '10', RETRY_MAX_MS: '200' });
    const a = await insertAccount(p.sql);
    await p.sql`insert into actors (account_id, name, type) select ${a}, 'x', 'account_user' from generate_series(1, 10)`;
    for (let i = 0; i < 200; i++) await insertActor(p.sql, a, `b${i}`);
    const target = await p.currentWal();
    await eventually(async () => (await p.confirmedFlush()) >= target, 10_000, 'the slot confirmed past every logged change while the Worker refuses');
    expect(metric((await r.get('/metrics')).text, 'edgeplane_replicator_paused')).toBe(0);
    const health = JSON.parse((await r.get('/healthz')).text) as { healthy: boolean; status: string; accounts: { behind: number; worst: { account: string; state: string }[] } };
    expect(health).toMatchObject({ healthy: true, status: 'lagging', accounts: { behind: 1, worst: [{ account: a, state: 'retrying' }] } });
    open = true;
    await eventually(() => firstDeliveries(p.sink.changes).length >= 211, 30_000, 'everything once the Worker answers');
    expect(isSortedByPosition(firstDeliveries(p.sink.changes))).toBe(true);
  });

  it('pauses reading when MAX_UNACKED changes wait for change_logs, says it lags (not stalled), and resumes', async () => {
    const p = await setup();
    p.sink.behaviour = () => 200;
    const r = await p.replicator({ MAX_UNACKED: '50', STALL_ALERT_MS: '1000' });
    const a = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    let release!: () => void;
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = p.sql.begin(async (tx) => {
      await tx`lock table change_logs in access exclusive mode`;
      locked();
      await new Promise<void>((resolve) => (release = resolve));
    });
    await isLocked;
    for (let i = 0; i < 120; i++) await insertActor(p.sql, a, `b${i}`);
    await eventually(async () => metric((await r.get('/metrics')).text, 'edgeplane_replicator_paused') === 1, 20_000, 'paused');
    // Reading paused for longer than the stall alert: the stream is not stalled, change_logs is.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const health = JSON.parse((await r.get('/healthz')).text) as { unacked: number; reasons: string[] };
    expect(health.unacked).toBeLessThanOrEqual(50 + 20);
    expect(health.reasons.join(' ')).not.toContain('stream stalled');
    release();
    await holder;
    await eventually(() => firstDeliveries(p.sink.changes).filter((c) => c.table === 'actors').length >= 120, 30_000, 'everything after resuming');
    await eventually(async () => metric((await r.get('/metrics')).text, 'edgeplane_replicator_paused') === 0, 5_000, 'resumed');
  });

  it('tears down a half-open connection, fails /healthz meanwhile, and resumes on a new one', async () => {
    const p = await setup();
    const proxy = await new TcpProxy(Number(new URL(p.db.url).port)).start();
    cleanups.push(() => proxy.close());
    const url = new URL(p.db.url);
    url.port = String(proxy.port);
    const r = await p.replicator({ DATABASE_URL: url.toString(), REPLICATION_TIMEOUT_MS: '2000', STATUS_INTERVAL_MS: '200' });
    const a = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    expect((await r.get('/healthz')).status).toBe(200);
    expect(proxy.freezeExisting()).toBeGreaterThan(0);
    await insertActor(p.sql, a, 'during-stall');
    await eventually(async () => (await r.get('/healthz')).status === 503, 5_000, '/healthz failing while stalled');
    await r.waitForLog((l) => l.msg === 'no message from the server; reconnecting', 10_000);
    await eventually(() => p.sink.changes.some((c) => c.data?.name === 'during-stall'), 30_000, 'delivery after reconnecting');
    await eventually(async () => (await r.get('/healthz')).status === 200, 10_000, 'healthy again');
  });

  it('reconnects without acknowledging an undecodable message, then delivers it', async () => {
    const p = await setup();
    const proxy = await new TcpProxy(Number(new URL(p.db.url).port)).start();
    cleanups.push(() => proxy.close());
    const url = new URL(p.db.url);
    url.port = String(proxy.port);
    const r = await p.replicator({ DATABASE_URL: url.toString() });
    const a = await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    // Settled: the first change's acknowledgment has reached the slot. While idle the slot may move
    // on to the server's WAL end, so it is bounded below by the tampered commit, not pinned.
    const first = parseLsn(p.sink.changes[0]!.lsn);
    await eventually(async () => (await p.confirmedFlush()) > first, 10_000, 'the first change acknowledged');
    // The next Insert's relation OID becomes one the decoder never saw.
    proxy.tamper = (payload) => {
      if (payload[0] !== 0x49) return false;
      payload.writeUInt32BE(0xfffffff0, 1);
      return true;
    };
    // The slot's position from before the commit, through the error and the reconnect, until the
    // change is delivered (it is acknowledged once logged, so not after that).
    const samples: bigint[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        samples.push(await p.confirmedFlush());
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    let error: LogLine;
    try {
      await insertActor(p.sql, a, 'tampered');
      error = await r.waitForLog((l) => l.msg === 'undecodable replication message; reconnecting without acknowledging it');
      await r.waitForLog((l) => l.msg === 'streaming' && r.logs.indexOf(l) > r.logs.indexOf(error));
    } finally {
      sampling = false;
      await sampler;
    }
    expect(String(error.err)).toContain('PgoutputDecodeError');
    expect(error.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    await eventually(() => p.sink.changes.some((c) => c.data?.name === 'tampered'), 10_000, 'the change delivered');
    const committedAt = parseLsn(p.sink.changes.find((c) => c.data?.name === 'tampered')!.lsn);
    // The session that could not decode it did not acknowledge past it, nor did anything before
    // the next session streamed it again.
    expect(parseLsn(String(error.lsn))).toBeLessThanOrEqual(committedAt);
    expect(parseLsn(String(error.acked))).toBeLessThanOrEqual(committedAt);
    for (const s of samples) expect(s).toBeLessThanOrEqual(committedAt);
    expect(proxy.tampered).toBe(1);
    expect(metric((await r.get('/metrics')).text, 'edgeplane_replicator_decode_errors_total')).toBe(1);
  });

  it('reconnects with backoff after Postgres restarts and resumes from the slot', async () => {
    const cluster = await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-restart-${randomBytes(4).toString('hex')}`) });
    cleanups.push(() => cluster.stop());
    const sink = await new RecordingSink(SECRET).start();
    cleanups.push(() => sink.stop());
    const url = withDatabase(cluster.url, 'postgres');
    let sql = postgres(url, { max: 1, onnotice: () => {} });
    await migrate(sql);
    const r = new ReplicatorProcess({ DATABASE_URL: url, EDGE_URL: sink.url, REPLICATOR_SECRET: SECRET, RETRY_BASE_MS: '20', RETRY_MAX_MS: '200' });
    cleanups.push(() => r.stop());
    dumpLogsOnFailure(() => [r]);
    await r.streaming();
    const a = await insertAccount(sql);
    await eventually(() => sink.changes.length >= 1);
    await sql.end();
    await cluster.restart();
    sql = postgres(url, { max: 1, onnotice: () => {} });
    cleanups.push(() => sql.end());
    await insertActor(sql, a, 'after-restart');
    await eventually(() => sink.changes.some((c) => c.data?.name === 'after-restart'), 60_000, 'delivery after the restart');
    expect(r.logs.filter((l) => l.msg === 'streaming').length).toBeGreaterThanOrEqual(2);
    expect(r.logs.some((l) => l.msg === 'replication session ended; reconnecting')).toBe(true);
  });
  it('lets Postgres shut down while changes wait for the Worker, and delivers them after the restart', async () => {
    const cluster = await startEmbeddedPostgres({ dataDir: path.join(tmpdir(), `edgeplane-shutdown-${randomBytes(4).toString('hex')}`) });
    cleanups.push(() => cluster.stop());
    const sink = await new RecordingSink(SECRET).start();
    cleanups.push(() => sink.stop());
    sink.behaviour = () => 503;
    const url = withDatabase(cluster.url, 'postgres');
    let sql = postgres(url, { max: 1, onnotice: () => {} });
    await migrate(sql);
    const r = new ReplicatorProcess({ DATABASE_URL: url, EDGE_URL: sink.url, REPLICATOR_SECRET: SECRET, RETRY_BASE_MS: '20', RETRY_MAX_MS: '200' });
    cleanups.push(() => r.stop());
    dumpLogsOnFailure(() => [r]);
    await r.streaming();
    await insertAccount(sql, 'waiting');
    // Logged, refused by the Worker, so not acknowledged: the walsender waits for an acknowledgement
    // that cannot come, and a replicator that kept its connections would hold the shutdown forever.
    await eventually(async () => (await sql`select 1 from change_logs`).length === 1 && sink.requests >= 2, 20_000, 'logged, delivery failing');
    await sql.end();
    const restarted = await Promise.race([cluster.restart().then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 20_000))]);
    expect(restarted).toBe(true);
    sink.behaviour = () => 200;
    sql = postgres(url, { max: 1, onnotice: () => {} });
    cleanups.push(() => sql.end());
    await eventually(() => sink.changes.some((c) => c.data?.name === 'waiting'), 60_000, 'delivery after the restart');
    const [logged] = await sql<{ n: number }[]>`select count(*)::int as n from change_logs`;
    expect(logged!.n).toBe(1);
  });
});

describe('replicator configuration', () => {
  it('exits with code 2 and names each missing or invalid variable', async () => {
    const r = new ReplicatorProcess({ EDGE_URL: 'not a url', REPLICATOR_SECRET: 'short', MAX_UNACKED: 'many' });
    const exit = await r.exited;
    expect(exit.code).toBe(2);
    const text = r.stderr.join('\n');
    expect(text).toContain('DATABASE_URL is required');
    expect(text).toContain('EDGE_URL');
    expect(text).toContain('REPLICATOR_SECRET');
    expect(text).toContain('MAX_UNACKED');
    expect(text).not.toContain('SLOT_NAME');
  });

  it('fails /healthz, naming the cause, while it cannot replicate as configured', async () => {
    const p = await setup('unusable');
    // A physical slot by the configured name: retrying cannot fix that, somebody has to act.
    await p.sql`select pg_create_physical_replication_slot(${p.slot})`;
    const r = await p.replicator({}, false);
    await r.waitForLog((l) => l.msg === 'replication session ended; reconnecting' && l.level === 'error');
    const health = await eventually(
      async () => {
        const response = await r.get('/healthz');
        return response.status === 503 ? (JSON.parse(response.text) as { reasons: string[]; ready: boolean }) : undefined;
      },
      10_000,
      '/healthz failing',
    );
    expect(health.ready).toBe(false);
    expect(health.reasons.join(' ')).toMatch(/cannot replicate: SetupError: replication slot \S+ exists but is a physical slot/);
  });

  it('recognizes an invalidated slot (which the replicator drops and recreates in a new epoch)', () => {
    const row = { plugin: 'pgoutput', slot_type: 'logical', database: 'app', current: 'app', confirmed_flush_lsn: '0/16B3748', active_pid: null };
    expect(slotInvalidation({ ...row, wal_status: 'reserved', invalidation_reason: null })).toBeUndefined();
    expect(slotInvalidation({ ...row, wal_status: 'lost', invalidation_reason: null })).toBe('wal_status lost');
    expect(slotInvalidation({ ...row, wal_status: 'lost', invalidation_reason: 'wal_removed' })).toBe('wal_removed');
    expect(slotProblem('edgeplane', { ...row, wal_status: 'lost', invalidation_reason: 'wal_removed' })).toBeUndefined();
  });

  it('serves /healthz, /readyz and /metrics', async () => {
    const p = await setup('health');
    const r = await p.replicator();
    await insertAccount(p.sql);
    await eventually(() => p.sink.changes.length >= 1);
    const health = await r.get('/healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.text)).toMatchObject({ healthy: true, ready: true, state: 'streaming' });
    expect((await r.get('/readyz')).status).toBe(200);
    const metrics = (await r.get('/metrics')).text;
    for (const name of ['received_lsn', 'acked_lsn', 'lag_bytes', 'changes_total', 'batches_in_flight', 'retries_total', 'decode_errors_total', 'slot_retained_wal_bytes']) {
      expect(metrics).toContain(`edgeplane_replicator_${name}`);
    }
    await eventually(async () => metric((await r.get('/metrics')).text, 'edgeplane_replicator_acked_lsn') > 0, 5000, 'acked LSN exported');
    expect((await r.get('/nope')).status).toBe(404);
  });
});
