/**
 * `npm run bench:e2e [-- --quick] [-- --no-write] [-- --compare] [-- --sockets N] [-- --probes-only]
 * [-- --rates 100,500] [-- --no-ramp] [-- --profile] [-- --bundle FILE] [-- --wait S] [-- --disk]`
 *
 * Commit-to-socket latency through the whole local stack as `npm start` runs it: PostgreSQL
 * (pg_ctl, fsync on), the replicator process (FORWARD_LINGER_MS=0), the local Worker (dev/worker.ts:
 * the deploy's bundle on the Miniflare API; the replicator posts to its direct port), and WebSocket
 * clients. A writer commits one-row
 * updates at a fixed rate (open loop, so a slow system does not slow the writer down); each renames
 * a resource, and the account's client receives `resource_created_or_updated` with the new name.
 * Measured in this one process (one clock):
 *
 *   t0 the UPDATE is sent           t1 its commit returned          t2 the client got the frame
 *   tReq / tRes: a recording proxy between the replicator and the Worker saw the request / answer
 *
 * Rates 100, 500 and 1,000 commits/s (without the proxy for the headline figures, with it for where
 * the milliseconds go), probes of the Worker's own paths, a ramp to the highest rate whose latency
 * does not keep growing, then N sockets (default 10,000; 0 skips) held by child processes, one
 * policy change to all of them. `--compare` adds the same headline rows and probes under
 * `wrangler dev` (bench/wrangler-dev.ts). Writes the "## End to end" section of bench/RESULTS.md.
 * `--rates` replaces the headline rates, `--no-ramp` skips the ramp, and `--profile` (which writes
 * nothing to RESULTS.md) adds, after each headline rate, a second run of it with a CPU profile of
 * the local Worker's isolate (bench/edge-profile.ts), summarized and saved to the system's temp folder
 * (and each replicator process writes a Node CPU profile there when it stops).
 * `--bundle` serves a Worker bundle built elsewhere (another commit's, for a before/after pair)
 * instead of building this tree's; `--wait` bounds each run's wait for a quiet machine (seconds);
 * `--disk` keeps the objects' SQLite files on disk, where `npm start` keeps them in memory when it can.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { request as httpRequest, Agent, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import postgres, { type Sql } from 'postgres';
import WebSocket from 'ws';
import type { Child } from '../dev/child.ts';
import { deviceSocketUrl } from '../dev/device-url.ts';
import { startLocalPostgres, type LocalPostgres } from '../dev/local-postgres.ts';
import { objectsDir, placeObjectStorage, removeObjectStorage } from '../dev/object-storage.ts';
import { freePort } from '../dev/ports.ts';
import { startReplicatorProcess } from '../dev/replicator-child.ts';
import { createToken } from '../dev/tokens.ts';
import { buildWorkerBundle, startWorkerProcess, waitForHttp } from '../dev/worker-process.ts';
import { migrate } from '../migrations/migrate.ts';
import { SIGNATURE_HEADER, signBody } from '../src/signature.ts';
import { SocketHolders } from '../test/support/socket-holders.ts';
import { LOCAL, ms, type Probes, type Report, type Row, type SocketRun, type Stats, type Step, section, WRANGLER, writeResults } from './e2e-report.ts';
import { summarizeProfile, WorkerProfiler } from './edge-profile.ts';
import { startWranglerDev } from './wrangler-dev.ts';

const QUICK = process.argv.includes('--quick');
/** Only the probes of the Worker's paths (an investigation aid; writes nothing). */
const PROBES_ONLY = process.argv.includes('--probes-only');
const WRITE = !process.argv.includes('--no-write');
const COMPARE = process.argv.includes('--compare');
/** The objects' SQLite files on disk instead of where `npm start` puts them (dev/object-storage.ts): the other half of a pair. */
const DISK = process.argv.includes('--disk');
const SOCKETS = process.argv.includes('--sockets') ? Number(process.argv[process.argv.indexOf('--sockets') + 1]) : QUICK ? 2000 : 10_000;
const ACCOUNTS = 4;
const RESOURCES = 20;
const SECONDS = QUICK ? 4 : 10;
const RATES = process.argv.includes('--rates') ? process.argv[process.argv.indexOf('--rates') + 1]!.split(',').map(Number) : [100, 500, 1000];
const RAMP = !process.argv.includes('--no-ramp');
/** Profiled runs are extra runs: the sampler's own cost stays out of the figures. */
const PROFILE = process.argv.includes('--profile');
/** `--wait S`: the longest a run waits for a quiet machine (default three minutes). */
const QUIET_WAIT_MS = process.argv.includes('--wait') ? Number(process.argv[process.argv.indexOf('--wait') + 1]) * 1000 : 180_000;
const BUNDLE = process.argv.includes('--bundle') ? path.resolve(process.argv[process.argv.indexOf('--bundle') + 1]!) : undefined;

