/**
 * Part 5 of the edge benchmark: the Worker's cost of one small batch, the case that dominates
 * commit-to-socket latency at a steady commit rate (bench/e2e.ts): one-change batches posted one
 * after the other, each renaming a resource that a connected client sees, timed from the POST to
 * the client's frame, with the workerd process's CPU per batch.
 */
import { performance } from 'node:perf_hooks';
import type { Change } from '../src/change.ts';
import { commit } from '../test/support/recorded-transaction.ts';
import { createAccount } from './edge-db.ts';
import { firstFrames } from './edge-devices.ts';
import { connectClients, type Bench } from './edge-fanout.ts';
import { fmt, spread } from './edge-stats.ts';
import { cpuSample, deliver } from './edge-worker.ts';

const WARM_UP = 200;

export async function smallBatches(b: Bench, count: number): Promise<void> {
  b.say(`\n5. ${fmt(count)} one-change batches, one after the other (a resource renamed; 4 clients connected)`);
  const account = await createAccount(b.sql, 'batches', { actors: 4, resources: 20 });
  const clients = await connectClients(b, account, 4, 'batches');
  const batches: Change[][] = [];
  for (let i = 0; i < WARM_UP + count + (b.profile ? count : 0); i++) {
    const resource = account.resources[i % account.resources.length]!;
    batches.push(await commit(b.sql, (t) => t.update('resources', { id: resource.id }, { name: `Renamed ${i}` })));
  }
  const client = clients[0]!;
  let next = 0;
  const one = async (): Promise<[number, number]> => {
    const arrived = firstFrames([client], (t) => t.startsWith('{"event":"resource_created_or_updated"'), 10_000);
    const posted = await deliver(b.worker, account.id, batches[next++]!);
    const [at] = await arrived;
    return [posted.ms, at! - posted.startedAt];
  };
  for (let i = 0; i < WARM_UP; i++) await one();
  const post: number[] = [];
  const frame: number[] = [];
  const before = cpuSample(b.procs());
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const [p, f] = await one();
    post.push(p);
    frame.push(f);
  }
  const wall = performance.now() - t0;
  const cpu = cpuSample(b.procs()).worker - before.worker;
  b.say(`  POST -> frame at the client: ${spread(frame)}`);
  b.say(`  POST -> answer: ${spread(post)}`);
  b.say(`  workerd CPU ${(cpu / count).toFixed(2)} ms per batch (${Math.round(cpu)} ms for ${fmt(count)}; ${(count / (wall / 1000)).toFixed(0)} batches/s)`);
  // Baseline: the fixed cost of a request (HTTP, signature, routing, the object call), with nothing to apply.
  const emptyBefore = cpuSample(b.procs());
  const empty: number[] = [];
  for (let i = 0; i < count; i++) empty.push((await deliver(b.worker, account.id, [])).ms);
  const emptyCpu = cpuSample(b.procs()).worker - emptyBefore.worker;
  b.say(`  baseline, an empty batch: POST -> answer ${spread(empty)}; workerd CPU ${(emptyCpu / count).toFixed(2)} ms per batch`);
  await b.profile?.(`${fmt(count)} one-change batches`, async () => {
    for (let i = 0; i < count; i++) await one();
  });
}
