/**
 * `npm run bench:e2e [-- --quick] [-- --no-write]`
 *
 * Commit-to-socket latency through the whole local stack, the one `npm start` runs: PostgreSQL
 * (pg_ctl, fsync on), the replicator process, `wrangler dev` with the Worker, and WebSocket
 * clients. A writer commits one-row updates at a fixed rate (open loop, so a slow system does not
 * slow the writer down); each renames a resource, and the account's client receives
 * `resource_created_or_updated` with the new name. Measured in this one process (one clock):
 *
 *   t0 the UPDATE is sent           t1 its commit returned          t2 the client got the frame
 *   tReq / tRes: a recording proxy between the replicator and the Worker saw the request / answer
 *
 * Rates 100 and 500 commits/s (without the proxy for the headline figures, with it for where the
 * milliseconds go), FORWARD_LINGER_MS 2 (the default) and 0, then a ramp to the highest rate whose
 * latency does not keep growing. Writes the "## End to end" section of bench/RESULTS.md.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest, Agent, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import postgres, { type Sql } from 'postgres';
import WebSocket from 'ws';
import { Child } from '../dev/child.ts';
import { deviceSocketUrl } from '../dev/device-url.ts';
import { startLocalPostgres, type LocalPostgres } from '../dev/local-postgres.ts';
import { freePort } from '../dev/ports.ts';
import { startReplicatorProcess } from '../dev/replicator-child.ts';
import { ROOT } from '../dev/root.ts';
import { createToken } from '../dev/tokens.ts';
import { buildWorkerBundle, startWorkerProcess, waitForHttp } from '../dev/worker-process.ts';
import { migrate } from '../migrations/migrate.ts';
import { SIGNATURE_HEADER, signBody } from '../src/signature.ts';

const QUICK = process.argv.includes('--quick');
/** Only the probes of the Worker's paths (an investigation aid; writes nothing). */
const PROBES_ONLY = process.argv.includes('--probes-only');
const WRITE = !process.argv.includes('--no-write');
const ACCOUNTS = 4;
const RESOURCES = 20;
const SECONDS = QUICK ? 4 : 10;

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

interface Stats {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

function stats(values: number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  return { n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s.at(-1) ?? NaN };
}

const ms = (v: number) => (Number.isFinite(v) ? v.toFixed(v < 10 ? 2 : 1) : '-');

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
    public workerPort: number,
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

  async startReplicator(viaProxy: boolean, linger: number): Promise<void> {
    await this.replicator?.stop('SIGTERM', 20_000);
    await this.proxy?.close();
    this.proxy = viaProxy ? await new TapProxy(this.workerPort, this.samples).start() : undefined;
    this.replicator = startReplicatorProcess({
      databaseUrl: this.pg.url,
      edgeUrl: this.proxy?.url ?? `http://127.0.0.1:${this.workerPort}`,
      secret: this.secret,
      port: this.replicatorPort,
      env: { LOG_LEVEL: 'warn', FORWARD_LINGER_MS: String(linger), SLOT_NAME: 'bench_e2e' },
      onLine: (l) => console.error(`  [replicator] ${l}`),
    });
    await waitForHttp(`http://127.0.0.1:${this.replicatorPort}/readyz`, this.replicator, 60_000, 'the replicator');
  }