interface Sample {
  t0: number;
  t1?: number;
  tReq?: number;
  tRes?: number;
  t2?: number;
}

interface Account {
  id: string;
  resources: string[];
  clientToken: string;
}

const now = () => performance.now();

/** Forwards the replicator's requests to the Worker and notes when each renamed resource passed. */
class TapProxy {
  private server!: Server;
  requests = 0;
  changes = 0;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  constructor(
    private readonly target: number,
    private readonly samples: Map<string, Sample>,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const tReq = now();
        const body = Buffer.concat(chunks);
        this.requests++;
        const names: string[] = [];
        try {
          const batch = (JSON.parse(body.toString()) as { changes: { table: string; data: { name?: string } | null }[] }).changes;
          this.changes += batch.length;
          for (const c of batch) {
            if (c.table === 'resources' && c.data?.name) names.push(c.data.name);
          }
        } catch {
          // Not ours to judge: the Worker answers it.
        }
        for (const n of names) {
          const s = this.samples.get(n);
          if (s && s.tReq === undefined) s.tReq = tReq;
        }
        const out = httpRequest({ host: '127.0.0.1', port: this.target, method: req.method, path: req.url, headers: req.headers, agent: this.agent }, (answer) => {
          const parts: Buffer[] = [];
          answer.on('data', (c: Buffer) => parts.push(c));
          answer.on('end', () => {
            const tRes = now();
            for (const n of names) {
              const s = this.samples.get(n);
              if (s && s.tRes === undefined) s.tRes = tRes;
            }
            res.writeHead(answer.statusCode ?? 502, answer.headers).end(Buffer.concat(parts));
          });
        });
        out.on('error', () => res.writeHead(502).end());
        out.end(body);
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return this;
  }

  async close(): Promise<void> {
    this.agent.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** CPU seconds used so far by a process and its descendants' groups (Linux /proc). */
async function cpuOfGroups(pgids: Set<number>, extraPids: Set<number>, comm?: string): Promise<number> {
  const tick = 100;
  let total = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (comm && stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== comm) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      const pgrp = Number(fields[2]);
      if (pgids.has(pgrp) || extraPids.has(Number(entry)) || extraPids.has(ppid)) total += (Number(fields[11]) + Number(fields[12])) / tick;
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s.at(-1) ?? NaN };
}

class Bench {
  readonly samples = new Map<string, Sample>();
  private seq = 0;
  replicator: Child | undefined;
  proxy: TapProxy | undefined;
  readonly sockets: WebSocket[] = [];
  /** Renames not yet seen by the client, per resource, in commit order. */
  private readonly waiting = new Map<string, { seq: number; sample: Sample }[]>();
  lost = 0;
  /** Renames the client learnt through a later rename of the same resource in the same batch (the object sends only the latest view). */
  coalesced = 0;

  constructor(
    readonly pg: LocalPostgres,
    readonly sql: Sql,
    public worker: Child,
    /** Where devices connect. */
    public workerPort: number,
    /** Where the replicator posts (the local Worker's direct port, as `npm start` runs it). */
    public changesPort: number,
    readonly replicatorPort: number,
    readonly secret: string,
    readonly accounts: Account[],
    readonly idle: Account,
  ) {}

  /** One connection per group of resources: the renames of a resource commit in the order they were sent. */
  private lanes: Sql[] = [];

  async openLanes(n: number): Promise<void> {
    this.lanes = await Promise.all(Array.from({ length: n }, () => this.sql.reserve()));
  }

  releaseLanes(): void {
    for (const l of this.lanes) (l as unknown as { release(): void }).release();
    this.lanes = [];
  }

