import { env, listDurableObjectIds } from 'cloudflare:test';
import { describe, expect, it, vi } from 'vitest';
import type { Change } from '../../src/change.ts';
import { SIGNATURE_HEADER, signBody } from '../../src/signature.ts';
import { app } from '../../workers/index.ts';
import { basicSetup, TestAccount } from './support/account.ts';
import { connect, tryConnect } from './support/device.ts';
import { BASE, database } from './support/world.ts';

const sql = database();

/** wrangler.toml's `[[ratelimits]] CONNECTS_PER_IP`. */
const PER_ADDRESS = 1000;
/** test/vitest.config.ts's `TEST_TIGHT_CONNECTS`. */
const TIGHT = 5;
const WINDOW_MS = 10_000;

/** A deployed Worker: no EDGEPLANE_ENV. */
function production(overrides: Partial<Env> = {}): Env {
  return { ...env, EDGEPLANE_ENV: undefined, ...overrides };
}

/** Miniflare's rate-limit windows are aligned to the clock: start where at least `ms` are left in one. */
async function windowWithRoom(ms: number): Promise<void> {
  const left = WINDOW_MS - (Date.now() % WINDOW_MS);
  if (left < ms) await new Promise((r) => setTimeout(r, left + 10));
}

async function errorOf(res: Response): Promise<[number, string]> {
  if (res.status === 101) {
    res.webSocket!.accept();
    res.webSocket!.close(1000);
    return [101, ''];
  }
  return [res.status, ((await res.json()) as { error: string }).error];
}

async function postSigned(bindings: Env, accountId: string, changes: readonly Change[], secret: string): Promise<Response> {
  const body = JSON.stringify({ changes });
  const signature = await signBody(secret, body, Math.floor(Date.now() / 1000));
  return await app.request(
    `${BASE}/v1/accounts/${accountId}/changes`,
    { method: 'POST', headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature }, body },
    bindings,
  );
}

