import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import type { Device } from './edge-devices.ts';
import { policyFanout, type Bench } from './edge-fanout.ts';
import { flows } from './edge-flows.ts';
import { flag, numArg, only } from './bench-args.ts';
import { summarizeProfile, WorkerProfiler } from './edge-profile.ts';
import { startBenchDatabase, startBenchWorker, type BenchDatabase } from './bench-stack.ts';
import { cpuSample, processes, type Processes, type RunningWorker } from './edge-worker.ts';

const CLIENTS = numArg('clients', 8000);
const RELAYS = numArg('relays', 4);
const SINGLE = numArg('single', 5000);
const FLOW_CLIENTS = numArg('flow-clients', 200);
const ROUNDS = numArg('rounds', 3);
/** --profile: a CPU profile of the Worker's isolate (the writer and every relay: one isolate locally) for each fan-out round. */
const PROFILE = flag('profile');

const load = () =>
  `load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`;
const say = (line: string) => console.log(line.startsWith('\n') ? `${line}  (${load()})` : line);

/** One Worker with these variables for the duration of `fn`, its sockets closed after it. */
async function withWorker(db: BenchDatabase, label: string, vars: Record<string, string>, fn: (b: Bench) => Promise<Device[]>): Promise<void> {
  let worker: RunningWorker | undefined;
  let profiler: WorkerProfiler | undefined;
  let devices: Device[] = [];
  try {
    // Sequential create_flow from one client: no per-socket rate limit.
    worker = await startBenchWorker(db, `relays-${label.replace(/\W+/g, '-')}`, { vars: { FLOW_RATE_PER_SECOND: '0', ...vars }, direct: true });
    say(
      `\n== ${label}: ${
        Object.entries(vars)
          .map(([k, v]) => `${k}=${v}`)
          .join(' ') || 'default placement'
      }`,
    );
    let procs: Processes | undefined;
    const w = worker;
    const procsOf = () => (procs ??= processes(w, db.postmaster));
    profiler = PROFILE ? await WorkerProfiler.connect(w.inspectorPort) : undefined;
    const p = profiler;
    const profile =
      p &&
      (async (what: string, run: () => Promise<unknown>) => {
        const before = cpuSample(procsOf());
        await p.start();
        try {
          await run();
        } finally {
          const file = path.join(tmpdir(), `edgeplane-bench-relays-${`${label} ${what}`.replace(/\W+/g, '-')}-${db.stamp}.cpuprofile`);
          const lines = summarizeProfile(await p.stop(file));
          say(`  profile of the Worker's isolate, ${what} (${file}); workerd used ${Math.round(cpuSample(procsOf()).worker - before.worker)} ms of CPU meanwhile:`);
          for (const l of lines) say(`    ${l}`);
        }
      });
    devices = await fn({ sql: db.sql, worker: w, procs: procsOf, say, profile, profileRounds: true });
  } finally {
    profiler?.close();
    for (const d of devices) d.close();
    await worker?.stop();
  }
}

async function main(): Promise<void> {
  say(`machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${load()}`);
  const db = await startBenchDatabase('relays', { maxConnections: 2000 });
  try {
    const perRelay = String(Math.ceil(CLIENTS / RELAYS));
    if (only('fanout')) {
      await withWorker(
        db,
        `${CLIENTS} sockets over ${RELAYS} relays`,
        { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: perRelay },
        // Past 9,000 clients this process cannot also hold the baseline's sockets: the one-object part's baseline stands for it.
        async (b) => (await policyFanout(b, CLIENTS, ROUNDS, CLIENTS <= 9_000)).devices,
      );
      await withWorker(db, `${SINGLE} sockets on one object`, {}, async (b) => (await policyFanout(b, SINGLE, ROUNDS)).devices);
    }
    if (only('flows')) {
      const half = String(Math.ceil(FLOW_CLIENTS / 2));
      await withWorker(
        db,
        'flows, client and gateway on different relays',
        { RELAY_PLACEMENT: 'always', RELAY_MAX_SOCKETS: half },
        async (b) => (await flows(b, FLOW_CLIENTS, 1)).devices,
      );
      await withWorker(db, 'flows, one object', {}, async (b) => (await flows(b, FLOW_CLIENTS, 1)).devices);
    }
  } finally {
    await db.stop();
  }
}

await main();
