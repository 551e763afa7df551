/**
 * Parts 1 and 2 of the edge benchmark: one policy change fanned out to every connected client of
 * an account, and a 10k-membership bulk change in one batch.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Sql } from 'postgres';
import { Child } from '../dev/child.ts';
import { ROOT } from '../dev/root.ts';
import type { Change } from '../src/change.ts';
import { commit } from '../test/support/recorded-transaction.ts';
import { createAccount, type BenchAccount } from './edge-db.ts';
import { connectMany, firstFrames, websocketUrl, type Device } from './edge-devices.ts';
import { fmt, median, ms, sleep, worst } from './edge-stats.ts';
import { cpuDelta, cpuSample, deliver, type Processes, type RunningWorker } from './edge-worker.ts';

export interface Bench {
  sql: Sql;
  worker: RunningWorker;
  /** Known once the first object exists (see `processes`). */
  procs: () => Processes;
  say: (line: string) => void;
  /** With --profile: runs `fn` under a CPU profile of the Worker's isolate and prints its summary. */
  profile: ((label: string, fn: () => Promise<unknown>) => Promise<void>) | undefined;
  /** With `profile`: profile each measured round of the fan-out (bench:relays) instead of a part of its own after them (bench:edge). */
  profileRounds?: boolean;
}

const SETTLE_MS = 2_000;
const HIBERNATION_IDLE_MS = 15_000;

export interface Round {
  kind: string;
  /** POST start to the last socket's frame, ms. */
  last: number;
  /** POST start to the first socket's frame, ms. */
  first: number;
  /** The POST's own latency, ms. */
  post: number;
  bytes: number;
  /** Sockets whose frames after the change were not exactly the one expected. */
  wrong: number;
}

