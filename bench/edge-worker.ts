/**
 * The Worker under benchmark, in a child process: the local Worker `npm start` runs (dev/worker.ts:
 * the real bundle on the Miniflare API, one workerd) or, for comparison, `wrangler dev`
 * (bench/wrangler-dev.ts: wrangler's ProxyWorker in one workerd process in front of the Worker
 * and its objects in another); signed change batches posted to it; and the CPU time each process
 * of the stack spends, read from /proc.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Change } from '../src/change.ts';
import { SIGNATURE_HEADER, signBody } from '../src/signature.ts';
import type { Child } from '../dev/child.ts';
import { isWorkerNoise, startWorkerProcess, waitForHttp } from '../dev/worker-process.ts';
import { startWranglerDev } from './wrangler-dev.ts';

export type Runtime = 'wrangler' | 'miniflare';

export interface RunningWorker {
  runtime: Runtime;
  url: string;
  /** Where change batches go: the local Worker's direct port when it has one (as `npm start`'s replicator posts), else `url`. */
  changesUrl: string;
  secret: string;
  persistTo: string;
  inspectorPort: number;
  child: Child;
  /** The last lines the child printed (noise left out). */
  lines: string[];
  stop(): Promise<void>;
}

export interface WorkerOptions {
  runtime: Runtime;
  port: number;
  inspectorPort: number;
  databaseUrl: string;
  secret: string;
  persistTo: string;
  echo: boolean;
  /** Off by default: the benchmarks connect thousands of devices from one address. */
  rateLimits?: 'on' | 'off';
  /** Worker variables on top of wrangler.toml's, e.g. FLOW_RATE_PER_SECOND (docs/protocol.md#limits). */
  vars?: Record<string, string>;
  /** The local Worker only: also serve it here without Miniflare's entry worker, and post change batches here (dev/local-worker.ts). */
  directPort?: number;
}

function spawnRuntime(o: WorkerOptions, onLine: (line: string) => void): Child {
  // A known inspector port, for profiling the Worker's isolate.
  const common = {
    port: o.port,
    databaseUrl: o.databaseUrl,
    secret: o.secret,
    persistTo: o.persistTo,
    inspectorPort: o.inspectorPort,
    onLine,
    ...(o.vars ? { vars: o.vars } : {}),
  };
  const rateLimits = o.rateLimits === 'on' ? {} : ({ rateLimits: 'off' } as const);
  if (o.runtime === 'wrangler') return startWranglerDev({ ...common, ...rateLimits });
  return startWorkerProcess({ ...common, ...rateLimits, ...(o.directPort ? { directPort: o.directPort } : {}) });
}

export async function startWorker(o: WorkerOptions): Promise<RunningWorker> {
  const lines: string[] = [];
  const child = spawnRuntime(o, (line) => {
    if (isWorkerNoise(line) || line.trim() === '' || /GET \/v1\/(client|gateway)\/websocket 101/.test(line)) return;
    lines.push(line);
    if (lines.length > 500) lines.shift();
    if (o.echo) console.log(`  [${o.runtime}] ${line}`);
  });
  const url = `http://127.0.0.1:${o.port}`;
  try {
    await waitForHttp(`${url}/healthz`, child, 180_000, o.runtime);
  } catch (err) {
    for (const l of lines) console.error(`  [${o.runtime}] ${l}`);
    await child.stop('SIGTERM', 5_000);
    throw err;
  }
  return {
    runtime: o.runtime,
    url,
    changesUrl: o.directPort && o.runtime === 'miniflare' ? `http://127.0.0.1:${o.directPort}` : url,
    secret: o.secret,
    persistTo: o.persistTo,
    inspectorPort: o.inspectorPort,
    child,
    lines,
    stop: async () => void (await child.stop('SIGTERM', 10_000)),
  };
}

export interface Posted {
  status: number;
  body: string;
  /** From the start of the request to the end of the response body, ms. */
  ms: number;
  /** performance.now() when the request started. */
  startedAt: number;
  bytes: number;
}