  /** As `npm start` runs it (FORWARD_LINGER_MS=0), straight to the Worker or through a recording proxy. */
  async startReplicator(viaProxy: boolean): Promise<void> {
    await this.replicator?.stop('SIGTERM', 20_000);
    await this.proxy?.close();
    this.proxy = viaProxy ? await new TapProxy(this.changesPort, this.samples).start() : undefined;
    this.replicator = startReplicatorProcess({
      databaseUrl: this.pg.url,
      edgeUrl: this.proxy?.url ?? `http://127.0.0.1:${this.changesPort}`,
      secret: this.secret,
      port: this.replicatorPort,
      env: { LOG_LEVEL: 'warn', FORWARD_LINGER_MS: '0', SLOT_NAME: 'bench_e2e' },
      // Node's own profile of each replicator process, written when it stops.
      ...(PROFILE ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${path.join(tmpdir(), 'edgeplane-e2e-replicator-profiles')}`] } : {}),
      onLine: (l) => console.error(`  [replicator] ${l}`),
    });
    await waitForHttp(`http://127.0.0.1:${this.replicatorPort}/readyz`, this.replicator, 60_000, 'the replicator');
  }

  /** Serves the Worker from another process: the clients reconnect to it. */
  async useWorker(worker: Child, port: number, changesPort: number): Promise<void> {
    for (const ws of this.sockets.splice(0)) ws.terminate();
    this.worker = worker;
    this.workerPort = port;
    this.changesPort = changesPort;
    await this.connectClients();
  }

  async connectClients(): Promise<void> {
    for (const a of this.accounts) {
      const url = deviceSocketUrl(`ws://127.0.0.1:${this.workerPort}`, 'client', {
        token: a.clientToken,
        externalId: `bench-${a.id.slice(0, 8)}`,
        name: 'bench',
        publicKey: 'pk',
        version: '1.4.2',
      });
      const ws = new WebSocket(url, { perMessageDeflate: false });
      await new Promise<void>((resolve, reject) => {
        ws.once('message', () => resolve());
        ws.once('error', reject);
        ws.once('unexpected-response', (_r, res) => reject(new Error(`connect: HTTP ${res.statusCode}`)));
      });
      ws.on('message', (data) => {
        const t2 = now();
        const text = data.toString();
        if (text === 'pong') return;
        const frame = JSON.parse(text) as { event: string; payload: { id?: string; name?: string } };
        if (frame.event !== 'resource_created_or_updated' || !frame.payload.id || !/^b\d+$/.test(frame.payload.name ?? '')) return;
        const seq = Number(frame.payload.name!.slice(1));
        const list = this.waiting.get(frame.payload.id);
        while (list && list.length > 0 && list[0]!.seq <= seq) {
          const w = list.shift()!;
          if (w.seq < seq) this.coalesced++;
          w.sample.t2 ??= t2;
        }
      });
      this.sockets.push(ws);
    }
  }

  /** Commits at `rate` per second for `seconds`; returns the samples of this run once they arrived (or after a grace period). */
  async run(rate: number, seconds: number, onCommitted?: () => Promise<void>): Promise<{ samples: Sample[]; achieved: number }> {
    const names: string[] = [];
    const pending: Promise<unknown>[] = [];
    const total = Math.round(rate * seconds);
    const start = now();
    for (let i = 0; i < total; i++) {
      // Sleep until due (timers have ~1 ms granularity; commits that fell due meanwhile go at once).
      // No busy-waiting: on two cores it would take one from the system under test.
      const due = start + (i * 1000) / rate;
      const wait = due - now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const name = `b${++this.seq}`;
      const accountIndex = this.seq % this.accounts.length;
      const a = this.accounts[accountIndex]!;
      const resourceIndex = Math.floor(this.seq / this.accounts.length) % a.resources.length;
      const resource = a.resources[resourceIndex]!;
      const lane = this.lanes[(accountIndex * RESOURCES + resourceIndex) % this.lanes.length]!;
      const sample: Sample = { t0: now() };
      this.samples.set(name, sample);
      names.push(name);
      let list = this.waiting.get(resource);
      if (!list) this.waiting.set(resource, (list = []));
      list.push({ seq: this.seq, sample });
      pending.push(
        lane`update resources set name = ${name} where id = ${resource}`.then(() => {
          sample.t1 = now();
        }),
      );
    }
    await Promise.all(pending);
    const achieved = total / ((now() - start) / 1000);
    await onCommitted?.();
    const deadline = now() + 15_000;
    while (now() < deadline && names.some((n) => this.samples.get(n)!.t2 === undefined)) await new Promise((r) => setTimeout(r, 20));
    const out = names.map((n) => this.samples.get(n)!);
    this.lost += out.filter((s) => s.t2 === undefined).length;
    for (const n of names) this.samples.delete(n);
    for (const list of this.waiting.values()) list.length = 0;
    return { samples: out, achieved };
  }

  /** Round trip of a signed, empty batch to one account's object through the Worker: HTTP, signature, routing, the object call. */
  async emptyBatchRtt(n: number, gapMs = 0, port = this.changesPort): Promise<Stats> {
    const agent = new Agent({ keepAlive: true });
    const out: number[] = [];
    const body = JSON.stringify({ changes: [] });
    for (let i = 0; i < n; i++) {
      const signature = await signBody(this.secret, body, Math.floor(Date.now() / 1000));
      const t = now();
      await new Promise<void>((resolve, reject) => {
        const r = httpRequest(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: `/v1/accounts/${this.idle.id}/changes`,
            agent,
            headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature },
          },
          (res) => {
            res.resume();
            res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`empty batch: HTTP ${res.statusCode}`))));
          },
        );
        r.on('error', reject);
        r.end(body);
      });
      out.push(now() - t);
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
    }
    agent.destroy();
    return stats(out);
  }

  /** Round trip of a `ping` text frame, which the runtime answers without waking the object. */
  async pingRtt(n: number, gapMs: number): Promise<Stats> {
    const ws = this.sockets[0]!;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = now();
      await new Promise<void>((resolve) => {
        const onMessage = (data: WebSocket.RawData) => {
          if (data.toString() !== 'pong') return;
          ws.off('message', onMessage);
          resolve();
        };
        ws.on('message', onMessage);
        ws.send('ping');
      });
      out.push(now() - t);
      await new Promise((r) => setTimeout(r, gapMs));
    }
    return stats(out);
  }

  async close(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    await this.replicator?.stop('SIGTERM', 20_000);
    await this.proxy?.close();
    await this.worker.stop('SIGTERM', 10_000);
  }

  /** Probes of the Worker's own paths, idle and while 500 commits/s flow to the other accounts. */
  async probes(): Promise<Probes> {
    await this.startReplicator(false);
    await this.emptyBatchRtt(20);
    await quiet();
    const empty = await this.emptyBatchRtt(QUICK ? 100 : 300);
    const ping = await this.pingRtt(QUICK ? 50 : 200, 5);
    // What the recording proxy's own hop costs: the same empty batches through it.
    const tap = await new TapProxy(this.changesPort, new Map()).start();
    const viaProxy = await this.emptyBatchRtt(QUICK ? 100 : 300, 0, Number(new URL(tap.url).port));
    await tap.close();
    await quiet();
    const lag = monitorEventLoopDelay({ resolution: 1 });
    const loaded = this.run(500, SECONDS);
    await new Promise((r) => setTimeout(r, 1000));
    lag.enable();
    const [emptyUnderLoad, pingUnderLoad] = await Promise.all([this.emptyBatchRtt(QUICK ? 100 : 300, 10), this.pingRtt(QUICK ? 50 : 200, 20)]);
    lag.disable();
    await loaded;
    const benchLag = lag.percentile(99) / 1e6;
    console.log(
      `  empty batch to an idle object: p50 ${ms(empty.p50)} p99 ${ms(empty.p99)} ms idle, p50 ${ms(emptyUnderLoad.p50)} p99 ${ms(emptyUnderLoad.p99)} ms during 500 commits/s`,
    );
    console.log(
      `  ping/pong on a client socket: p50 ${ms(ping.p50)} p99 ${ms(ping.p99)} ms idle, p50 ${ms(pingUnderLoad.p50)} p99 ${ms(pingUnderLoad.p99)} ms during 500 commits/s (bench event loop delay p99 ${ms(benchLag)} ms)`,
    );
    console.log(`  empty batch through the recording proxy: p50 ${ms(viaProxy.p50)} p99 ${ms(viaProxy.p99)} ms`);
    return { empty, emptyUnderLoad, ping, pingUnderLoad, benchLag, viaProxy };
  }
}

