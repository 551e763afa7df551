/**
 * `npm run bench:flood [-- --others 20 --flood 10000 --seconds 6 --no-rate-limit --runtime miniflare|wrangler --echo]`
 *
 * The create_flow flood of issue 12 against the edge with its default limits (docs/protocol.md#limits):
 * one client sends `--flood` create_flow frames at once while `--others` clients of the same
 * account keep asking for flows at a steady pace. Measured: the others' create_flow ->
 * authorize_flow latency with and without the flood, what the flood got (granted, refused, the
 * close), the isolate's heap (through the inspector, as bench/edge-profile.ts reads it) and the
 * object's SQLite rows (its `flows` and `flow_outbox` tables, read from the persisted file).
 * --no-rate-limit runs the same with FLOW_RATE_PER_SECOND=0, to show what the other bounds hold alone.
 *
 * Not a test: it prints figures for bench/RESULTS.md.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createAccount, insertTokens } from './edge-db.ts';
import { connectMany, websocketUrl, type Device } from './edge-devices.ts';
import { WorkerProfiler } from './edge-profile.ts';
import { fmt, ms, percentile, sleep, spread } from './edge-stats.ts';
import { startBenchDatabase, startBenchWorker, type BenchDatabase } from './bench-stack.ts';
import type { Runtime, RunningWorker } from './edge-worker.ts';
import { flag, numArg, textArg } from './bench-args.ts';

const OTHERS = numArg('others', 20);
const FLOOD = numArg('flood', 10_000);
const SECONDS = numArg('seconds', 6);
/** Each other client asks this often (ms): 5 a second, under the default 10 a second per socket. */
const PACE_MS = 200;
const NO_RATE_LIMIT = flag('no-rate-limit');
const RUNTIME = textArg<Runtime>('runtime', 'miniflare');
const say = (line: string) => console.log(line);
const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;

const createFlow = (resourceId: string, ref?: string) =>
  JSON.stringify({ event: 'create_flow', ...(ref ? { ref } : {}), payload: { resource_id: resourceId, connected_gateway_ids: [] } });

/** authorize_flow frames at the gateways, handed to whoever waits for that client. */
class Authorizations {
  private readonly waiting = new Map<string, (at: number) => void>();
  count = 0;
  constructor(gateways: readonly Device[]) {
    for (const g of gateways) {
      g.listener = (_d, text, at) => {
        if (!text.startsWith('{"event":"authorize_flow"')) return;
        this.count++;
        const clientId = (JSON.parse(text) as { payload: { client: { id: string } } }).payload.client.id;
        const w = this.waiting.get(clientId);
        this.waiting.delete(clientId);
        w?.(at);
      };
    }
  }
  next(clientId: string): Promise<number> {
    return new Promise((resolve) => this.waiting.set(clientId, resolve));
  }
}

/** Each of `clients` asks for a flow every PACE_MS for `seconds`; returns every create_flow -> authorize_flow latency. */
async function steady(clients: readonly { device: Device; id: string }[], resourceId: string, auth: Authorizations, seconds: number): Promise<number[]> {
  const out: number[] = [];
  const until = performance.now() + seconds * 1000;
  const frame = createFlow(resourceId);
  await Promise.all(
    clients.map(async (c, i) => {
      await sleep((PACE_MS * i) / clients.length);
      while (performance.now() < until) {
        const answered = auth.next(c.id);
        const t0 = performance.now();
        c.device.send(frame);
        const at = await Promise.race([answered, sleep(30_000).then(() => NaN)]);
        out.push(at - t0);
        await sleep(Math.max(0, PACE_MS - (performance.now() - t0)));
      }
    }),
  );
  return out;
}

