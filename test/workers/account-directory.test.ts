import { env, listDurableObjectIds, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { parseToken } from '../../src/tokens.ts';
import type { AccountDO } from '../../workers/account/account-do.ts';
import { databaseStats } from '../../workers/account/database.ts';
import { MAX_ACCOUNT_WAITERS } from '../../workers/directory/account-directory.ts';
import { ACCOUNT_WAIT_MS } from '../../workers/directory/directory.ts';
import { DIRECTORY_SHARDS } from '../../workers/directory/shards.ts';
import { seededRandom } from '../support/seeded-random.ts';
import { basicSetup, RESERVED_SHARD, TestAccount } from './support/account.ts';
import { tryConnect } from './support/device.ts';
import { database, randomText } from './support/world.ts';

const sql = database();

const shard = (prefix: string) => env.DIRECTORY.get(env.DIRECTORY.idFromName(prefix));
const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const idIn = (prefix: string) => `${prefix}${crypto.randomUUID().slice(2)}`;

async function accountObjects(): Promise<Set<string>> {
  return new Set((await listDurableObjectIds(env.ACCOUNT)).map((id) => id.toString()));
}

async function errorOf(res: Response): Promise<[number, string]> {
  if (res.status === 101) {
    res.webSocket?.accept();
    res.webSocket?.close(1000);
    return [101, ''];
  }
  return [res.status, ((await res.json()) as { error: string }).error];
}

describe('the account directory (docs/architecture.md#a-device-connects)', () => {
  // First in its file: the shard below has never been asked (each test file has its own storage).
  // The database is shared with the other files, whose accounts never fall in this shard: what it
  // loads is this test's accounts alone.
  it('on an existing database, a shard loads its ids from Postgres once; unknown accounts then cost no query and no object', async () => {
    const prefix = RESERVED_SHARD;
    expect(await shard(prefix).size()).toEqual({ filled: null, accounts: 0, waiting: 0 });
    // Rows committed before this Worker ever ran: nothing was delivered for them.
    const existing = await TestAccount.create(sql, 'existing', idIn(prefix));
    const gone = await TestAccount.create(sql, 'gone', idIn(prefix));
    await sql`update accounts set deleted_at = now() where id = ${gone.id}`;
    let token = '';
    await existing.commit(async (t) => {
      const actor = await existing.actor(t);
      token = (await existing.clientToken(t, actor.id)).token;
    });
    const objectsBefore = await accountObjects();
    const before = databaseStats.clients;
    // The shard's load, the account's hydration and the client's upsert.
    expect(await errorOf(await tryConnect('client', token))).toEqual([101, '']);
    expect(databaseStats.clients - before).toBe(3);
    expect(await shard(prefix).size()).toEqual({ filled: prefix, accounts: 1, waiting: 0 });
    const forged = Array.from({ length: 50 }, (_, i) => `${i % 2 ? gone.id : idIn(prefix)}.${crypto.randomUUID()}.${randomText(20)}`);
    for (const res of await Promise.all(forged.map((t) => tryConnect('client', t, { bindings: env })))) expect(await errorOf(res)).toEqual([401, 'invalid token']);
    expect(databaseStats.clients - before).toBe(3);
    const created = [...(await accountObjects())].filter((id) => !objectsBefore.has(id));
    expect(created).toEqual([env.ACCOUNT.idFromName(existing.id).toString()]);
  });

  it('an account and its token committed a moment ago connect as soon as the account is delivered, within 200 ms of its batch stored', async () => {
    const prefix = 'e8';
    // The shard is filled before the account exists: only a delivered batch can tell it.
    expect(await shard(prefix).known(idIn(prefix))).toBe(false);
    const account = await TestAccount.create(sql, 'new', idIn(prefix));
    let token = '';
    const changes = await account.commit(async (t) => {
      const actor = await account.actor(t);
      token = (await account.clientToken(t, actor.id)).token;
    });
    const connecting = tryConnect('client', token, { bindings: env }).then((res) => ({ res, at: Date.now() }));
    for (const deadline = Date.now() + 2_000; (await shard(prefix).size()).waiting < 1; ) {
      if (Date.now() > deadline) throw new Error('the connect does not wait');
      await new Promise((r) => setTimeout(r, 5));
    }
    // The first batch hydrates the new account's object; once it is stored the connect goes on.
    await account.deliver(changes);
    const storedAt = Date.now();
    const { res, at } = await connecting;
    expect(await errorOf(res)).toEqual([101, '']);
    expect(at - storedAt).toBeLessThan(200);
  });

  it(`refuses an unknown account after ${ACCOUNT_WAIT_MS} ms, and at once beyond ${MAX_ACCOUNT_WAITERS} waiting in its shard`, async () => {
    const prefix = 'e9';
    const timed = async (token: string) => {
      const started = Date.now();
      const [status, error] = await errorOf(await tryConnect('client', token, { bindings: env }));
      return { status, error, ms: Date.now() - started };
    };
    // The shard loaded first, so that the figures below are the wait alone.
    expect(await shard(prefix).known(idIn(prefix))).toBe(false);
    const before = databaseStats.clients;
    const outcomes = await Promise.all(Array.from({ length: MAX_ACCOUNT_WAITERS + 8 }, () => timed(`${idIn(prefix)}.${crypto.randomUUID()}.${randomText(20)}`)));
    expect(outcomes.every((o) => o.status === 401 && o.error === 'invalid token')).toBe(true);
    const waited = outcomes.filter((o) => o.ms >= ACCOUNT_WAIT_MS - 5);
    expect(waited).toHaveLength(MAX_ACCOUNT_WAITERS);
    for (const o of waited) expect(o.ms).toBeLessThan(ACCOUNT_WAIT_MS + 300);
    for (const o of outcomes.filter((o) => !waited.includes(o))) expect(o.ms).toBeLessThan(ACCOUNT_WAIT_MS / 2);
    expect(databaseStats.clients).toBe(before);
  });

  it('follows the accounts the objects hold after each batch: inserted, soft-deleted, restored', async () => {
    const account = await TestAccount.create(sql);
    const at = shard(account.id.slice(0, 2));
    // Its first batch (hydration included) tells the directory.
    await basicSetup(account);
    expect(await at.known(account.id)).toBe(true);
    await account.apply((t) => t.softDelete('accounts', { id: account.id }));
    expect(await at.known(account.id)).toBe(false);
    await account.apply((t) => t.update('accounts', { id: account.id }, { deleted_at: null }));
    expect(await at.known(account.id)).toBe(true);
    // A disabled account stays known: its object refuses its devices without a query.
    await account.apply((t) => t.update('accounts', { id: account.id }, { disabled_at: new Date() }));
    expect(await at.known(account.id)).toBe(true);
  });

  it('randomized: 1,000 connects with forged tokens are never accepted, create no object, and query only for unknown token ids of known accounts', async () => {
    const seed = Date.now() % 1_000_000;
    const random = seededRandom(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;

    interface Known {
      account: TestAccount;
      live: string[];
      site: string;
      expired: string;
      deleted: string;
    }
    const known: Known[] = [];
    for (let i = 0; i < 3; i++) {
      const account = await TestAccount.create(sql);
      const s = await basicSetup(account);
      const k: Known = { account, live: [s.token], site: '', expired: '', deleted: '' };
      await account.apply(async (t) => {
        k.live.push((await account.clientToken(t, s.actor.id)).token);
        k.site = (await account.siteToken(t, s.site.id)).token;
        k.expired = (await account.clientToken(t, s.actor.id, { expires_at: new Date(Date.now() - 60_000) })).token;
        k.deleted = (await account.clientToken(t, s.actor.id)).token;
      });
      await account.apply((t) => t.softDelete('tokens', { id: k.deleted.split('.')[1] }));
      known.push(k);
    }
    const removed = await TestAccount.create(sql, 'removed');
    const removedSetup = await basicSetup(removed);
    await removed.apply((t) => t.softDelete('accounts', { id: removed.id }));
    // Forged token ids are drawn from a small pool, so that repeats are common; unknown accounts
    // from a few shards (each shard's one load from Postgres costs ~50 ms here).
    const forgedIds = Array.from({ length: 12 }, () => crypto.randomUUID());
    const prefixes = Array.from({ length: 6 }, () => hex2(Math.floor(random() * DIRECTORY_SHARDS)));

    const flipCase = (text: string) => {
      const letters = [...text].map((ch, i) => [ch, i] as const).filter(([ch]) => /[a-z]/i.test(ch));
      const [ch, i] = pick(letters);
      return text.slice(0, i) + (ch === ch.toLowerCase() ? ch.toUpperCase() : ch.toLowerCase()) + text.slice(i + 1);
    };
    const forgers: ((k: Known, other: Known) => { kind: 'client' | 'gateway'; token: string })[] = [
      // Another account's id in front of a real token.
      (k, other) => ({ kind: 'client', token: `${other.account.id}.${pick(k.live).split('.').slice(1).join('.')}` }),
      // Swapped segments.
      (k) => {
        const [a, t, secret] = pick(k.live).split('.') as [string, string, string];
        return { kind: 'client', token: pick([`${t}.${a}.${secret}`, `${a}.${secret}.${t}`, `${secret}.${t}.${a}`]) };
      },
      // Case variants: ids in upper case, and the secret with one letter's case flipped.
      (k) => {
        const [a, t, secret] = pick(k.live).split('.') as [string, string, string];
        return { kind: 'client', token: `${random() < 0.5 ? a.toUpperCase() : a}.${random() < 0.5 ? t.toUpperCase() : t}.${flipCase(secret)}` };
      },
      // Wrong secrets.
      (k) => {
        const token = pick(k.live);
        return { kind: 'client', token: pick([`${token}x`, token.slice(0, -1), `${token.split('.').slice(0, 2).join('.')}.${randomText(32)}`]) };
      },
      // Deleted and expired tokens, and a token on the other kind's route.
      (k) => ({ kind: 'client', token: pick([k.deleted, k.expired]) }),
      (k) => (random() < 0.5 ? { kind: 'client', token: k.site } : { kind: 'gateway', token: pick(k.live) }),
      // Token ids this account never had.
      (k) => ({ kind: 'client', token: `${k.account.id}.${pick(forgedIds)}.${randomText(32)}` }),
      // Unknown accounts, and a deleted one with its once-valid token.
      () => ({ kind: pick(['client', 'gateway'] as const), token: `${idIn(pick(prefixes))}.${crypto.randomUUID()}.${randomText(32)}` }),
      () => ({ kind: 'client', token: removedSetup.token }),
    ];
    const attempts = Array.from({ length: 1000 }, () => {
      const k = pick(known);
      return pick(forgers)(k, pick(known.filter((o) => o !== k)));
    });

    // What reaches an object and is not in its cache costs one lookup, once per (account, id).
    const cached = new Map<string, Set<string>>();
    for (const k of known) {
      const stub = env.ACCOUNT.get(env.ACCOUNT.idFromName(k.account.id));
      cached.set(
        k.account.id,
        await runInDurableObject(stub, (o: AccountDO) => new Set((o as unknown as { memory: { state: { tokens: Map<string, unknown> } } }).memory.state.tokens.keys())),
      );
    }
    const lookups = new Set<string>();
    const shards = new Set<string>();
    for (const a of attempts) {
      const parsed = parseToken(a.token);
      if (!parsed) continue;
      shards.add(parsed.accountId.slice(0, 2));
      const tokens = cached.get(parsed.accountId);
      if (tokens && !tokens.has(parsed.tokenId)) lookups.add(`${parsed.accountId}.${parsed.tokenId}`);
    }
    // And each shard asked for the first time loads its ids once.
    const loads = (await Promise.all([...shards].map(async (p) => (await shard(p).size()).filled === null))).filter(Boolean).length;

    const objectsBefore = await accountObjects();
    const before = databaseStats.clients;
    const outcomes = new Map<string, number>();
    const started = Date.now();
    // 32 at a time (an unknown account waits up to ACCOUNT_WAIT_MS); concurrent connects with the
    // same unknown token id share one lookup.
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < attempts.length; i = next++) {
        const a = attempts[i]!;
        const [status, error] = await errorOf(await tryConnect(a.kind, a.token, { ip: `198.51.100.${i % 250}`, bindings: env }));
        expect(status, `attempt ${i} (${a.kind} ${a.token}), seed ${seed}`).not.toBe(101);
        expect(status, `attempt ${i}: ${error}, seed ${seed}`).toBeLessThan(500);
        outcomes.set(`${status} ${error}`, (outcomes.get(`${status} ${error}`) ?? 0) + 1);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    console.log(
      `seed ${seed}: ${attempts.length} connects in ${Date.now() - started} ms: ${JSON.stringify(Object.fromEntries(outcomes))}; ${lookups.size} token lookups and ${loads} shard loads expected`,
    );
    expect(databaseStats.clients - before).toBe(lookups.size + loads);
    expect([...(await accountObjects())].filter((id) => !objectsBefore.has(id))).toEqual([]);
    expect(lookups.size).toBeGreaterThan(0);
  });
});