/** An account of one actor in one group, `resources` resources on one site each granted by a policy, and a client token. */
async function seedAccount(sql: Sql, label: string, resources: number): Promise<Account> {
  return await sql.begin(async (tx) => {
    const [a] = await tx<
      { id: string }[]
    >`insert into accounts (name, slug) values (${label}, ${`${label.replaceAll(' ', '-')}-${randomBytes(3).toString('hex')}`}) returning id::text`;
    const id = a!.id;
    const [actor] = await tx<{ id: string }[]>`insert into actors (account_id, name, type) values (${id}, 'bench', 'account_user') returning id::text`;
    const [group] = await tx<{ id: string }[]>`insert into actor_groups (account_id, name) values (${id}, 'g') returning id::text`;
    await tx`insert into actor_group_memberships (account_id, actor_id, group_id) values (${id}, ${actor!.id}, ${group!.id})`;
    const [site] = await tx<{ id: string }[]>`insert into sites (account_id, name) values (${id}, 's') returning id::text`;
    const ids: string[] = [];
    for (let r = 0; r < resources; r++) {
      const [res] = await tx<
        { id: string }[]
      >`insert into resources (account_id, type, name, address) values (${id}, 'dns', ${`r${r}`}, ${`r${r}.bench.internal`}) returning id::text`;
      await tx`insert into resource_connections (account_id, resource_id, site_id) values (${id}, ${res!.id}, ${site!.id})`;
      await tx`insert into policies (account_id, actor_group_id, resource_id) values (${id}, ${group!.id}, ${res!.id})`;
      ids.push(res!.id);
    }
    const token = await createToken(tx, { accountId: id, type: 'client', ownerId: actor!.id });
    return { id, resources: ids, clientToken: token.token };
  });
}