  /** Serves the Worker from another process: the clients reconnect to it. */
  async useWorker(worker: Child, port: number): Promise<void> {
    for (const ws of this.sockets.splice(0)) ws.terminate();
    this.worker = worker;
    this.workerPort = port;
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
  async emptyBatchRtt(n: number, gapMs = 0, port = this.workerPort): Promise<Stats> {
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
    await this.startReplicator(false, 0);
    await this.emptyBatchRtt(20);
    await quiet();
    const empty = await this.emptyBatchRtt(QUICK ? 100 : 300);
    const ping = await this.pingRtt(QUICK ? 50 : 200, 5);
    // What the recording proxy's own hop costs: the same empty batches through it.
    const tap = await new TapProxy(this.workerPort, new Map()).start();
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

async function seed(sql: Sql): Promise<Account[]> {
  const out: Account[] = [];
  for (let i = 0; i <= ACCOUNTS; i++) {
    out.push(
      await sql.begin(async (tx) => {
        const [a] = await tx<{ id: string }[]>`insert into accounts (name, slug) values (${`bench ${i}`}, ${`bench-${i}-${randomBytes(3).toString('hex')}`}) returning id::text`;
        const id = a!.id;
        const [actor] = await tx<{ id: string }[]>`insert into actors (account_id, name, type) values (${id}, 'bench', 'account_user') returning id::text`;
        const [group] = await tx<{ id: string }[]>`insert into actor_groups (account_id, name) values (${id}, 'g') returning id::text`;
        await tx`insert into actor_group_memberships (account_id, actor_id, group_id) values (${id}, ${actor!.id}, ${group!.id})`;
        const [site] = await tx<{ id: string }[]>`insert into sites (account_id, name) values (${id}, 's') returning id::text`;
        const resources: string[] = [];
        for (let r = 0; r < RESOURCES; r++) {
          const [res] = await tx<
            { id: string }[]
          >`insert into resources (account_id, type, name, address) values (${id}, 'dns', ${`r${r}`}, ${`r${r}.bench.internal`}) returning id::text`;
          await tx`insert into resource_connections (account_id, resource_id, site_id) values (${id}, ${res!.id}, ${site!.id})`;
          await tx`insert into policies (account_id, actor_group_id, resource_id) values (${id}, ${group!.id}, ${res!.id})`;
          resources.push(res!.id);
        }
        const token = await createToken(tx, { accountId: id, type: 'client', ownerId: actor!.id });
        return { id, resources, clientToken: token.token };
      }),
    );
  }
  return out;
}

/**
 * Other work on the machine ruins latency figures on two cores: wait (up to `maxMs`) until the
 * one-minute load average is below `below`, and say what it was.
 */
async function quiet(below = 1.5, maxMs = 180_000): Promise<number> {
  const deadline = Date.now() + maxMs;
  while (loadavg()[0]! >= below && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5000));
  return loadavg()[0]!;
}

interface Probes {
  viaProxy: Stats;
  empty: Stats;
  emptyUnderLoad: Stats;
  ping: Stats;
  pingUnderLoad: Stats;
  benchLag: number;
}

interface Step {
  rate: number;
  achieved: number;
  e2e: Stats;
  grows: boolean;
  first: number;
  last: number;
  cpu: { postgres: number; replicator: number; worker: number; bench: number };
}

interface Row {
  /** Cores used by the Worker's process group during the commits. */
  workerCpu?: number;
  /** Of which the workerd processes (the rest: wrangler's or Miniflare's Node process). */
  workerdCpu?: number;
  batchesPerSecond?: number;
  changesPerBatch?: number;
  runtime?: string;
  load?: number;
  label: string;
  rate: number;
  achieved: number;
  e2e: Stats;
  commit: Stats;
  replicator?: Stats;
  edge?: Stats;
  answer?: Stats;
}

function row(label: string, rate: number, achieved: number, samples: Sample[]): Row {
  const done = samples.filter((s) => s.t1 !== undefined && s.t2 !== undefined);
  const r: Row = {
    label,
    rate,
    achieved,
    e2e: stats(done.map((s) => s.t2! - s.t1!)),
    commit: stats(done.map((s) => s.t1! - s.t0)),
  };
  const tapped = done.filter((s) => s.tReq !== undefined && s.tRes !== undefined);
  if (tapped.length > 0) {
    r.replicator = stats(tapped.map((s) => s.tReq! - s.t1!));
    r.edge = stats(tapped.map((s) => s.t2! - s.tReq!));
    r.answer = stats(tapped.map((s) => s.tRes! - s.tReq!));
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

async function writeResults(section: string): Promise<void> {
  const file = path.join(ROOT, 'bench/RESULTS.md');
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch {
    text = '# Benchmark results\n';
  }
  const heading = '## End to end';
  const start = text.indexOf(`\n${heading}\n`);
  if (start >= 0) {
    const next = text.indexOf('\n## ', start + heading.length + 2);
    text = text.slice(0, start + 1) + section + (next >= 0 ? text.slice(next) : '');
  } else {
    text = `${text.trimEnd()}\n\n${section}`;
  }
  await writeFile(file, `${text.trimEnd()}\n`);
}

/** The Worker under the Miniflare API alone (no dev proxy in front), bench/edge-miniflare.ts as a child process. */
function startMiniflare(port: number, databaseUrl: string, secret: string, persist: string): Child {
  return new Child('miniflare', process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/edge-miniflare.ts')], {
    cwd: ROOT,
    env: { ...process.env, EDGE_PORT: String(port), EDGE_DATABASE_URL: databaseUrl, EDGE_SECRET: secret, EDGE_PERSIST: persist },
  });
}

async function main(): Promise<void> {
  const machine = `${cpus().length} x ${cpus()[0]?.model?.trim()}, node ${process.version}`;
  console.log(`machine: ${machine}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'edgeplane-bench-e2e-'));
  await chmod(dir, 0o755);
  let pg: LocalPostgres | undefined;
  let bench: Bench | undefined;
  try {
    pg = await startLocalPostgres({ dataDir: path.join(dir, 'pg'), port: await freePort() });
    const sql = postgres(pg.url, { max: 20, onnotice: () => {} });
    const [v] = await sql<{ v: string }[]>`select current_setting('server_version') as v`;
    await migrate(sql);
    const seeded = await seed(sql);
    // The last account gets no commits: probes of the Worker's HTTP path go to its object.
    const idle = seeded.pop()!;
    const secret = randomBytes(24).toString('hex');
    const workerPort = await freePort();
    const bundle = await buildWorkerBundle(path.join(dir, 'bundle'));
    const worker = startWorkerProcess({ port: workerPort, databaseUrl: pg.url, secret, persistTo: path.join(dir, 'worker'), bundle });
    await waitForHttp(`http://127.0.0.1:${workerPort}/healthz`, worker, 90_000, 'wrangler dev');
    bench = new Bench(pg, sql, worker, workerPort, await freePort(), secret, seeded, idle);
    await bench.openLanes(16);
    await bench.startReplicator(false, 2);
    await bench.connectClients();
    console.log(`postgres ${v!.v} (pg_ctl, fsync on), ${ACCOUNTS} accounts x ${RESOURCES} resources, one client each; ${SECONDS} s a run`);
    await bench.run(100, 2); // warm-up: objects hydrated, JIT warm

    const rows: Row[] = [];
    const measure = async (runtime: string, label: string, rate: number, viaProxy: boolean, linger: number) => {
      await bench!.startReplicator(viaProxy, linger);
      await bench!.run(50, 1);
      const load = await quiet();
      const requestsBefore = bench!.proxy?.requests ?? 0;
      const changesBefore = bench!.proxy?.changes ?? 0;
      const group = new Set([bench!.worker.pid!]);
      const cpuBefore = await cpuOfGroups(group, new Set());
      const workerdBefore = await cpuOfGroups(group, new Set(), 'workerd');
      const t = now();
      let workerCpu = 0;
      let workerdCpu = 0;
      let seconds = 0;
      const { samples, achieved } = await bench!.run(rate, SECONDS, async () => {
        seconds = (now() - t) / 1000;
        workerCpu = ((await cpuOfGroups(group, new Set())) - cpuBefore) / seconds;
        workerdCpu = ((await cpuOfGroups(group, new Set(), 'workerd')) - workerdBefore) / seconds;
      });
      const r = row(label, rate, achieved, samples);
      r.load = load;
      r.runtime = runtime;
      r.workerCpu = workerCpu;
      r.workerdCpu = workerdCpu;
      if (bench!.proxy) {
        const requests = bench!.proxy.requests - requestsBefore;
        r.batchesPerSecond = requests / seconds;
        r.changesPerBatch = (bench!.proxy.changes - changesBefore) / Math.max(1, requests);
      }
      rows.push(r);
      console.log(
        `${runtime}: ${label.padEnd(30)} ${String(rate).padStart(5)}/s  load ${load.toFixed(1)}  commit->socket p50 ${ms(r.e2e.p50)} p99 ${ms(r.e2e.p99)} max ${ms(r.e2e.max)} ms (n=${r.e2e.n})` +
          `  worker group ${workerCpu.toFixed(2)} cores (workerd ${workerdCpu.toFixed(2)})` +
          (r.replicator
            ? `  | replicator ${ms(r.replicator.p50)}, worker+object+socket ${ms(r.edge!.p50)}, POST answered ${ms(r.answer!.p50)}; ${r.batchesPerSecond!.toFixed(0)} batches/s of ${r.changesPerBatch!.toFixed(1)} changes`
            : ''),
      );
    };

    // 1. The local stack as `npm start` runs it: wrangler dev.
    for (const rate of PROBES_ONLY ? [] : [100, 500]) {
      for (const linger of [2, 0]) await measure('wrangler dev', `FORWARD_LINGER_MS=${linger}`, rate, false, linger);
      for (const linger of [2, 0]) await measure('wrangler dev', `recording proxy, LINGER=${linger}`, rate, true, linger);
    }
    console.log('wrangler dev probes:');
    const wranglerProbes = await bench.probes();

    // 2. The ramp, as `npm start` runs the replicator (FORWARD_LINGER_MS=0): the highest rate whose latency does not keep growing.
    await bench.startReplicator(false, 0);
    const pgPids = new Set<number>([Number((await readFile(path.join(pg.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0])]);
    const ramp: Step[] = [];
    let sustained = 0;
    for (const rate of PROBES_ONLY ? [] : QUICK ? [1000, 2000] : [1000, 1500, 2000, 2500, 3000, 4000]) {
      const groups = {
        postgres: () => cpuOfGroups(new Set(), pgPids),
        replicator: () => cpuOfGroups(new Set([bench!.replicator!.pid!]), new Set()),
        worker: () => cpuOfGroups(new Set([worker.pid!]), new Set()),
      };
      const rampLoad = await quiet();
      const before = { postgres: await groups.postgres(), replicator: await groups.replicator(), worker: await groups.worker(), bench: process.cpuUsage() };
      const t = now();
      let cpu = { postgres: 0, replicator: 0, worker: 0, bench: 0 };
      // CPU over the commits only, not the wait for the last frames.
      const { samples, achieved } = await bench.run(rate, QUICK ? 3 : 6, async () => {
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
      const e2e = row('ramp', rate, achieved, samples).e2e;
      ramp.push({ rate, achieved, e2e, ...g, cpu });
      console.log(
        `ramp ${String(rate).padStart(5)}/s (load ${rampLoad.toFixed(1)}): achieved ${Math.round(achieved)}/s, p50 ${ms(e2e.p50)} p99 ${ms(e2e.p99)} ms, first/last fifth p50 ${ms(g.first)}/${ms(g.last)} ms${g.grows ? '  <- latency grows' : ''}; CPU cores: postgres ${cpu.postgres.toFixed(2)}, replicator ${cpu.replicator.toFixed(2)}, workerd ${cpu.worker.toFixed(2)}, bench ${cpu.bench.toFixed(2)}`,
      );
      if (g.grows || achieved < rate * 0.95) break;
      sustained = rate;
    }
    if (!PROBES_ONLY) console.log(`highest sustained: ${sustained} commits/s`);

    // 3. The same bundle under the Miniflare API alone: what wrangler dev's proxy costs.
    await bench.replicator?.stop('SIGTERM', 20_000);
    await worker.stop('SIGTERM', 10_000);
    const mfPort = await freePort();
    const mf = startMiniflare(mfPort, pg.url, secret, path.join(dir, 'miniflare'));
    await waitForHttp(`http://127.0.0.1:${mfPort}/healthz`, mf, 90_000, 'miniflare');
    await bench.useWorker(mf, mfPort);
    await bench.startReplicator(false, 2);
    await bench.run(100, 2);
    for (const rate of PROBES_ONLY ? [] : [100, 500]) {
      for (const linger of [2, 0]) await measure('Miniflare', `FORWARD_LINGER_MS=${linger}`, rate, false, linger);
    }
    console.log('Miniflare probes:');
    const miniflareProbes = await bench.probes();
    console.log(`renames never seen: ${bench.lost}; seen through a later rename of the same resource: ${bench.coalesced}`);
    bench.releaseLanes();
    const load = loadavg()
      .map((x) => x.toFixed(1))
      .join(', ');
    if (WRITE && !PROBES_ONLY) {
      await writeResults(section({ machine, pgVersion: v!.v, rows, wranglerProbes, miniflareProbes, ramp, sustained, lost: bench.lost, coalesced: bench.coalesced, load }));
      console.log('wrote the "End to end" section of bench/RESULTS.md');
    }
    await sql.end({ timeout: 2 });
  } finally {
    await bench?.close().catch(() => undefined);
    await pg?.stop('fast', 60).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

function probeLine(name: string, p: Probes): string {
  return `| ${name} | ${ms(p.empty.p50)} / ${ms(p.empty.p99)} | ${ms(p.emptyUnderLoad.p50)} / ${ms(p.emptyUnderLoad.p99)} | ${ms(p.ping.p50)} / ${ms(p.ping.p99)} | ${ms(p.pingUnderLoad.p50)} / ${ms(p.pingUnderLoad.p99)} |`;
}

/** A few sentences that read the figures (computed, so that a re-run keeps them true). */
function reading(r: { rows: Row[]; wranglerProbes: Probes; miniflareProbes: Probes; sustained: number; ramp: Step[] }): string[] {
  const lingerOf = (x: Row) => (x.label.endsWith('=0') ? '0' : '2');
  const direct = (runtime: string, linger: string, rate: number) => r.rows.find((x) => x.runtime === runtime && !x.replicator && lingerOf(x) === linger && x.rate === rate);
  const tapped = (linger: string, rate: number) => r.rows.find((x) => x.replicator && lingerOf(x) === linger && x.rate === rate);
  const met = (x: Row | undefined) => (x && x.e2e.p50 <= 6 && x.e2e.p99 < 25 ? 'both targets met' : 'targets not met');
  const w0 = direct('wrangler dev', '0', 100);
  const w2 = direct('wrangler dev', '2', 100);
  const w5 = direct('wrangler dev', '0', 500);
  const m0 = direct('Miniflare', '0', 100);
  const t0 = tapped('0', 100);
  const t5 = tapped('0', 500);
  if (!w0 || !w2 || !w5 || !m0 || !t0 || !t5) return [];
  const perBatch = (x: Row) => ((x.workerdCpu ?? 0) / (x.batchesPerSecond ?? 1)) * 1000;
  const mfPerBatch = ((m0.workerdCpu ?? 0) / 100) * 1000;
  return [
    '**Reading.**',
    '',
    `- At 100 commits/s the local stack as \`npm start\` runs it (wrangler dev, FORWARD_LINGER_MS=0) puts a commit on the client's socket in p50 ${ms(w0.e2e.p50)} ms, p99 ${ms(w0.e2e.p99)} ms: ${met(w0)}. With the replicator's default 2 ms linger: p50 ${ms(w2.e2e.p50)}, p99 ${ms(w2.e2e.p99)} (commit -> request at the Worker ${ms(tapped('2', 100)?.replicator?.p50 ?? NaN)} ms with it, ${ms(t0.replicator!.p50)} ms without). ` +
      (w2.e2e.p50 > w0.e2e.p50
        ? 'The linger is the share that could be cut outside the Worker, so `npm start` runs the replicator with FORWARD_LINGER_MS=0; batching does not suffer, since one request per account is in flight and what arrives meanwhile goes in the next one.'
        : 'In this run the linger made no difference.'),
    `- The largest share is the Worker's: request -> frame at the client p50 ${ms(t0.edge!.p50)} ms at 100/s. It is CPU: the workerd processes use ${(t0.workerdCpu ?? 0).toFixed(2)} cores for ${(t0.batchesPerSecond ?? 0).toFixed(0)} one-change batches a second, ${ms(perBatch(t0))} ms per batch under wrangler dev (its dev proxy included) and ${ms(mfPerBatch)} ms under Miniflare alone; an empty batch to an idle object takes only ${ms(r.miniflareProbes.empty.p50)} ms end to end, so most of it is in applying and pushing a change. The commit itself (the writer's UPDATE and COMMIT, fsync on) takes ${ms(t0.commit.p50)} ms and is not part of commit-to-socket.`,
    `- At 500 commits/s workerd is the bottleneck of this two-core machine: ${(t5.workerdCpu ?? 0).toFixed(2)} cores for ${(t5.batchesPerSecond ?? 0).toFixed(0)} batches/s of ${(t5.changesPerBatch ?? 0).toFixed(1)} changes, and requests queue behind each other: a \`ping\` that the runtime answers without any object takes p50 ${ms(r.wranglerProbes.pingUnderLoad.p50)} ms instead of ${ms(r.wranglerProbes.ping.p50)}, an empty batch ${ms(r.wranglerProbes.emptyUnderLoad.p50)} ms instead of ${ms(r.wranglerProbes.empty.p50)}. Commit-to-socket p50 ${ms(w5.e2e.p50)} ms, p99 ${ms(w5.e2e.p99)} ms: ${met(w5)}. Cutting it means cutting the Worker's CPU per request: \`npm run bench:edge -- --only batch\` separates the runtime's fixed cost of a request (an empty batch) from the change's own; wrangler dev's proxy and inspector add a little on top (Miniflare rows).`,
    `- Throughput: the stack keeps up with ${r.sustained} commits/s before latency keeps growing (p50 ${ms(r.ramp.find((x) => x.rate === r.sustained)?.e2e.p50 ?? NaN)} ms there: larger batches absorb the rate). ` +
      (() => {
        const pgFirst = r.ramp.find((x) => x.cpu.postgres > x.cpu.worker);
        return pgFirst
          ? `From ${pgFirst.rate}/s on, Postgres (the writer's commits, fsync on) uses more CPU than the Worker, and the two cores shared by everything are the limit.`
          : 'The Worker uses the most CPU at every step.';
      })(),
    '',
  ];
}

function section(r: {
  machine: string;
  pgVersion: string;
  rows: Row[];
  wranglerProbes: Probes;
  miniflareProbes: Probes;
  sustained: number;
  lost: number;
  coalesced: number;
  load: string;
  ramp: Step[];
}): string {
  const date = new Date().toISOString().slice(0, 10);
  const lingerOf = (x: Row) => (x.label.endsWith('=0') ? '0' : '2');
  const lines = [
    '## End to end',
    '',
    `\`npm run bench:e2e\` (bench/e2e.ts), ${date}: ${r.machine}; PostgreSQL ${r.pgVersion} (pg_ctl, fsync on, as \`npm start\` runs it), the replicator process, the Worker bundle under \`wrangler dev\` 4.86 (what \`npm start\` runs) and, for comparison, under the Miniflare API alone; WebSocket clients (\`ws\`, no compression). ${ACCOUNTS} accounts of ${RESOURCES} resources, one client each; each commit renames a resource (one-row UPDATE, autocommit; the renames of one resource go through one connection, so they commit in order) and the account's client gets \`resource_created_or_updated\`. Open-loop writer, ${SECONDS} s a run, after waiting for the machine's load average to fall under 1.5 (the other processes of the stack count in it); all times in ms, measured in the bench process (one clock). Everything shares the machine's two cores.`,
    '',
    '**Commit-to-socket** (from the commit returning to the frame arriving at the client):',
    '',
    '| Worker runtime | FORWARD_LINGER_MS | rate/s | p50 | p99 | max | n | Worker CPU, cores (of which workerd) | load average before |',
    '|---|---|---|---|---|---|---|---|---|',
    ...r.rows
      .filter((x) => !x.label.startsWith('recording'))
      .map(
        (x) =>
          `| ${x.runtime} | ${lingerOf(x)} | ${x.rate} | ${ms(x.e2e.p50)} | ${ms(x.e2e.p99)} | ${ms(x.e2e.max)} | ${x.e2e.n} | ${x.workerCpu?.toFixed(2) ?? '-'} (${x.workerdCpu?.toFixed(2) ?? '-'}) | ${x.load?.toFixed(1) ?? '-'} |`,
      ),
    '',
    'Targets: p50 <= 6 ms, p99 < 25 ms.',
    '',
    '**Where the milliseconds go** (wrangler dev; p50 of each segment; a recording proxy between the replicator and the Worker adds a hop of its own):',
    '',
    '| rate/s | FORWARD_LINGER_MS | Postgres: UPDATE + commit | commit -> request at the Worker (WAL send, decode, batching, HTTP) | request -> frame at the client (Worker, object apply, socket send) | request -> answer to the replicator | commit -> socket | batches/s (changes each) | Worker CPU, cores (of which workerd) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...r.rows
      .filter((x) => x.replicator)
      .map(
        (x) =>
          `| ${x.rate} | ${lingerOf(x)} | ${ms(x.commit.p50)} | ${ms(x.replicator!.p50)} | ${ms(x.edge!.p50)} | ${ms(x.answer!.p50)} | ${ms(x.e2e.p50)} | ${x.batchesPerSecond!.toFixed(0)} (${x.changesPerBatch!.toFixed(1)}) | ${x.workerCpu!.toFixed(2)} (${x.workerdCpu!.toFixed(2)}) |`,
      ),
    '',
    "**Probes of the Worker's own paths** (p50 / p99): a signed empty batch to an idle account's object (HTTP, signature, routing, the object call, no storage), and a `ping` text frame on a client socket, which the runtime answers without the object; idle, and while 500 commits/s flow to the other accounts:",
    '',
    '| Worker runtime | empty batch, idle | empty batch, under load | ping, idle | ping, under load |',
    '|---|---|---|---|---|',
    probeLine('wrangler dev', r.wranglerProbes),
    probeLine('Miniflare', r.miniflareProbes),
    '',
    `The bench's own event loop delay during the loaded probes: p99 ${ms(r.wranglerProbes.benchLag)} ms (wrangler dev), ${ms(r.miniflareProbes.benchLag)} ms (Miniflare). The recording proxy's own hop: an idle empty batch through it takes p50 ${ms(r.wranglerProbes.viaProxy.p50)} ms against ${ms(r.wranglerProbes.empty.p50)} ms direct (wrangler dev).`,
    '',
    "**Highest sustained rate** (wrangler dev, FORWARD_LINGER_MS=0 as `npm start` runs the replicator; a step passes when the writer keeps its rate and the last fifth's median latency stays under twice the first fifth's + 10 ms; CPU in cores, over the commits):",
    '',
    "| rate/s | achieved | p50 | p99 | first/last fifth p50 | Postgres | replicator | Worker (wrangler dev's processes) | bench (writer + clients) |",
    '|---|---|---|---|---|---|---|---|---|',
    ...r.ramp.map(
      (x) =>
        `| ${x.rate} | ${Math.round(x.achieved)} | ${ms(x.e2e.p50)} | ${ms(x.e2e.p99)} | ${ms(x.first)} / ${ms(x.last)}${x.grows ? ' (grows)' : ''} | ${x.cpu.postgres.toFixed(2)} | ${x.cpu.replicator.toFixed(2)} | ${x.cpu.worker.toFixed(2)} | ${x.cpu.bench.toFixed(2)} |`,
    ),
    '',
    `Highest sustained: **${r.sustained} commits/s**. Renames the client never saw: ${r.lost}; renames it saw through a later rename of the same resource (the object coalesces a batch into one view per resource, docs/architecture.md#8-no-n1): ${r.coalesced}. Load average at the end: ${r.load}.`,
    '',
    ...reading(r),
  ];
  return lines.join('\n');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
