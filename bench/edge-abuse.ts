/**
 * `npm run bench:abuse [-- --attempts 5000 --concurrency 32 --accounts 8 --echo]`
 *
 * The front door under abuse (docs/architecture.md#a-device-connects): the real bundle on the
 * Miniflare API (the local Worker, dev/worker.ts) over an embedded Postgres whose accounts were written
 * before the Worker ever ran (bulk inserts: a fresh Worker on an existing database). `ws` clients
 * connect with
 * 1. tokens naming accounts that do not exist (after one pass over the 256 directory shards, and
 *    the first pass itself),
 * 2. a known account's real token id with a wrong secret, and unknown token ids of a known account
 *    (each distinct id once, then repeated),
 * 3. valid tokens of known accounts (the baseline: each connect upserts its client),
 * 4. with the rate limits on, a flood from one address,
 * and for each the connects per second, the Worker's CPU per connect, and the Postgres work they
 * caused: sessions and transactions of the database (pg_stat_database) and the Postgres CPU.
 *
 * Not a test: it prints figures for bench/RESULTS.md.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Sql } from 'postgres';
import WebSocket from 'ws';
import { createAccount, type BenchAccount } from './edge-db.ts';
import { websocketUrl } from './edge-devices.ts';
import { startBenchDatabase, startBenchWorker, type BenchDatabase } from './bench-stack.ts';
import { cpuSample, processes, type Processes, type RunningWorker } from './edge-worker.ts';
import { flag, numArg } from './bench-args.ts';

const ATTEMPTS = numArg('attempts', 5000);
const CONCURRENCY = numArg('concurrency', 32);
const ACCOUNTS = numArg('accounts', 8);
const ECHO = flag('echo');
const say = (line: string) => console.log(line);
const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;

/** One connect attempt; resolves with the HTTP status (101 for an accepted socket, closed at once). */
function attempt(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, headers, handshakeTimeout: 30_000 });
    ws.on('upgrade', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    ws.on('error', () => resolve(0));
  });
}

interface DbWork {
  sessions: number;
  transactions: number;
}

/** The database's sessions and transactions so far; pg_stat_database is flushed by backends at least once a second. */
async function dbWork(sql: Sql): Promise<DbWork> {
  await new Promise((r) => setTimeout(r, 1_500));
  await sql`select pg_stat_clear_snapshot()`;
  const [row] = await sql<{ sessions: string; xacts: string }[]>`
    select sessions::text, (xact_commit + xact_rollback)::text as xacts from pg_stat_database where datname = current_database()`;
  return { sessions: Number(row!.sessions), transactions: Number(row!.xacts) };
}

interface Phase {
  name: string;
  concurrency: number;
  attempts: number;
  perSecond: number;
  statuses: Record<string, number>;
  workerCpuMsPerConnect: number;
  postgresCpuMs: number;
  sessions: number;
  transactions: number;
}

class AbuseBench {
  constructor(
    readonly sql: Sql,
    readonly worker: RunningWorker,
    readonly procs: Processes,
  ) {}

  /** Runs every attempt with CONCURRENCY in flight and measures it. The stats queries of `dbWork` are subtracted. */
  async phase(name: string, urls: readonly string[], o: { headers?: (i: number) => Record<string, string>; concurrency?: number } = {}): Promise<Phase> {
    const headers = o.headers ?? (() => ({}));
    const concurrency = o.concurrency ?? CONCURRENCY;
    const before = await dbWork(this.sql);
    const cpuBefore = cpuSample(this.procs);
    const statuses: Record<string, number> = {};
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: Math.min(concurrency, urls.length) }, async () => {
        for (let i = next++; i < urls.length; i = next++) {
          const status = await attempt(urls[i]!, headers(i));
          statuses[status] = (statuses[status] ?? 0) + 1;
        }
      }),
    );
    const ms = performance.now() - started;
    const cpuAfter = cpuSample(this.procs);
    const after = await dbWork(this.sql);
    const p: Phase = {
      name,
      concurrency,
      attempts: urls.length,
      perSecond: Math.round((urls.length / ms) * 1000),
      statuses,
      workerCpuMsPerConnect: Number(((cpuAfter.worker - cpuBefore.worker) / urls.length).toFixed(2)),
      postgresCpuMs: Math.round(cpuAfter.postgres - cpuBefore.postgres),
      sessions: after.sessions - before.sessions,
      // The two stats reads (each a transaction of this session).
      transactions: after.transactions - before.transactions - 2,
    };
    say(
      `  ${name}: ${p.attempts} connects (${concurrency} in flight), ${p.perSecond}/s, answers ${JSON.stringify(p.statuses)}; workerd ${p.workerCpuMsPerConnect} ms CPU per connect; Postgres: ${p.sessions} sessions, ${p.transactions} transactions, ${p.postgresCpuMs} ms CPU  (${load()})`,
    );
    return p;
  }
}