/** The one-, five- and fifteen-minute load averages. */
function loads(): string {
  return loadavg()
    .map((x) => x.toFixed(1))
    .join(', ');
}

/**
 * Other work on the machine ruins latency figures on two cores: wait (up to `maxMs`) until the
 * one-minute load average is below `below`, and say what it was.
 */
async function quiet(below = 1.5, maxMs = QUIET_WAIT_MS): Promise<number> {
  const deadline = Date.now() + maxMs;
  while (loadavg()[0]! >= below && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5000));
  return loadavg()[0]!;
}

function row(runtime: string, tapped: boolean, rate: number, achieved: number, samples: Sample[], load: number): Row {
  const done = samples.filter((s) => s.t1 !== undefined && s.t2 !== undefined);
  const r: Row = {
    runtime,
    tapped,
    load,
    rate,
    achieved,
    e2e: stats(done.map((s) => s.t2! - s.t1!)),
    commit: stats(done.map((s) => s.t1! - s.t0)),
  };
  const seen = done.filter((s) => s.tReq !== undefined && s.tRes !== undefined);
  if (tapped && seen.length > 0) {
    r.replicator = stats(seen.map((s) => s.tReq! - s.t1!));
    r.edge = stats(seen.map((s) => s.t2! - s.tReq!));
    r.answer = stats(seen.map((s) => s.tRes! - s.tReq!));
  }
  return r;
}

/** Whether latency kept growing during a run: the last fifth's median well above the first fifth's. */
function growing(samples: Sample[]): { grows: boolean; first: number; last: number } {
  const done = samples.filter((s) => s.t1 !== undefined && s.t2 !== undefined);
  const fifth = Math.max(1, Math.floor(done.length / 5));
  const first = stats(done.slice(0, fifth).map((s) => s.t2! - s.t1!)).p50;
  const last = stats(done.slice(-fifth).map((s) => s.t2! - s.t1!)).p50;
  return { grows: last > first * 2 + 10 || done.length < samples.length, first, last };
}