/** Connects one client per token (the first one alone: it hydrates the object). */
export async function connectClients(b: Bench, account: BenchAccount, count: number, label: string): Promise<Device[]> {
  const urls = account.clientTokens.slice(0, count).map((t, i) => websocketUrl(b.worker.url, 'client', t, { externalId: `${label}-${i}` }));
  const counts = await b.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity`;
  b.say(`  connecting ${fmt(count)} clients, 32 handshakes in flight (Postgres has ${counts[0]!.n} connections)`);
  const first = await connectMany(urls.slice(0, 1), { concurrency: 1 });
  b.say(`  first connect (hydrates the object): ${ms(first.stats.ms)}`);
  const rest = await connectMany(urls.slice(1), { concurrency: 32, timeoutMs: 120_000, progress: (n) => b.say(`  ${fmt(n + 1)} connected`) });
  const devices = [...first.devices, ...rest.devices];
  b.say(
    `  ${fmt(devices.length)} client sockets connected in ${ms(first.stats.ms + rest.stats.ms)} (${fmt(devices.length / ((first.stats.ms + rest.stats.ms) / 1000))}/s, ${rest.stats.retries} retried)`,
  );
  // Let the connects' trailing work (Postgres connections closing, the flow log) drain first.
  await sleep(SETTLE_MS);
  return devices;
}

/**
 * Posts `changes` and measures until every socket of `targets` got a frame; then checks that each
 * got exactly one frame of `event` (after a short settle).
 */
export async function measureRound(b: Bench, accountId: string, changes: readonly Change[], targets: readonly Device[], event: string, kind: string): Promise<Round> {
  const marks = targets.map((d) => d.texts.length);
  const before = cpuSample(b.procs());
  const arrived = firstFrames(targets, (t) => t !== 'pong', 120_000);
  const posted = await deliver(b.worker, accountId, changes);
  const times = await arrived;
  const after = cpuSample(b.procs());
  await sleep(300);
  let wrong = 0;
  for (const [i, d] of targets.entries()) {
    const frames = d.frames(marks[i]);
    if (frames.length !== 1 || frames[0]!.event !== event) wrong++;
  }
  const round: Round = {
    kind,
    last: Math.max(...times) - posted.startedAt,
    first: Math.min(...times) - posted.startedAt,
    post: posted.ms,
    bytes: posted.bytes,
    wrong,
  };
  b.say(
    `  ${kind.padEnd(22)} last socket ${ms(round.last).padStart(8)}  first ${ms(round.first).padStart(8)}  POST ${ms(round.post).padStart(8)}  ${wrong ? `WRONG FRAMES on ${wrong} sockets` : 'frames ok'}`,
  );
  b.say(`    ${cpuDelta(before, after)}`);
  return round;
}

export function summarize(b: Bench, title: string, rounds: readonly Round[]): void {
  const last = rounds.map((r) => r.last);
  const post = rounds.map((r) => r.post);
  b.say(`  ${title}: last socket median ${ms(median(last))}, worst ${ms(worst(last))}; POST median ${ms(median(post))}, worst ${ms(worst(post))} (${rounds.length} rounds)`);
}

const PROFILED_CONNECTS = 300;

/**
 * Part 1: a policy change reaching `clients` sockets of one account, each round next to the
 * baseline's (`withBaseline` false: none, for more clients than one process can hold twice).
 */
export async function policyFanout(b: Bench, clients: number, rounds: number, withBaseline = true, wakes = 1): Promise<{ rounds: Round[]; devices: Device[] }> {
  b.say(`\n1. Policy change fan-out to ${fmt(clients)} client sockets of one account`);
  const account = await createAccount(b.sql, 'fanout', { actors: clients + (b.profile && !b.profileRounds ? PROFILED_CONNECTS : 0) });
  // The baseline's sockets first: connecting them later would leave the object idle long enough to hibernate.
  const baseline = withBaseline ? await Broadcaster.start(clients) : undefined;
  if (baseline) b.say(`  baseline: ${fmt(clients)} sockets of this process connected to a plain Node \`ws\` server (bench/edge-broadcast.ts)`);
  const devices = await connectClients(b, account, clients, 'fanout');
  const policyId = account.policies[0]!.id as string;
  const resourceId = account.resources[0]!.id as string;
  const kinds = [
    { kind: 'policy soft-deleted', event: 'resource_deleted', write: () => commit(b.sql, (t) => t.update('policies', { id: policyId }, { deleted_at: new Date() })) },
    { kind: 'policy restored', event: 'resource_created_or_updated', write: () => commit(b.sql, (t) => t.update('policies', { id: policyId }, { deleted_at: null })) },
    {
      kind: 'resource renamed',
      event: 'resource_created_or_updated',
      write: (n: number) => commit(b.sql, (t) => t.update('resources', { id: resourceId }, { name: `Wiki renamed ${n}` })),
    },
  ];
  const out: Round[] = [];
  const base: number[] = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const k = kinds[i % kinds.length]!;
      const changes = await k.write(i);
      const round = () => measureRound(b, account.id, changes, devices, k.event, k.kind);
      if (b.profile && b.profileRounds) await b.profile(`round ${i + 1}, ${k.kind}`, async () => out.push(await round()));
      else out.push(await round());
      await sleep(500);
      if (!baseline) continue;
      const frame = devices[0]!.texts.at(-1)!;
      base.push(await baseline.round(frame));
      b.say(`    baseline: the same ${frame.length}-byte frame from a plain \`ws\` server to ${fmt(clients)} sockets: last socket ${ms(base.at(-1)!)}`);
      await sleep(500);
    }
  } finally {
    await baseline?.stop();
  }
  summarize(b, 'all rounds', out);
  if (baseline) b.say(`  baseline (plain \`ws\` server, same clients): last socket median ${ms(median(base))}, worst ${ms(worst(base))}`);
  // workerd evicts an object whose only open work is hibernatable sockets after about 10 s idle.
  const woken: Round[] = [];
  for (let i = 0; i < wakes; i++) {
    await sleep(HIBERNATION_IDLE_MS);
    const changes = await kinds[2]!.write(rounds + i);
    woken.push(await measureRound(b, account.id, changes, devices, kinds[2]!.event, `after ${HIBERNATION_IDLE_MS / 1000} s idle`));
  }
  const wokenLast = woken.map((r) => r.last);
  b.say(
    `  after ${HIBERNATION_IDLE_MS / 1000} s idle (the object hibernated; the change wakes it): last socket ${wokenLast.map(ms).join(', ')}; median ${ms(median(wokenLast))} (${wakes} wakes)`,
  );
  if (b.profile && !b.profileRounds) {
    const extra = account.clientTokens.slice(clients).map((t, i) => websocketUrl(b.worker.url, 'client', t, { externalId: `fanout-extra-${i}` }));
    await b.profile(`${PROFILED_CONNECTS} more connects with ${fmt(clients)} sockets open`, async () => {
      const { devices: more, stats } = await connectMany(extra, { concurrency: 32 });
      b.say(`  profiled: ${more.length} connects in ${ms(stats.ms)}`);
      devices.push(...more);
    });
    await sleep(SETTLE_MS);
    const renamed = await kinds[2]!.write(rounds + wakes);
    await b.profile(`one fan-out round to ${fmt(devices.length)} sockets`, () => measureRound(b, account.id, renamed, devices, kinds[2]!.event, 'profiled rename'));
    await sleep(HIBERNATION_IDLE_MS);
    const again = await kinds[2]!.write(rounds + wakes + 1);
    await b.profile(`one fan-out round to ${fmt(devices.length)} sockets after ${HIBERNATION_IDLE_MS / 1000} s idle`, () =>
      measureRound(b, account.id, again, devices, kinds[2]!.event, 'profiled, after idle'),
    );
  }
  return { rounds: out, devices };
}

