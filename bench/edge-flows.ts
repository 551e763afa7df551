/**
 * Part 4 of the edge benchmark (issue 4): `create_flow` -> `authorize_flow` latency inside local
 * workerd, with the transport's own round trips measured on the same sockets as baselines, and
 * revocation fan-out for many live flows.
 */
import { performance } from 'node:perf_hooks';
import { commit } from '../test/support/recorded-transaction.ts';
import { createAccount, insertTokens } from './edge-db.ts';
import { connectMany, countFrames, firstFrames, websocketUrl, type Device } from './edge-devices.ts';
import { connectClients, type Bench } from './edge-fanout.ts';
import { fmt, median, ms, sleep, spread, worst } from './edge-stats.ts';
import { cpuDelta, cpuSample, deliver } from './edge-worker.ts';

const WARM_UP = 200;
const starts = (prefix: string) => (t: string) => t.startsWith(prefix);

/** Sequential request/answer round trips: `send` then wait for the frame `answered` recognises. */
async function roundTrips(n: number, send: () => void, wait: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const answered = wait();
    const t0 = performance.now();
    send();
    await answered;
    out.push(performance.now() - t0);
  }
  return out;
}

export async function flows(b: Bench, count: number, gatewayCount: number): Promise<{ devices: Device[] }> {
  b.say(`\n4. Flows: ${fmt(count)} clients, ${gatewayCount} gateways of one site`);
  const account = await createAccount(b.sql, 'flows', { actors: count, resources: 2 });
  const siteTokens = await insertTokens(
    b.sql,
    account.id,
    'site',
    Array.from({ length: gatewayCount }, () => account.site.id as string),
  );
  const clients = await connectClients(b, account, count, 'flows');
  const gwUrls = siteTokens.map((t, i) => websocketUrl(b.worker.url, 'gateway', t, { externalId: `gateway-${i}` }));
  const gateways = (await connectMany(gwUrls, { concurrency: gatewayCount })).devices;
  const [revoked, latency] = account.resources.map((r) => r.id as string) as [string, string];
  const client = clients[0]!;

  // Latency: one client, sequential create_flow for a resource it may see.
  const createFlow = (resourceId: string) => JSON.stringify({ event: 'create_flow', payload: { resource_id: resourceId, connected_gateway_ids: [] } });
  const frame = createFlow(latency);
  const toGateway: number[] = [];
  const toClient: number[] = [];
  const one = async () => {
    const authorized = countFrames(gateways, starts('{"event":"authorize_flow"'), 1, 10_000);
    const created = firstFrames([client], starts('{"event":"flow_created"'), 10_000);
    const t0 = performance.now();
    client.send(frame);
    const [[ta], [tc]] = await Promise.all([authorized, created]);
    return [ta! - t0, tc! - t0] as const;
  };
  for (let i = 0; i < WARM_UP; i++) await one();
  const before = cpuSample(b.procs());
  for (let i = 0; i < count; i++) {
    const [ta, tc] = await one();
    toGateway.push(ta);
    toClient.push(tc);
  }
  const after = cpuSample(b.procs());
  b.say(`  create_flow -> authorize_flow at the gateway: ${spread(toGateway)}`);
  b.say(`  create_flow -> flow_created at the client:    ${spread(toClient)}`);
  b.say(`    ${cpuDelta(before, after)} (${count} flows)`);
  if (b.profile) {
    await b.profile(`${count} sequential create_flow`, async () => {
      for (let i = 0; i < count; i++) await one();
    });
  }
  const pings = await roundTrips(
    count,
    () => client.send('ping'),
    () => firstFrames([client], (t) => t === 'pong', 10_000),
  );
  b.say(`  baseline, ping -> pong (answered by the runtime, object not woken): ${spread(pings)}`);
  const noop = JSON.stringify({ event: 'bench_unknown', payload: {} });
  const errors = await roundTrips(
    count,
    () => client.send(noop),
    () => firstFrames([client], starts('{"event":"error"'), 10_000),
  );
  b.say(`  baseline, unknown event -> error (through the object's webSocketMessage): ${spread(errors)}`);

  // Revocation: one flow per client for the same resource, then its only policy soft-deleted.
  const policyId = account.policies[0]!.id as string;
  const lasts: number[] = [];
  const revocation = async (round: number, profiled: boolean) => {
    const created = firstFrames(clients, starts('{"event":"flow_created"'), 60_000);
    const t0 = performance.now();
    const burst = createFlow(revoked);
    for (const c of clients) c.send(burst);
    const createdAt = await created;
    b.say(`  round ${round}: ${fmt(count)} create_flow sent at once: all flow_created within ${ms(Math.max(...createdAt) - t0)}`);
    await sleep(300);
    const marks = gateways.map((g) => g.texts.length);
    const changes = await commit(b.sql, (t) => t.update('policies', { id: policyId }, { deleted_at: new Date() }));
    const s0 = cpuSample(b.procs());
    const rejects = countFrames(gateways, starts('{"event":"reject_access"'), count, 60_000);
    const deleted = firstFrames(clients, starts('{"event":"resource_deleted"'), 60_000);
    const measure = async () => {
      const posted = await deliver(b.worker, account.id, changes);
      return { posted, times: await Promise.all([rejects, deleted]) };
    };
    let result: Awaited<ReturnType<typeof measure>> | undefined;
    if (profiled) await b.profile!(`revoking ${fmt(count)} live flows`, async () => void (result = await measure()));
    else result = await measure();
    const {
      posted,
      times: [rejectTimes, deletedTimes],
    } = result!;
    const s1 = cpuSample(b.procs());
    await sleep(300);
    const pairs = new Set<string>();
    for (const [i, g] of gateways.entries()) {
      for (const f of g.frames(marks[i])) if (f.event === 'reject_access') pairs.add(`${String(f.payload.client_id)} ${String(f.payload.resource_id)}`);
    }
    const last = Math.max(...rejectTimes) - posted.startedAt;
    if (!profiled) lasts.push(last);
    b.say(
      `    policy soft-deleted${profiled ? ' (profiled)' : ''}: last of ${fmt(rejectTimes.length)} reject_access ${ms(last)}, first ${ms(Math.min(...rejectTimes) - posted.startedAt)}; ` +
        `last client resource_deleted ${ms(Math.max(...deletedTimes) - posted.startedAt)}; POST ${ms(posted.ms)}; ${pairs.size} distinct pairs rejected`,
    );
    b.say(`    ${cpuDelta(s0, s1)}`);
    const restored = await commit(b.sql, (t) => t.update('policies', { id: policyId }, { deleted_at: null }));
    const back = firstFrames(clients, starts('{"event":"resource_created_or_updated"'), 60_000);
    await deliver(b.worker, account.id, restored);
    await back;
    await sleep(300);
  };
  for (let round = 1; round <= 3; round++) await revocation(round, false);
  if (b.profile) await revocation(4, true);
  b.say(`  revocation of ${fmt(count)} live flows: last reject_access median ${ms(median(lasts))}, worst ${ms(worst(lasts))}`);
  return { devices: [...clients, ...gateways] };
}