describe('connect rate limits (docs/protocol.md#rate-limits)', () => {
  it(`answers 429 to a flood from one address past ${PER_ADDRESS} connects in a window; another address still connects`, async () => {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    const flooder = '203.0.113.7';
    await windowWithRoom(6_000);
    const statuses = new Map<number, number>();
    let next = 0;
    const total = PER_ADDRESS + 100;
    // Malformed connects: every attempt counts, before anything else is looked at.
    const worker = async () => {
      while (next++ < total) {
        const res = await app.request(`${BASE}/v1/client/websocket?token=flood`, { headers: { upgrade: 'websocket', 'cf-connecting-ip': flooder } }, env);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        await res.body?.cancel();
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    expect(Object.fromEntries(statuses)).toEqual({ 400: PER_ADDRESS, 429: 100 });

    const refused = await tryConnect('client', s.token, { ip: flooder, bindings: env });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('10');
    expect(await refused.json()).toEqual({ error: 'too many connects', detail: 'from this address; retry in 10 s' });
    expect(await errorOf(await tryConnect('client', s.token, { ip: '203.0.113.8', bindings: env }))).toEqual([101, '']);
  });

  it('answers 429 past the account limit; other accounts still connect', async () => {
    const tight = { ...env, CONNECTS_PER_ACCOUNT: (env as unknown as { TEST_TIGHT_CONNECTS: RateLimit }).TEST_TIGHT_CONNECTS };
    const a = await basicSetup(await TestAccount.create(sql));
    const b = await basicSetup(await TestAccount.create(sql));
    await windowWithRoom(5_000);
    for (let i = 0; i < TIGHT; i++) expect(await errorOf(await tryConnect('client', a.token, { ip: `192.0.2.${i}`, bindings: tight }))).toEqual([101, '']);
    const refused = await tryConnect('client', a.token, { ip: '192.0.2.200', bindings: tight });
    expect(refused.status).toBe(429);
    expect(await refused.json()).toEqual({ error: 'too many connects', detail: 'from this account; retry in 10 s' });
    expect(await errorOf(await tryConnect('client', b.token, { ip: '192.0.2.201', bindings: tight }))).toEqual([101, '']);
  });

  it('RATE_LIMITS=off turns them off in a local run only', async () => {
    const tight = { CONNECTS_PER_ACCOUNT: (env as unknown as { TEST_TIGHT_CONNECTS: RateLimit }).TEST_TIGHT_CONNECTS, RATE_LIMITS: 'off' };
    const local = await basicSetup(await TestAccount.create(sql));
    const deployed = await basicSetup(await TestAccount.create(sql));
    await windowWithRoom(5_000);
    for (let i = 0; i <= TIGHT; i++) expect(await errorOf(await tryConnect('client', local.token, { ip: `192.0.2.${i}`, bindings: { ...env, ...tight } }))).toEqual([101, '']);
    for (let i = 0; i < TIGHT; i++) expect(await errorOf(await tryConnect('client', deployed.token, { ip: `192.0.2.${i}`, bindings: production(tight) }))).toEqual([101, '']);
    expect(await errorOf(await tryConnect('client', deployed.token, { ip: '192.0.2.9', bindings: production(tight) }))).toEqual([429, 'too many connects']);
  });
});

describe('the replicator secret of a deployed Worker (docs/protocol.md#worker-health-and-errors)', () => {
  const good = Array.from(crypto.getRandomValues(new Uint8Array(24)), (b) => b.toString(16).padStart(2, '0')).join('');
  const cases: [string, string | undefined, string[]][] = [
    ['missing', undefined, ['REPLICATOR_SECRET is not set (wrangler secret put REPLICATOR_SECRET; local runs: .dev.vars or --var)']],
    ['shorter than 32 bytes', 'a-secret-of-31-bytes-0123456789', ['REPLICATOR_SECRET is shorter than 32 bytes']],
    ['a development value', 'edgeplane-local-development-secret', ['REPLICATOR_SECRET is a development value that anyone can read']],
    ['the tests’ value', env.REPLICATOR_SECRET, ['REPLICATOR_SECRET is a development value that anyone can read']],
    ['short and public', 'bench-secret-0123456789', ['REPLICATOR_SECRET is shorter than 32 bytes', 'REPLICATOR_SECRET is a development value that anyone can read']],
  ];

  // First of these tests: a distinct set of problems is logged once per isolate.
  it('logs the refusal once per isolate', async () => {
    const spy = vi.spyOn(console, 'error');
    try {
      const bindings = production({ REPLICATOR_SECRET: `short-${crypto.randomUUID().slice(0, 8)}` });
      for (let i = 0; i < 3; i++) await app.request(`${BASE}/healthz`, {}, bindings);
      const lines = spy.mock.calls.map((c) => String(c[0])).filter((l) => l.includes('refusing to accept changes'));
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'error', component: 'worker', problems: ['REPLICATOR_SECRET is shorter than 32 bytes'] });
    } finally {
      spy.mockRestore();
    }
  });

  for (const [what, secret, problems] of cases) {
    it(`refuses changes and fails /healthz when the secret is ${what}`, async () => {
      const bindings = production({ REPLICATOR_SECRET: secret });
      const health = await app.request(`${BASE}/healthz`, {}, bindings);
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ ok: false, problems });
      const accountId = crypto.randomUUID();
      const objectsBefore = (await listDurableObjectIds(env.ACCOUNT)).length;
      for (const route of ['changes', 'rehydrate']) {
        const body = '{"changes":[]}';
        // Signed with the very secret the Worker holds: still refused.
        const signature = await signBody(secret ?? 'x', body, Math.floor(Date.now() / 1000));
        const res = await app.request(`${BASE}/v1/accounts/${accountId}/${route}`, { method: 'POST', headers: { [SIGNATURE_HEADER]: signature }, body }, bindings);
        expect(res.status).toBe(503);
        expect(await res.json()).toEqual({ error: 'replicator secret not fit to accept changes', detail: problems });
      }
      expect((await listDurableObjectIds(env.ACCOUNT)).length).toBe(objectsBefore);
    });
  }

  it('accepts changes and is healthy with a secret of 32 bytes or more; a local run may use a development value', async () => {
    const bindings = production({ REPLICATOR_SECRET: good });
    expect(await (await app.request(`${BASE}/healthz`, {}, bindings)).json()).toEqual({ ok: true });
    const account = await TestAccount.create(sql);
    const changes = await account.commit((t) => account.actor(t));
    const res = await postSigned(bindings, account.id, changes, good);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ skipped: 1 });
    // The test run's own Worker is a local run with a public secret.
    expect(await (await app.request(`${BASE}/healthz`, {}, env)).json()).toEqual({ ok: true });
  });
});

describe("the device's address (docs/protocol.md#websocket-routes)", () => {
  async function onlyFrom10(): Promise<string> {
    const account = await TestAccount.create(sql);
    const s = await basicSetup(account);
    await account.apply((t) => t.update('policies', { id: s.policy.id }, { conditions: t.tx.json([{ property: 'remote_ip', operator: 'is_in_cidr', values: ['10.0.0.0/8'] }]) }));
    return s.token;
  }
  const resources = async (token: string, opts: Parameters<typeof connect>[2]) => {
    const { device, init } = await connect('client', token, opts);
    device.close();
    return (init.payload.resources as unknown[]).length;
  };

  it('a deployed Worker takes the address from cf-connecting-ip only: a forged x-real-ip or x-edgeplane-remote-ip does not reach the object', async () => {
    const token = await onlyFrom10();
    expect(await resources(token, { headers: { 'x-real-ip': '10.1.2.3' }, bindings: production() })).toBe(0);
    expect(await resources(token, { headers: { 'x-edgeplane-remote-ip': '10.1.2.3' }, bindings: production() })).toBe(0);
    expect(await resources(token, { ip: '192.0.2.1', headers: { 'x-real-ip': '10.1.2.3' }, bindings: production() })).toBe(0);
    expect(await resources(token, { ip: '10.1.2.3', bindings: production() })).toBe(1);
  });

  it("a local run also takes the dev CLIs' x-real-ip", async () => {
    const token = await onlyFrom10();
    expect(await resources(token, { headers: { 'x-real-ip': '10.1.2.3' }, bindings: env })).toBe(1);
    expect(await resources(token, { ip: '192.0.2.1', headers: { 'x-real-ip': '10.1.2.3' }, bindings: env })).toBe(0);
  });
});