/** The workerd processes of a Worker's process group: descriptors open and resident memory. */
async function workerdUsage(pgid: number): Promise<{ fds: number; rssMb: number }> {
  let fds = 0;
  let rssKb = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== 'workerd') continue;
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) !== pgid) continue;
      fds += (await readdir(`/proc/${entry}/fd`)).length;
      rssKb += Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${entry}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // Gone meanwhile.
    }
  }
  return { fds, rssMb: Math.round(rssKb / 1024) };
}

/** `count` client sockets of one account held by child processes, then one policy disabled: how long until the last socket heard. */
async function socketRun(sql: Sql, workerUrl: string, worker: Child, count: number): Promise<SocketRun> {
  const account = await seedAccount(sql, 'bench sockets', 2);
  // One process may open 20,000 files here; 2,500 sockets a process keeps each one light.
  const processes = Math.max(1, Math.ceil(count / 2500));
  const load = await quiet();
  const holders = await SocketHolders.spawn(processes);
  try {
    const t0 = now();
    const { inits, retries, firstError } = await holders.connectClients(workerUrl, account.clientToken, Math.ceil(count / processes), 'bench', 8);
    const connectMs = now() - t0;
    console.log(`sockets: ${inits} of ${count} got init in ${(connectMs / 1000).toFixed(1)} s (${retries} retried) ${firstError ?? ''}`);
    const usage = await workerdUsage(worker.pid!);
    const resource = account.resources[0]!;
    const committed = Date.now();
    await sql`update policies set disabled_at = now() where resource_id = ${resource}`;
    const { n, lastAt } = await holders.received('resource_deleted', resource);
    const fanOutMs = lastAt - committed;
    console.log(`sockets: resource_deleted on ${n}, the last ${fanOutMs} ms after the commit; workerd ${usage.fds} descriptors, ${usage.rssMb} MB RSS`);
    return { sockets: inits, processes, connectMs, inits, retries, fanOutMs, received: n, workerdRssMb: usage.rssMb, workerdFds: usage.fds, load };
  } finally {
    await holders.stop();
  }
}

function versions(): string {
  const require = createRequire(import.meta.url);
  const version = (pkg: string, from?: string) => (require(require.resolve(`${pkg}/package.json`, from ? { paths: [from] } : undefined)) as { version: string }).version;
  const miniflare = path.dirname(require.resolve('miniflare/package.json'));
  return `Miniflare ${version('miniflare')} (workerd ${version('workerd', miniflare)}), wrangler ${version('wrangler')}`;
}

