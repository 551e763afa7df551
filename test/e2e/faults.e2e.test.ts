import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { expectConverged } from '../support/e2e-convergence.ts';
import { ConnectRefused, Device } from '../support/e2e-device.ts';
import { SwallowingProxy } from '../support/e2e-proxy.ts';
import { useStack } from '../support/e2e-stack.ts';
import { Workload } from '../support/e2e-workload.ts';
import { createAccount } from '../support/e2e-world.ts';

/**
 * Faults while changes stream through the whole system. Each test ends with the convergence check
 * (every client's replayed view equals the access rule computed from the database) and, where
 * every commit was answered, with change_logs holding exactly the row changes committed: nothing
 * lost, nothing twice.
 */
const STALL_MS = 2_000;
// The Worker's database stall deadline, short enough for a test (docs/architecture.md#database-stalls).
const e2e = useStack({ tail: 80, workerVars: { DATABASE_STALL_MS: String(STALL_MS) } });

async function clientsOf(w: Workload, perAccount: number): Promise<Device[]> {
  const out: Device[] = [];
  for (const a of w.accounts) {
    for (let i = 0; i < perAccount; i++) {
      const d = e2e.stack.device('client', a.clientToken);
      await d.connect();
      out.push(d);
    }
  }
  return out;
}

