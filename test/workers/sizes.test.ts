import { env, listDurableObjectIds } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { SIGNATURE_HEADER, signBody } from '../../src/signature.ts';
import { MAX_QUERY_BYTES, PARAM_LIMITS } from '../../workers/connect-params.ts';
import { app } from '../../workers/index.ts';
import { MAX_CHANGES_BODY_BYTES } from '../../workers/routes/changes.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { tryConnect, websocketUrl } from './support/device.ts';
import { BASE, database, SECRET } from './support/world.ts';

const sql = database();

/** A body that the test hands out in 64 KiB chunks, counting what the Worker pulled. */
function countedBody(total: number): { body: ReadableStream<Uint8Array>; pulled: () => number } {
  const chunk = new TextEncoder().encode('x'.repeat(64 * 1024));
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (pulled >= total) return controller.close();
        pulled += chunk.length;
        controller.enqueue(chunk);
      },
    },
    { highWaterMark: 0 },
  );
  return { body, pulled: () => pulled };
}

async function post(route: string, init: RequestInit): Promise<Response> {
  return await app.request(`${BASE}/v1/accounts/${crypto.randomUUID()}/${route}`, { method: 'POST', ...init, duplex: 'half' } as RequestInit, env);
}

describe('sizes at the front door (docs/protocol.md#limits)', () => {
  it('caps every connect parameter: one character over is 400, at the cap connects', async () => {
    const s = await basicSetup(await TestAccount.create(sql));
    const over = async (opts: Parameters<typeof tryConnect>[2], token = s.token) => {
      const res = await tryConnect('client', token, { ...opts, bindings: env });
      expect(res.status).toBe(400);
      return ((await res.json()) as { detail: Record<string, string> }).detail;
    };
    expect(await over({ externalId: 'e'.repeat(PARAM_LIMITS.external_id + 1) })).toEqual({ external_id: 'must be at most 255 characters' });
    expect(await over({ name: 'n'.repeat(PARAM_LIMITS.name + 1) })).toEqual({ name: 'must be at most 255 characters' });
    expect(await over({ publicKey: 'k'.repeat(PARAM_LIMITS.public_key + 1) })).toEqual({ public_key: 'must be at most 256 characters' });
    expect(await over({ version: `1.4.2-${'r'.repeat(PARAM_LIMITS.version)}` })).toEqual({ version: 'must be at most 255 characters' });
    expect(await over({}, `${s.token}${'s'.repeat(PARAM_LIMITS.token)}`)).toEqual({ token: 'must be at most 512 characters' });
    const atCap = await tryConnect('client', s.token, {
      externalId: 'e'.repeat(PARAM_LIMITS.external_id),
      name: 'n'.repeat(PARAM_LIMITS.name),
      publicKey: 'k'.repeat(PARAM_LIMITS.public_key),
      bindings: env,
    });
    expect(atCap.status).toBe(101);
    atCap.webSocket!.accept();
    atCap.webSocket!.close(1000);
  });

  it(`answers 414 to a query string over ${MAX_QUERY_BYTES} bytes, before parsing it`, async () => {
    const s = await basicSetup(await TestAccount.create(sql));
    const url = `${websocketUrl('client', s.token)}&padding=${'p'.repeat(MAX_QUERY_BYTES)}`;
    const res = await app.request(url, { headers: { upgrade: 'websocket' } }, env);
    expect(res.status).toBe(414);
    expect(await res.json()).toEqual({ error: 'query string too long', detail: `at most ${MAX_QUERY_BYTES} bytes` });
  });

  it(`answers 413 to a changes body over ${MAX_CHANGES_BODY_BYTES} bytes, declared or streamed, without reading it whole`, async () => {
    const objects = (await listDurableObjectIds(env.ACCOUNT)).length;
    const signature = await signBody(SECRET, '{}', Math.floor(Date.now() / 1000));
    for (const route of ['changes', 'rehydrate']) {
      // Declared: refused on its content-length.
      const declared = countedBody(MAX_CHANGES_BODY_BYTES * 4);
      const big = await post(route, { headers: { [SIGNATURE_HEADER]: signature, 'content-length': String(MAX_CHANGES_BODY_BYTES + 1) }, body: declared.body });
      expect(big.status).toBe(413);
      expect(await big.json()).toEqual({ error: 'request body too large', detail: `at most ${MAX_CHANGES_BODY_BYTES} bytes` });
      expect(declared.pulled()).toBeLessThanOrEqual(64 * 1024);
      // Streamed without a length: read up to the cap, no further.
      const streamed = countedBody(MAX_CHANGES_BODY_BYTES * 4);
      const res = await post(route, { headers: { [SIGNATURE_HEADER]: signature }, body: streamed.body });
      expect(res.status).toBe(413);
      expect(streamed.pulled()).toBeLessThanOrEqual(MAX_CHANGES_BODY_BYTES + 2 * 64 * 1024);
    }
    expect((await listDurableObjectIds(env.ACCOUNT)).length).toBe(objects);
  });

  it('checks the signature header before reading any of the body', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [Record<string, string>, string][] = [
      [{}, 'signature missing'],
      [{ [SIGNATURE_HEADER]: 't=abc,v1=00' }, 'signature malformed'],
      [{ [SIGNATURE_HEADER]: (await signBody(SECRET, '{}', now - 301)).toString() }, 'signature expired'],
    ];
    for (const [headers, error] of cases) {
      const body = countedBody(MAX_CHANGES_BODY_BYTES * 4);
      const res = await post('changes', { headers, body: body.body });
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: string }).error).toBe(error);
      expect(body.pulled()).toBeLessThanOrEqual(64 * 1024);
    }
  });

  it('still takes a body just under the cap (a well-signed batch of this size is only a matter of validation)', async () => {
    const padding = 'p'.repeat(MAX_CHANGES_BODY_BYTES - 100);
    const body = JSON.stringify({ changes: [], padding });
    const res = await post('changes', { headers: { [SIGNATURE_HEADER]: await signBody(SECRET, body, Math.floor(Date.now() / 1000)), 'content-type': 'application/json' }, body });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ applied: 0, skipped: 0, position: null });
  });
});
