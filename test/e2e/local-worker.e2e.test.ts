import { describe, expect, it } from 'vitest';
import type { Device } from '../support/e2e-device.ts';
import { useStack } from '../support/e2e-stack.ts';
import { createAccount } from '../support/e2e-world.ts';

/**
 * The local Worker as `npm start` runs it (dev/worker.ts, the Miniflare API; docs/protocol.md#local-run)
 * where a device can tell the difference from a deployed one.
 */
const e2e = useStack({ tail: 40 });

/** From the close frame to the client's `close` event (the TCP connection ended). */
const CLOSE_EVENT_MS = 500;

describe('the local Worker', () => {
  it('token revoked: every device socket reaches its close event within 500 ms of the close frame (4001)', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1 });
    // Several devices of one token (their own external ids): one revocation closes them all at once.
    const clients: Device[] = [];
    for (let i = 0; i < 8; i++) {
      const d = e2e.stack.device('client', a.clientToken);
      await d.connect();
      clients.push(d);
    }
    const gateway = e2e.stack.device('gateway', a.siteToken);
    await gateway.connect();

    await sql`update tokens set deleted_at = now() where id = ${a.clientTokenId}`;
    for (const c of clients) await c.waitClosed(15_000);
    await sql`update tokens set deleted_at = now() where account_id = ${a.id} and type = 'site'`;
    await gateway.waitClosed(15_000);

    const lags = [...clients, gateway].map((d) => {
      expect(d.closeFrame?.code).toBe(4001);
      expect(d.closed?.code).toBe(4001);
      return d.closed!.at - d.closeFrame!.at;
    });
    console.log(`close frame -> close event, ms: ${lags.join(', ')}`);
    for (const lag of lags) expect(lag).toBeLessThan(CLOSE_EVENT_MS);
  });

  it('a device that never sent a frame: the close frame is prompt, the close event waits for the object to be evicted (workerd)', async () => {
    const sql = e2e.stack.db.sql;
    const a = await createAccount(sql, { resources: 1 });
    const silent = e2e.stack.device('client', a.clientToken, { silent: true });
    await silent.connect();
    const since = Date.now();
    await sql`update tokens set deleted_at = now() where id = ${a.clientTokenId}`;
    expect((await silent.waitCloseFrame(5_000)).code).toBe(4001);
    expect(silent.closeFrame!.at - since).toBeLessThan(CLOSE_EVENT_MS);
    // Bounded by the object's eviction after 10 s without events, not by ws's own 30 s close timeout.
    const closed = await silent.waitClosed(15_000);
    console.log(`silent device: close frame -> close event ${closed.at - silent.closeFrame!.at} ms`);
  });
});