/** change_logs equals the committed row changes, once the replicator caught up. */
async function expectAllLogged(w: Workload, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const logged = await w.logged();
    const diff = [...w.counts.committed].filter(([k, n]) => logged.get(k) !== n).map(([k, n]) => `${k}: committed ${n}, logged ${logged.get(k) ?? 0}`);
    for (const k of logged.keys()) if (!w.counts.committed.has(k)) diff.push(`${k}: logged ${logged.get(k)} but nothing committed`);
    if (diff.length === 0) return;
    if (Date.now() > deadline) throw new Error(`change_logs does not match the commits:\n  ${diff.join('\n  ')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Changes the Worker accepted (2xx), as the replicator counts them. */
async function delivered(): Promise<number> {
  return (await e2e.stack.metrics()).get('edgeplane_replicator_changes_delivered_total') ?? 0;
}

async function waitFor(test: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await test()); ) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function retries(): Promise<number> {
  let n = 0;
  for (const [k, v] of await e2e.stack.metrics()) if (k.startsWith('edgeplane_replicator_retries_total')) n += v;
  return n;
}

describe('faults', () => {
  it('SIGKILL of the replicator, again and again, during a stream of commits: nothing lost, views converge', async () => {
    const w = await Workload.create(e2e.stack.db.sql, 2);
    const clients = await clientsOf(w, 2);
    let kills = 0;
    const writer = w.run(12_000, 40);
    const killer = (async () => {
      const until = Date.now() + 11_000;
      while (Date.now() < until) {
        await new Promise((r) => setTimeout(r, 1200 + Math.random() * 800));
        await e2e.stack.stopReplicator('SIGKILL');
        kills++;
        // Sometimes at once, sometimes after a pause: the old walsender may still hold the slot.
        if (kills % 2 === 0) await new Promise((r) => setTimeout(r, 300));
        await e2e.stack.startReplicator(false);
      }
    })();
    await Promise.all([writer, killer]);
    expect(kills).toBeGreaterThanOrEqual(4);
    expect(w.commits).toBeGreaterThan(300);
    await expectConverged(e2e.stack.db.sql, clients, 90_000);
    await expectAllLogged(w);
    for (const c of clients) expect(c.connections).toBe(1);
  });

  it('the Worker stopped for 10 s during commits: the replicator retries, nothing is lost once it is back', async () => {
    const w = await Workload.create(e2e.stack.db.sql, 2);
    const clients = await clientsOf(w, 1);
    const retriesBefore = await retries();
    const writer = w.run(16_000, 30);
    await new Promise((r) => setTimeout(r, 3000));
    await e2e.stack.stopWorker('SIGTERM');
    for (const c of clients) await c.waitClosed(20_000);
    await new Promise((r) => setTimeout(r, 10_000));
    await e2e.stack.startWorker();
    // Devices reconnect, as real ones do, and start again from a fresh init.
    for (const c of clients) await c.reconnect();
    await writer;
    await expectConverged(e2e.stack.db.sql, clients, 60_000);
    await expectAllLogged(w);
    expect(await retries()).toBeGreaterThan(retriesBefore);
  });

  it('a hydration stalled by a lock: each delivery gets a 503 after the stall deadline, not a timeout; a device of the new account is told to retry (503, not 401); once the lock goes the account is served, nothing lost', async () => {
    const sql = e2e.stack.db.sql;
    const lock = await sql.reserve();
    const from = e2e.stack.logs.length;
    try {
      // Its directory shard is filled before the account commits: the account is known only once
      // a batch of it reaches the Worker, which its stalled object cannot apply.
      const id = randomUUID();
      const forged = e2e.stack.device('client', `${id}.${randomUUID()}.${'x'.repeat(43)}`);
      const unknown = await forged.connect(STALL_MS).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect((unknown as ConnectRefused).status).toBe(401);
      // The account's first batch hydrates its object, whose read of `gateways` waits for the lock.
      await lock`begin`;
      await lock`lock table gateways in access exclusive mode`;
      const a = await createAccount(sql, { resources: 2, id });
      const firstFailure = await e2e.stack.waitForLog('replicator', (l) => l.includes(a.id) && l.includes('delivery failed; retrying'), 15_000, from);
      const failure = JSON.parse(firstFailure.line) as { reason: string; err: string };
      // The Worker answered, naming the stalled operation: the replicator did not have to time out.
      expect(failure.reason).toBe('503');
      expect(failure.err).toContain(`no answer from the database for ${STALL_MS} ms`);
      // A device of the account meanwhile is told to retry, not held.
      const early = e2e.stack.device('client', a.clientToken);
      const refused = await early.connect(STALL_MS * 3).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(refused).toBeInstanceOf(ConnectRefused);
      expect((refused as ConnectRefused).status).toBe(503);
      await lock`rollback`;
      const released = Date.now();
      const c = e2e.stack.device('client', a.clientToken);
      // Retried as devices do after a 503: the object answers a failed hydration's error for 1 s,
      // then the replicator's next retry (every RETRY_MAX_MS, 500 ms, at most) hydrates it.
      await c.reconnect(STALL_MS);
      expect(Date.now() - released).toBeLessThan(STALL_MS);
      expect(c.view.size).toBe(2);
      const timeouts = e2e.stack.logs.slice(from).filter((l) => l.source === 'replicator' && l.line.includes(a.id) && l.line.includes('"reason":"timeout"'));
      expect(timeouts).toEqual([]);
      await expectConverged(sql, [c]);
    } finally {
      await lock`rollback`.catch(() => undefined);
      lock.release();
    }
  });

  it('an object that stored a batch but crashed before its sends reached the client: the client converges after reconnecting', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 2 });
    const proxy = await new SwallowingProxy(() => e2e.stack.workerPort).start();
    // Uncompressed, so that the proxy sees which frame it swallowed.
    const c = new Device(() => proxy.url, 'client', a.clientToken, { plain: true });
    try {
      await c.connect();
      expect(c.view.size).toBe(2);
      // Everything so far (the client's own upsert included) delivered and acknowledged.
      await waitAcked();
      const r0 = a.resources[0]!;
      proxy.swallowing = true;
      const before = await delivered();
      await sql`update policies set disabled_at = now() where id = ${r0.policyId}`;
      // The Worker answers 2xx only once the object stored the batch; its frame went out into the proxy.
      await waitFor(async () => (await delivered()) > before, 'the replicator to count the change delivered');
      // The change's frame left the Worker (into the proxy) before the crash: sent, never received.
      await waitFor(async () => proxy.swallowed.includes(r0.id), 'the frame to leave the Worker', 2_000);
      await e2e.stack.stopWorker('SIGKILL');
      // The client never saw the change: its view is stale.
      expect(c.view.has(r0.id)).toBe(true);
      proxy.swallowing = false;
      proxy.dropAll();
      await c.waitClosed();
      await e2e.stack.startWorker();
      await c.reconnect();
      await expectConverged(sql, [c]);
      expect(c.view.has(r0.id)).toBe(false);
    } finally {
      c.terminate();
      await proxy.close();
    }
  });
});

/** The slot's confirmed position reached the current WAL position: every change so far is delivered. */
async function waitAcked(timeoutMs = 30_000): Promise<void> {
  const sql = e2e.stack.db.sql;
  const [target] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await sql<{ done: boolean }[]>`
      select confirmed_flush_lsn >= ${target!.lsn}::pg_lsn as done from pg_replication_slots where slot_name = ${e2e.stack.db.name}`;
    if (row?.done) return;
    if (Date.now() > deadline) throw new Error('the slot did not catch up');
    await new Promise((r) => setTimeout(r, 50));
  }
}
