import { env, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { AccountState } from '../../src/access/account-state.ts';
import { bytesToUuid } from '../../src/ids.ts';
import type { AccountDO } from '../../workers/account/account-do.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect } from './support/device.ts';
import { database } from './support/world.ts';
import { holderOf } from './support/relays.ts';

const sql = database();

/** The tokens the object holds, in memory and in SQLite. */
async function cachedTokens(accountId: string): Promise<{ memory: string[]; stored: string[] }> {
  return await runInDurableObject(env.ACCOUNT.get(env.ACCOUNT.idFromName(accountId)), (instance: AccountDO, state) => {
    const memory = (instance as unknown as { memory?: { state: AccountState } }).memory;
    const stored = state.storage.sql.exec<{ id: ArrayBuffer }>('select id from c_tokens').toArray();
    return { memory: [...(memory?.state.tokens.keys() ?? [])].sort(), stored: stored.map((r) => bytesToUuid<'token'>(r.id) as string).sort() };
  });
}

describe('token expiry (docs/architecture.md#11-bounded)', () => {
  it('expired tokens leave memory and SQLite when the alarm, set to the expiry, handles them; a later change brings one back', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const expiresAt = Date.now() + 1_500;
    let token = '';
    let tokenId = '';
    let staleId = '';
    await account.apply(async (t) => {
      const live = await account.clientToken(t, s.actor.id, { expires_at: new Date(expiresAt) });
      const stale = await account.clientToken(t, s.actor.id, { expires_at: new Date(Date.now() - 60_000) });
      token = live.token;
      tokenId = live.row.id as string;
      staleId = stale.row.id as string;
    });
    const everything = [s.tokenRow.id as string, tokenId, staleId].sort();
    expect(await cachedTokens(account.id)).toEqual({ memory: everything, stored: everything });
    const { device } = await connect('client', token);
    const stub = holderOf(account.id);
    // Exactly at the socket's token expiry: nothing polls in between.
    expect(await runInDurableObject(stub, (_: AccountDO, state) => state.storage.getAlarm())).toBe(expiresAt);
    expect(await device.waitClosed(expiresAt - Date.now() + 1_000)).toEqual({ code: 4001, reason: 'token deleted or expired' });
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAt);
    // Both expired tokens are gone (the one no device used too); the one without an end stays.
    const left = [s.tokenRow.id as string];
    expect(await cachedTokens(account.id)).toEqual({ memory: left, stored: left });
    // No socket, no flow, nothing ahead: no alarm left to run.
    expect(await runInDurableObject(stub, (_: AccountDO, state) => state.storage.getAlarm())).toBeNull();
    expect(await runDurableObjectAlarm(stub)).toBe(false);
    // An expired token presented again is unknown now: 401 either way.
    const refused = await connect('client', token).catch((err: Error) => err.message);
    expect(refused).toMatch(/^connect: 401/);
    // A later update of the row (a new expiry) brings it back through the change path.
    await account.apply((t) => t.update('tokens', { id: tokenId }, { expires_at: new Date(Date.now() + 3_600_000) }));
    expect((await cachedTokens(account.id)).memory).toContain(tokenId);
    expect((await cachedTokens(account.id)).stored).toContain(tokenId);
    const back = await connect('client', token);
    expect(back.init.payload.client_id).toBeTruthy();
  });
});
