import { SELF } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect, tryConnect, websocketUrl } from './support/device.ts';
import { database } from './support/world.ts';

const sql = database();

async function status(res: Response): Promise<[number, string]> {
  const body = (await res.json()) as { error: string };
  return [res.status, body.error];
}

describe('GET /v1/{client,gateway}/websocket', () => {
  it('answers 400 naming each missing or malformed parameter', async () => {
    const res = await SELF.fetch('http://x/v1/client/websocket?token=abc&name=n&version=one', { headers: { upgrade: 'websocket' } });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: 'invalid parameters',
      detail: {
        token: 'must be <account_id>.<token_id>.<secret>',
        external_id: 'is required',
        public_key: 'is required',
        version: 'must be a semantic version like 1.4.2',
      },
    });
    const noUpgrade = await SELF.fetch(websocketUrl('client', `${crypto.randomUUID()}.${crypto.randomUUID()}.s`));
    expect(noUpgrade.status).toBe(426);
  });

  it('answers 401 for unknown, wrong, expired, deleted or mistyped tokens and inactive owners', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const [tokenAccount, tokenId] = s.token.split('.');
    expect(await status(await tryConnect('client', `${tokenAccount}.${crypto.randomUUID()}.secret`))).toEqual([401, 'invalid token']);
    expect(await status(await tryConnect('client', `${tokenAccount}.${tokenId}.wrong-secret`))).toEqual([401, 'invalid token']);
    expect(await status(await tryConnect('gateway', s.token))).toEqual([401, 'not a site token']);

    let expired = '';
    let deleted = '';
    let site = '';
    await account.apply(async (t) => {
      expired = (await account.clientToken(t, s.actor.id, { expires_at: new Date(Date.now() - 1000) })).token;
      const d = await account.clientToken(t, s.actor.id);
      deleted = d.token;
      site = (await account.siteToken(t, s.site.id)).token;
    });
    await account.apply((t) => t.softDelete('tokens', { id: deleted.split('.')[1] }));
    expect(await status(await tryConnect('client', expired))).toEqual([401, 'token expired']);
    expect(await status(await tryConnect('client', deleted))).toEqual([401, 'invalid token']);
    expect(await status(await tryConnect('client', site))).toEqual([401, 'not a client token']);

    await account.apply((t) => t.update('actors', { id: s.actor.id }, { disabled_at: new Date() }));
    expect(await status(await tryConnect('client', s.token))).toEqual([401, 'actor disabled or deleted']);
    await account.apply((t) => t.update('actors', { id: s.actor.id }, { disabled_at: null }));
    await account.apply((t) => t.update('accounts', { id: account.id }, { disabled_at: new Date() }));
    expect(await status(await tryConnect('client', s.token))).toEqual([401, 'account disabled or deleted']);
    // A token naming another account is refused there: by the directory or that account's object, which do not know it.
    const other = await TestAccount.create(sql, 'other');
    expect(await status(await tryConnect('client', `${other.id}.${tokenId}.${s.token.split('.')[2]}`))).toEqual([401, 'invalid token']);
  });

  it('upserts the client by (actor, external id) and answers init', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const first = await connect('client', s.token, { externalId: 'laptop', name: 'Laptop', publicKey: 'key-1', version: '1.4.2' });
    const [row] = await sql`select id, name, public_key, last_seen_version from clients where actor_id = ${s.actor.id as string}`;
    expect(row).toMatchObject({ name: 'Laptop', public_key: 'key-1', last_seen_version: '1.4.2' });
    expect(first.init.payload).toMatchObject({ client_id: row!.id, actor_id: s.actor.id });
    first.device.close();
    const again = await connect('client', s.token, { externalId: 'laptop', name: 'Laptop (renamed)', publicKey: 'key-2', version: '1.4.3' });
    const rows = await sql`select id, name, public_key, last_seen_version from clients where actor_id = ${s.actor.id as string}`;
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ id: row!.id, name: 'Laptop (renamed)', public_key: 'key-2', last_seen_version: '1.4.3' });
    expect(again.init.payload.client_id).toBe(row!.id);
    again.device.close();
  });

  it('answers malformed and unknown frames with an error and keeps the socket open; ping gets pong', async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const { device } = await connect('client', s.token);
    device.send('not json');
    expect(await device.next('error')).toEqual({ event: 'error', payload: { reason: 'malformed JSON' } });
    device.send({ hello: 1 });
    expect((await device.next('error')).payload.reason).toMatch(/^expected \{"event"/);
    device.send({ event: 'launch_missiles', payload: {} });
    expect(await device.next('error')).toEqual({ event: 'error', payload: { reason: 'unknown event: launch_missiles' } });
    device.send({ event: 'create_flow', payload: { resource_id: 'x' } });
    expect((await device.next('error')).payload.reason).toMatch(/^invalid create_flow payload: payload.resource_id: expected a uuid/);
    device.send('ping');
    await new Promise((r) => setTimeout(r, 100));
    expect(device.texts.at(-1)).toBe('pong');
    expect(device.closed).toBeUndefined();
    device.close();
  });
});
