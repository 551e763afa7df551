import { env, runInDurableObject, SELF } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { Change } from '../../src/change.ts';
import { signBody } from '../../src/signature.ts';
import type { AccountDO } from '../../workers/account/account-do.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect } from './support/device.ts';
import { BASE, database, deliver, postChanges } from './support/world.ts';

const sql = database();

function stubOf(accountId: string) {
  return env.ACCOUNT.get(env.ACCOUNT.idFromName(accountId));
}

/** The object's stored position, or null if it never stored one. */
async function positionOf(accountId: string): Promise<string | null> {
  return await runInDurableObject(stubOf(accountId), (_: AccountDO, state) => {
    state.storage.sql.exec('create table if not exists meta (key text primary key, value text not null) without rowid');
    return state.storage.sql.exec<{ value: string }>("select value from meta where key = 'position'").toArray()[0]?.value ?? null;
  });
}

describe('POST /v1/accounts/:id/changes', () => {
  it('rejects missing, malformed, expired and wrong signatures with 401 and applies nothing', async () => {
    const account = await TestAccount.create(sql);
    const changes = await account.commit(async (t) => {
      await account.actor(t);
    });
    const body = JSON.stringify({ changes });
    const now = Math.floor(Date.now() / 1000);
    const cases: Array<[string, string]> = [
      ['', 'signature missing'],
      ['t=abc,v1=00', 'signature malformed'],
      [await signBody('wrong-secret-0123456789', body, now), 'signature mismatch'],
      [await signBody(env.REPLICATOR_SECRET, body, now - 301), 'signature expired'],
      [(await signBody(env.REPLICATOR_SECRET, body, now)).replace(/v1=(.)/, (_m, c: string) => `v1=${c === '0' ? '1' : '0'}`), 'signature mismatch'],
    ];
    for (const [signature, error] of cases) {
      const res = await SELF.fetch(`${BASE}/v1/accounts/${account.id}/changes`, {
        method: 'POST',
        headers: signature ? { 'x-edgeplane-signature': signature } : {},
        body,
      });
      expect(res.status, signature).toBe(401);
      expect(((await res.json()) as { error: string }).error).toBe(error);
    }
    // A body signed for another body fails too.
    const other = await postChanges(account.id, changes, { signature: await signBody(env.REPLICATOR_SECRET, '{"changes":[]}', now) });
    expect(other.status).toBe(401);
    expect(await positionOf(account.id)).toBeNull();
  });

  it('rejects malformed bodies with 400 and a detail, and applies nothing', async () => {
    const account = await TestAccount.create(sql);
    const [change] = await account.commit(async (t) => {
      await account.actor(t);
    });
    // The detail names what is wrong: the parser's message, or the path of the first issue.
    const bad: Array<[string, string, string | null]> = [
      ['{"changes": [', 'malformed JSON', null],
      ['[]', 'invalid change batch', ''],
      [JSON.stringify({ changes: [{ ...change, lsn: 'nope' }] }), 'invalid change batch', 'changes.0.lsn'],
      [JSON.stringify({ changes: [{ ...change, table: 'flows' }] }), 'invalid change batch', 'changes.0.table'],
      [JSON.stringify({ changes: [{ ...change, op: 'upsert' }] }), 'invalid change batch', 'changes.0.op'],
      [JSON.stringify({ changes: [{ ...change, op: 'insert', data: null }] }), 'invalid change batch', 'changes.0.data'],
      [JSON.stringify({ changes: [{ ...change, seq: -1 }] }), 'invalid change batch', 'changes.0.seq'],
    ];
    for (const [body, error, path] of bad) {
      const res = await postChanges(account.id, [], { body });
      expect(res.status, body).toBe(400);
      const json = (await res.json()) as { error: string; detail: unknown };
      expect(json.error).toBe(error);
      if (path === null) {
        expect(typeof json.detail, body).toBe('string');
        expect((json.detail as string).length, body).toBeGreaterThan(0);
      } else expect((json.detail as { path: string }[])[0], body).toMatchObject({ path });
    }
    const res = await postChanges('not-a-uuid', [change!]);
    expect(res.status).toBe(400);
    expect(await positionOf(account.id)).toBeNull();
  });

  it("refuses a batch holding another account's change (tenant isolation) and applies none of it", async () => {
    const a = await TestAccount.create(sql, 'a');
    const b = await TestAccount.create(sql, 'b');
    const own = await a.commit(async (t) => {
      await a.actor(t);
    });
    const foreign = await b.commit(async (t) => {
      await b.actor(t);
    });
    const res = await postChanges(a.id, [...own, ...foreign]);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toBe('change of another account');
    expect(await positionOf(a.id)).toBeNull();
  });

  it('answers applied, skipped and position, and skips duplicate and stale batches', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const { device } = await connect('client', s.token);
    const rename = await account.commit(async (t) => {
      await t.update('resources', { id: s.resource.id }, { name: 'Wiki 2' });
    });
    const first = await deliver(account.id, rename);
    expect(first).toEqual({ applied: 1, skipped: 0, position: `${rename[0]!.lsn}:0` });
    expect((await device.next('resource_created_or_updated')).payload.name).toBe('Wiki 2');
    // The same batch again (an at-least-once replay) changes nothing and sends nothing.
    expect(await deliver(account.id, rename)).toEqual({ applied: 0, skipped: 1, position: `${rename[0]!.lsn}:0` });
    // An older change arriving late is dropped by position, even though it would change the view.
    const stale: Change = { ...rename[0]!, lsn: '0/1', data: { ...rename[0]!.data!, name: 'Stale' } } as Change;
    expect(await deliver(account.id, [stale])).toMatchObject({ applied: 0, skipped: 1 });
    expect(await device.drain()).toEqual([]);
    expect(await positionOf(account.id)).toBe(`${rename[0]!.lsn}:0`);
    device.close();
  });
});

describe('the Worker', () => {
  it('answers /healthz and a JSON 404 for unknown routes', async () => {
    const health = await SELF.fetch(`${BASE}/healthz`);
    expect(health.status).toBe(200);
    const missing = await SELF.fetch(`${BASE}/v1/nothing`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: 'not found', detail: 'GET /v1/nothing' });
  });
});