/**
 * The fan-out's baseline: sockets of this same client process fed one frame each by a plain `ws`
 * server in another Node process (bench/edge-broadcast.ts), so that the difference to the edge's
 * figure is what the edge adds over loopback and the clients' own work.
 */
class Broadcaster {
  private constructor(
    private readonly child: Child,
    private readonly port: number,
    private readonly devices: Device[],
  ) {}

  static async start(clients: number): Promise<Broadcaster> {
    let ready: (port: number) => void = () => {};
    const port = new Promise<number>((resolve) => (ready = resolve));
    const child = new Child('broadcast', process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/edge-broadcast.ts')], {
      cwd: ROOT,
      env: process.env,
      onLine: (line) => {
        const m = /^ready (\d+)$/.exec(line);
        if (m) ready(Number(m[1]));
      },
    });
    try {
      const p = await port;
      const { devices } = await connectMany(
        Array.from({ length: clients }, (_, i) => `ws://127.0.0.1:${p}/${i}`),
        { concurrency: 64 },
      );
      return new Broadcaster(child, p, devices);
    } catch (err) {
      await child.stop('SIGTERM', 5_000);
      throw err;
    }
  }

  /** Sends `frame` to every socket; resolves with the time until the last socket got it. */
  async round(frame: string): Promise<number> {
    const arrived = firstFrames(this.devices, () => true, 60_000);
    const t0 = performance.now();
    await (await fetch(`http://127.0.0.1:${this.port}/broadcast`, { method: 'POST', body: frame })).text();
    return Math.max(...(await arrived)) - t0;
  }

  async stop(): Promise<void> {
    for (const d of this.devices) d.close();
    await this.child.stop('SIGTERM', 5_000);
  }
}

/** Part 2: `memberships` memberships deleted (then inserted again) in one batch, with `connected` sockets. */
export async function bulkMemberships(b: Bench, memberships: number, connected: number, rounds: number): Promise<{ deletes: Round[]; inserts: Round[]; devices: Device[] }> {
  b.say(`\n2. Bulk membership change: ${fmt(memberships)} memberships in one batch, ${fmt(connected)} connected client sockets`);
  const account = await createAccount(b.sql, 'bulk', { actors: memberships, tokens: connected });
  const devices = await connectClients(b, account, connected, 'bulk');
  const groupId = account.group.id as string;
  const deletes: Round[] = [];
  const inserts: Round[] = [];
  const round = async (profiled: boolean) => {
    const removed = await commit(b.sql, (t) => t.delete('actor_group_memberships', { group_id: groupId }));
    if (removed.length !== memberships) throw new Error(`expected ${memberships} membership deletions, got ${removed.length}`);
    const measure = () => measureRound(b, account.id, removed, devices, 'resource_deleted', `delete ${fmt(removed.length)}${profiled ? ' (profiled)' : ''}`);
    if (profiled) await b.profile!(`a ${fmt(memberships)}-membership delete batch`, measure);
    else deletes.push(await measure());
    await sleep(500);
    const added = await commit(b.sql, (t) =>
      t.insertMany(
        'actor_group_memberships',
        account.actors.map((a) => ({ account_id: account.id, actor_id: a.id, group_id: groupId })),
      ),
    );
    const round = await measureRound(b, account.id, added, devices, 'resource_created_or_updated', `insert ${fmt(added.length)}${profiled ? ' (profiled)' : ''}`);
    if (!profiled) inserts.push(round);
    await sleep(500);
  };
  for (let i = 0; i < rounds; i++) await round(false);
  if (b.profile) await round(true);
  b.say(`  batch bodies: ${(deletes[0]!.bytes / 1e6).toFixed(1)} MB (deletes), ${(inserts[0]!.bytes / 1e6).toFixed(1)} MB (inserts)`);
  summarize(b, 'deletes', deletes);
  summarize(b, 'inserts', inserts);
  return { deletes, inserts, devices };
}