const url = (worker: RunningWorker, token: string) => websocketUrl(worker.url, 'client', token, { externalId: `bench-${randomBytes(6).toString('hex')}` });
const forged = () => `${randomUUID()}.${randomUUID()}.${randomBytes(24).toString('base64url')}`;

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${load()}`);
  let db: BenchDatabase | undefined;
  let worker: RunningWorker | undefined;
  let limited: RunningWorker | undefined;
  try {
    db = await startBenchDatabase('abuse', { maxConnections: 500, pool: 1 });
    const { sql, postmaster } = db;
    const accounts: BenchAccount[] = [];
    // Enough valid tokens for the baseline, and 2,000 in the first account for the flood.
    const perAccount = Math.max(Math.ceil(ATTEMPTS / ACCOUNTS) + 1, 2001);
    for (let i = 0; i < ACCOUNTS; i++) accounts.push(await createAccount(sql, `abuse${i}`, { actors: perAccount, tokens: perAccount }));
    say(`${ACCOUNTS} accounts of ${perAccount} actors and tokens each, written before the Worker starts`);

    // Rate limits off (bench/edge-worker.ts's default): what the refusals themselves cost.
    worker = await startBenchWorker(db, 'abuse-off', { echo: ECHO });
    const b = new AbuseBench(sql, worker, processes(worker, postmaster));
    const w = worker;
    say(`\nrate limits off (Miniflare, real bundle, ${w.url}); ${CONCURRENCY} handshakes in flight`);
    const results: Phase[] = [];
    results.push(
      await b.phase(
        'unknown accounts, cold directory (256 shards, one id each)',
        Array.from({ length: 256 }, (_, i) => url(w, `${i.toString(16).padStart(2, '0')}${randomUUID().slice(2)}.${randomUUID()}.x`)),
        { concurrency: 256 },
      ),
    );
    // Each waits ACCOUNT_WAIT_MS (1 s) in case its account was committed a moment ago, while its
    // shard has a waiting slot (16 each): many in flight measure the cost, not the wait.
    results.push(
      await b.phase(
        'unknown accounts, spread over the shards (each waits 1 s)',
        Array.from({ length: ATTEMPTS }, () => url(w, forged())),
        { concurrency: 512 },
      ),
    );
    const oneShard = () => `ab${randomUUID().slice(2)}.${randomUUID()}.x`;
    results.push(
      await b.phase(
        'unknown accounts, all in one shard (past its 16 waiting slots: refused at once)',
        Array.from({ length: ATTEMPTS }, () => url(w, oneShard())),
        { concurrency: 64 },
      ),
    );
    // The known accounts' objects hydrate on their first connect: one valid connect each first.
    results.push(
      await b.phase(
        'first connect of each known account (hydration)',
        accounts.map((a) => url(w, a.clientTokens[0]!)),
      ),
    );
    const wrongSecret = (i: number) => {
      const t = accounts[i % ACCOUNTS]!.clientTokens[1 + (i % 50)]!;
      return `${t.slice(0, t.lastIndexOf('.'))}.${randomBytes(24).toString('base64url')}`;
    };
    results.push(
      await b.phase(
        'known accounts, real token ids, wrong secrets',
        Array.from({ length: ATTEMPTS }, (_, i) => url(w, wrongSecret(i))),
      ),
    );
    const unknownIds = Array.from({ length: 200 }, () => randomUUID());
    const unknownToken = (i: number) => `${accounts[i % ACCOUNTS]!.id}.${unknownIds[i % unknownIds.length]!}.${randomBytes(24).toString('base64url')}`;
    results.push(
      await b.phase(
        `known accounts, ${unknownIds.length} unknown token ids, first time`,
        unknownIds.map((_, i) => url(w, unknownToken(i))),
      ),
    );
    results.push(
      await b.phase(
        'known accounts, the same unknown token ids again',
        Array.from({ length: ATTEMPTS }, (_, i) => url(w, unknownToken(i))),
      ),
    );
    const valid = accounts.flatMap((a) => a.clientTokens.slice(1)).slice(0, ATTEMPTS);
    results.push(
      await b.phase(
        'baseline: valid tokens of known accounts (each upserts its client)',
        valid.map((t) => url(w, t)),
      ),
    );
    await w.stop();
    worker = undefined;

    // Rate limits on: one address floods.
    limited = await startBenchWorker(db, 'abuse-on', { rateLimits: 'on', echo: ECHO });
    const l = new AbuseBench(sql, limited, processes(limited, postmaster));
    const lw = limited;
    say(`\nrate limits on (wrangler.toml's: 1,000 connects per address and 20,000 per account per 10 s)`);
    const coldPass = () => Array.from({ length: 256 }, (_, i) => url(lw, `${i.toString(16).padStart(2, '0')}${randomUUID().slice(2)}.${randomUUID()}.x`));
    // A new Worker's directory: one pass over the shards first, from many addresses.
    results.push(
      await l.phase('unknown accounts, cold directory (256 shards, one id each, 256 addresses)', coldPass(), {
        headers: (i) => ({ 'cf-connecting-ip': `198.51.100.${i}` }),
        concurrency: 256,
      }),
    );
    results.push(
      await l.phase(
        'one address floods with unknown accounts',
        Array.from({ length: ATTEMPTS }, () => url(lw, forged())),
        {
          headers: () => ({ 'cf-connecting-ip': '203.0.113.66' }),
          concurrency: 512,
        },
      ),
    );
    results.push(
      await l.phase(
        'an office reconnecting: 2,000 valid tokens of one account from one address',
        accounts[0]!.clientTokens.slice(1, 2001).map((t) => url(lw, t)),
        {
          headers: () => ({ 'cf-connecting-ip': '203.0.113.67' }),
        },
      ),
    );
    say(`\n${JSON.stringify(results)}`);
  } finally {
    await worker?.stop();
    await limited?.stop();
    await db?.stop();
  }
}

await main();