async function main(): Promise<void> {
  const machine = `${cpus().length} x ${cpus()[0]?.model?.trim()}, node ${process.version}`;
  const loadAtStart = loads();
  console.log(`machine: ${machine}; load average ${loadAtStart}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'edgeplane-bench-e2e-'));
  // The embedded server runs as the postgres user when we are root: it must enter the folder.
  await chmod(dir, 0o755);
  let pg: LocalPostgres | undefined;
  let bench: Bench | undefined;
  try {
    pg = await startLocalPostgres({ dataDir: path.join(dir, 'pg'), port: await freePort() });
    const sql = postgres(pg.url, { max: 20, onnotice: () => {} });
    const [v] = await sql<{ v: string }[]>`select current_setting('server_version') as v`;
    await migrate(sql);
    const seeded: Account[] = [];
    for (let i = 0; i < ACCOUNTS; i++) seeded.push(await seedAccount(sql, `bench ${i}`, RESOURCES));
    // It gets no commits: probes of the Worker's HTTP path go to its object.
    const idle = await seedAccount(sql, 'bench idle', RESOURCES);
    const secret = randomBytes(24).toString('hex');
    const bundle = BUNDLE ?? (await buildWorkerBundle(path.join(dir, 'bundle')));

    // The local Worker as `npm start` runs it (connect rate limits on).
    const localPort = await freePort();
    const directPort = await freePort();
    const inspectorPort = PROFILE ? await freePort() : undefined;
    const objects = DISK ? undefined : await placeObjectStorage(objectsDir(path.join(dir, 'worker')));
    console.log(`the objects' storage: ${objects?.inMemory ? `in memory (${objects.inMemory})` : `on disk${objects?.onDisk ? ` (${objects.onDisk})` : ''}`}`);
    const local = startWorkerProcess({
      port: localPort,
      directPort,
      databaseUrl: pg.url,
      secret,
      persistTo: path.join(dir, 'worker'),
      bundle,
      ...(inspectorPort ? { inspectorPort } : {}),
    });
    await waitForHttp(`http://127.0.0.1:${localPort}/healthz`, local, 90_000, 'the local Worker');
    bench = new Bench(pg, sql, local, localPort, directPort, await freePort(), secret, seeded, idle);
    await bench.openLanes(16);
    await bench.startReplicator(false);
    await bench.connectClients();
    console.log(`postgres ${v!.v} (pg_ctl, fsync on), ${ACCOUNTS} accounts x ${RESOURCES} resources, one client each; ${SECONDS} s a run; ${versions()}`);
    await bench.run(100, 2); // warm-up: objects hydrated, JIT warm

    const rows: Row[] = [];
    const measure = async (runtime: string, rate: number, tapped: boolean) => {
      const b = bench!;
      await b.startReplicator(tapped);
      await b.run(50, 1);
      const load = await quiet();
      const requestsBefore = b.proxy?.requests ?? 0;
      const changesBefore = b.proxy?.changes ?? 0;
      const group = new Set([b.worker.pid!]);
      const cpuBefore = await cpuOfGroups(group, new Set());
      const workerdBefore = await cpuOfGroups(group, new Set(), 'workerd');
      const t = now();
      let workerCpu = 0;
      let workerdCpu = 0;
      let seconds = 0;
      // CPU over the commits only, not the wait for the last frames.
      const { samples, achieved } = await b.run(rate, SECONDS, async () => {
        seconds = (now() - t) / 1000;
        workerCpu = ((await cpuOfGroups(group, new Set())) - cpuBefore) / seconds;
        workerdCpu = ((await cpuOfGroups(group, new Set(), 'workerd')) - workerdBefore) / seconds;
      });
      const r = row(runtime, tapped, rate, achieved, samples, load);
      r.workerCpu = workerCpu;
      r.workerdCpu = workerdCpu;
      if (b.proxy) {
        const requests = b.proxy.requests - requestsBefore;
        r.batchesPerSecond = requests / seconds;
        r.changesPerBatch = (b.proxy.changes - changesBefore) / Math.max(1, requests);
      }
      rows.push(r);
      console.log(
        `${runtime}${tapped ? ' (recording proxy)' : ''}: ${String(rate).padStart(5)}/s  load ${load.toFixed(1)}  commit->socket p50 ${ms(r.e2e.p50)} p99 ${ms(r.e2e.p99)} max ${ms(r.e2e.max)} ms (n=${r.e2e.n})` +
          `  worker group ${workerCpu.toFixed(2)} cores (workerd ${workerdCpu.toFixed(2)})` +
          (r.replicator
            ? `  | replicator ${ms(r.replicator.p50)}, worker+object+socket ${ms(r.edge!.p50)}, POST answered ${ms(r.answer!.p50)}; ${r.batchesPerSecond!.toFixed(0)} batches/s of ${r.changesPerBatch!.toFixed(1)} changes`
            : ''),
      );
    };
    const probes: Report['probes'] = [];
    const rates = PROBES_ONLY ? [] : RATES;
    const profiler = inspectorPort ? await WorkerProfiler.connect(inspectorPort) : undefined;

    // 1. Headline figures, then where the milliseconds go, then the Worker's own paths.
    for (const rate of rates) {
      await measure(LOCAL, rate, false);
      if (!profiler) continue;
      await profiler.start();
      await measure(LOCAL, rate, false);
      rows.pop();
      const file = path.join(tmpdir(), `edgeplane-e2e-${rate}.cpuprofile`);
      console.log(`  profile of that rate again (the row above, sampled; ${file}):\n${summarizeProfile(await profiler.stop(file), 25).join('\n')}`);
    }
    profiler?.close();
    for (const rate of rates) await measure(LOCAL, rate, true);
    console.log(`${LOCAL} probes:`);
    probes.push({ runtime: LOCAL, probes: await bench.probes() });

    // 2. The ramp: the highest rate whose latency does not keep growing.
    await bench.startReplicator(false);
    const pgPids = new Set<number>([Number((await readFile(path.join(pg.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])]);
    const ramp: Step[] = [];
    let sustained = 0;
    for (const rate of PROBES_ONLY || !RAMP ? [] : QUICK ? [1500, 2000] : [1500, 2000, 2500, 3000, 4000]) {
      const b = bench;
      const groups = {
        postgres: () => cpuOfGroups(new Set(), pgPids),
        replicator: () => cpuOfGroups(new Set([b.replicator!.pid!]), new Set()),
        worker: () => cpuOfGroups(new Set([b.worker.pid!]), new Set()),
      };
      const load = await quiet();
      const before = { postgres: await groups.postgres(), replicator: await groups.replicator(), worker: await groups.worker(), bench: process.cpuUsage() };
      const t = now();
      let cpu = { postgres: 0, replicator: 0, worker: 0, bench: 0 };
      const { samples, achieved } = await b.run(rate, QUICK ? 3 : 6, async () => {
        const wall = (now() - t) / 1000;
        const u = process.cpuUsage(before.bench);
        cpu = {
          postgres: ((await groups.postgres()) - before.postgres) / wall,
          replicator: ((await groups.replicator()) - before.replicator) / wall,
          worker: ((await groups.worker()) - before.worker) / wall,
          bench: (u.user + u.system) / 1e6 / wall,
        };
      });
      const g = growing(samples);
      const e2e = row(LOCAL, false, rate, achieved, samples, load).e2e;
      ramp.push({ rate, achieved, e2e, ...g, cpu, load });
      console.log(
        `ramp ${String(rate).padStart(5)}/s (load ${load.toFixed(1)}): achieved ${Math.round(achieved)}/s, p50 ${ms(e2e.p50)} p99 ${ms(e2e.p99)} ms, first/last fifth p50 ${ms(g.first)}/${ms(g.last)} ms${g.grows ? '  <- latency grows' : ''}; CPU cores: postgres ${cpu.postgres.toFixed(2)}, replicator ${cpu.replicator.toFixed(2)}, worker ${cpu.worker.toFixed(2)}, bench ${cpu.bench.toFixed(2)}`,
      );
      if (g.grows || achieved < rate * 0.95) break;
      sustained = rate;
    }
    if (!PROBES_ONLY) console.log(`highest sustained: ${sustained} commits/s`);

    // 3. Many sockets through the local Worker.
    const sockets = SOCKETS > 0 && !PROBES_ONLY ? await socketRun(sql, `http://127.0.0.1:${localPort}`, local, SOCKETS) : undefined;

    // 4. The same bundle under `wrangler dev`, as the local run served it before (its dev proxy in front).
    if (COMPARE) {
      await bench.replicator?.stop('SIGTERM', 20_000);
      await local.stop('SIGTERM', 10_000);
      const port = await freePort();
      const wrangler = startWranglerDev({ port, databaseUrl: pg.url, secret, persistTo: path.join(dir, 'wrangler'), bundle });
      await waitForHttp(`http://127.0.0.1:${port}/healthz`, wrangler, 90_000, 'wrangler dev');
      await bench.useWorker(wrangler, port, port);
      await bench.startReplicator(false);
      await bench.run(100, 2);
      for (const rate of rates) await measure(WRANGLER, rate, false);
      console.log(`${WRANGLER} probes:`);
      probes.push({ runtime: WRANGLER, probes: await bench.probes() });
    }
    console.log(`renames never seen: ${bench.lost}; seen through a later rename of the same resource: ${bench.coalesced}`);
    bench.releaseLanes();
    const loadAtEnd = loads();
    if (WRITE && !PROBES_ONLY && !PROFILE) {
      const report: Report = {
        machine,
        pgVersion: v!.v,
        versions: versions(),
        seconds: SECONDS,
        accounts: ACCOUNTS,
        resources: RESOURCES,
        rows,
        probes,
        ramp,
        sustained,
        ...(sockets ? { sockets } : {}),
        lost: bench.lost,
        coalesced: bench.coalesced,
        loadAtStart,
        loadAtEnd,
      };
      await writeResults(section(report));
      console.log('wrote the "End to end" section of bench/RESULTS.md');
    }
    await sql.end({ timeout: 2 });
  } finally {
    await bench?.close().catch(() => undefined);
    await pg?.stop('fast', 60).catch(() => undefined);
    await removeObjectStorage(objectsDir(path.join(dir, 'worker')));
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