/** Rows of the objects' `flows` and `flow_outbox` tables, read from their persisted SQLite files. */
function sqliteRows(persistTo: string): { flows: number; outbox: number; files: number } {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.sqlite')) files.push(p);
    }
  };
  // Wherever the runtime keeps the objects' SQLite (`wrangler dev --persist-to` puts it under v3/do).
  walk(persistTo);
  let flows = 0;
  let outbox = 0;
  for (const f of files) {
    const count = (table: string) => {
      try {
        return Number(execFileSync('sqlite3', ['-readonly', f, `select count(*) from ${table}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
      } catch {
        return 0;
      }
    };
    flows += count('flows');
    outbox += count('flow_outbox');
  }
  return { flows, outbox, files: files.length };
}

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${load()}`);
  let db: BenchDatabase | undefined;
  let worker: RunningWorker | undefined;
  const devices: Device[] = [];
  try {
    db = await startBenchDatabase('flood', { maxConnections: 500 });
    const { sql } = db;
    // The default limits: FLOW_RATE_PER_SECOND 10, FLOW_BURST 100, FLOW_MAX_PER_CLIENT 1,000.
    worker = await startBenchWorker(db, 'flood', { runtime: RUNTIME, echo: flag('echo'), ...(NO_RATE_LIMIT ? { vars: { FLOW_RATE_PER_SECOND: '0' } } : {}) });
    const account = await createAccount(sql, 'flood', { actors: OTHERS + 1, resources: 3 });
    const siteTokens = await insertTokens(sql, account.id, 'site', [account.site.id as string, account.site.id as string]);
    const gateways = (
      await connectMany(
        siteTokens.map((t, i) => websocketUrl(worker!.url, 'gateway', t, { externalId: `gateway-${i}` })),
        { concurrency: 2 },
      )
    ).devices;
    const clientUrls = account.clientTokens.map((t, i) => websocketUrl(worker!.url, 'client', t, { externalId: `client-${i}` }));
    const clients = (await connectMany(clientUrls, { concurrency: 16 })).devices;
    devices.push(...gateways, ...clients);
    const [flooder, ...rest] = clients;
    const others = rest.map((device) => ({ device, id: (JSON.parse(device.texts[0]!) as { payload: { client_id: string } }).payload.client_id }));
    const [r0, r1, r2] = account.resources.map((r) => r.id as string) as [string, string, string];
    const auth = new Authorizations(gateways);
    const profiler = await WorkerProfiler.connect(worker.inspectorPort);
    say(`${fmt(OTHERS)} other clients each asking every ${PACE_MS} ms, 2 gateways; Worker: ${RUNTIME}${NO_RATE_LIMIT ? ', no create_flow rate limit' : ''}; ${load()}`);

    await steady(others, r1, auth, 1); // warm-up
    const heapBefore = await (async () => {
      const measured = profiler.heapMb(true);
      others[0]!.device.send(JSON.stringify({ event: 'bench_wake', payload: {} }));
      return await measured;
    })();
    const rowsBefore = sqliteRows(worker.persistTo);
    const baseline = steady(others, r1, auth, SECONDS);
    const baselineLatencies = await baseline;
    say(`without the flood: other clients' create_flow -> authorize_flow ${spread(baselineLatencies)}`);

    // The flood: one socket sends FLOOD create_flow frames at once, for the account's three resources.
    const floodFrames = Array.from({ length: FLOOD }, (_, i) => createFlow([r0, r1, r2][i % 3]!, `f${i}`));
    const floodAuthBefore = auth.count;
    const during = steady(others, r1, auth, SECONDS);
    await sleep(500);
    let peakHeap = 0;
    const sampling = (async () => {
      for (let i = 0; i < SECONDS * 10; i++) {
        const mb = await profiler.heapMb();
        if (mb > peakHeap) peakHeap = mb;
        await sleep(100);
      }
    })();
    const t0 = performance.now();
    for (const f of floodFrames) flooder!.send(f);
    const sentMs = performance.now() - t0;
    const duringLatencies = await during;
    await sampling;
    await sleep(1_500); // the flow log's quiet second, and its flush
    const replies = flooder!.texts.filter((t) => t.startsWith('{"event":"reply"'));
    const granted = replies.filter((t) => t.includes('"status":"ok"')).length;
    const limited = replies.filter((t) => t.includes('"rate_limited"')).length;
    // workerd serves the inspector when the isolate runs something: a frame to the object wakes it.
    let heapAfter = NaN;
    for (let i = 0; i < 6 && Number.isNaN(heapAfter); i++) {
      const measured = profiler.heapMb(true);
      others[0]!.device.send(JSON.stringify({ event: 'bench_wake', payload: {} }));
      heapAfter = await measured;
    }
    const rowsAfter = sqliteRows(worker.persistTo);
    const [pg] = await sql<{ n: number }[]>`select count(*)::int as n from flows where account_id = ${account.id}`;
    say(`during the flood (${fmt(FLOOD)} create_flow sent by one client in ${ms(sentMs)}): other clients' create_flow -> authorize_flow ${spread(duringLatencies)}`);
    say(
      `  the flood got: ${fmt(granted)} granted, ${fmt(limited)} refused (rate_limited), ${fmt(FLOOD - granted - limited)} unanswered; ` +
        `closed ${flooder!.closed ? `${flooder!.closed.code} ${flooder!.closed.reason}` : 'no'}; authorize_flow to gateways during the flood: ${fmt(auth.count - floodAuthBefore)}`,
    );
    say(
      `  the isolate's heap: ${heapBefore.toFixed(1)} MB before, peak ${peakHeap.toFixed(1)} MB during, ${heapAfter.toFixed(1)} MB after (after GC); ` +
        `SQLite rows: flows ${rowsBefore.flows} -> ${rowsAfter.flows}, flow_outbox ${rowsBefore.outbox} -> ${rowsAfter.outbox} (${rowsAfter.files} object files); Postgres flows rows ${fmt(pg!.n)}`,
    );
    say(`  p99 during / without: ${ms(percentile(duringLatencies, 99))} / ${ms(percentile(baselineLatencies, 99))}`);
    profiler.close();
  } catch (err) {
    if (worker) for (const l of worker.lines.slice(-60)) console.error(`  [${RUNTIME}] ${l}`);
    throw err;
  } finally {
    for (const d of devices) d.close();
    await worker?.stop();
    await db?.stop();
  }
}

await main();