/** Signs (before the clock starts, as the replicator does before sending) and posts a batch. */
export async function postChanges(worker: RunningWorker, accountId: string, changes: readonly Change[]): Promise<Posted> {
  const body = JSON.stringify({ changes });
  const signature = await signBody(worker.secret, body, Math.floor(Date.now() / 1000));
  const startedAt = performance.now();
  const res = await fetch(`${worker.changesUrl}/v1/accounts/${accountId}/changes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature },
    body,
  });
  const text = await res.text();
  return { status: res.status, body: text, ms: performance.now() - startedAt, startedAt, bytes: Buffer.byteLength(body) };
}

export async function deliver(worker: RunningWorker, accountId: string, changes: readonly Change[]): Promise<Posted> {
  const posted = await postChanges(worker, accountId, changes);
  if (posted.status !== 200) throw new Error(`POST changes: ${posted.status} ${posted.body.slice(0, 500)}`);
  return posted;
}

const TICK_MS = 10; // USER_HZ is 100 on Linux

function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const visit = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      visit(c);
    }
  };
  visit(pid);
  return out;
}

/** utime + stime, and with `reaped` the time of children it waited for (Postgres's closed backends). */
function cpuMs(pid: number, reaped = false): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12]) + (reaped ? Number(fields[13]) + Number(fields[14]) : 0)) * TICK_MS;
  } catch {
    return 0;
  }
}

function rssMb(pid: number): number {
  try {
    return Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024);
  } catch {
    return 0;
  }
}

export interface Processes {
  /** The workerd that runs the Worker and its objects. */
  worker: number;
  /** The workerd of wrangler's ProxyWorker in front of it (0 under Miniflare alone). */
  proxy: number;
  /** The Node process that hosts the runtime (wrangler's, or dev/worker.ts). */
  host: number;
  postgres: number | undefined;
}

function holdsFileUnder(pid: number, dir: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(dir);
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

/**
 * The processes of the stack, once an object exists: the workerd that holds files under the
 * persistence folder (the objects' SQLite) runs the Worker; another one is the ProxyWorker.
 */
export function processes(worker: RunningWorker, postgresPid: number | undefined): Processes {
  const all = [worker.child.pid!, ...descendants(worker.child.pid!)];
  const comm = (p: number) => {
    try {
      return readFileSync(`/proc/${p}/comm`, 'utf8').trim();
    } catch {
      return '';
    }
  };
  // tsx and npx put a Node between the child and the one that hosts the runtime: take the deepest.
  const host = all.filter((p) => comm(p) === 'node').at(-1) ?? worker.child.pid!;
  const workerds = all.filter((p) => comm(p) === 'workerd');
  const main = workerds.find((p) => holdsFileUnder(p, worker.persistTo)) ?? workerds[0] ?? 0;
  return { worker: main, proxy: workerds.find((p) => p !== main) ?? 0, host, postgres: postgresPid };
}

export interface CpuSample {
  worker: number;
  proxy: number;
  host: number;
  postgres: number;
  bench: number;
}

export function cpuSample(p: Processes): CpuSample {
  const u = process.cpuUsage();
  return {
    worker: cpuMs(p.worker),
    proxy: cpuMs(p.proxy),
    host: cpuMs(p.host),
    // Postgres forks a backend per connection: the live ones, and the closed ones the postmaster reaped.
    postgres: p.postgres ? descendants(p.postgres).reduce((n, pid) => n + cpuMs(pid), cpuMs(p.postgres, true)) : 0,
    bench: (u.user + u.system) / 1000,
  };
}

export function cpuDelta(a: CpuSample, b: CpuSample): string {
  const d = (k: keyof CpuSample) => Math.round(b[k] - a[k]);
  const proxy = b.proxy > 0 ? `, workerd (ProxyWorker) ${d('proxy')}` : '';
  return `CPU ms: workerd (Worker) ${d('worker')}${proxy}, bench (Node clients) ${d('bench')}, runtime's Node host ${d('host')}, postgres ${d('postgres')}`;
}

export function memory(p: Processes): string {
  const proxy = p.proxy > 0 ? `, workerd (ProxyWorker) ${rssMb(p.proxy)}` : '';
  return `RSS MB: workerd (Worker) ${rssMb(p.worker)}${proxy}, bench ${Math.round(process.memoryUsage().rss / 2 ** 20)}`;
}
