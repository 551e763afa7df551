import { afterEach, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { insertAccount, Pipeline, insertActors } from '../support/pipeline.ts';
import { firstDeliveries, isSortedByPosition } from '../support/positions.ts';
import { eventually } from '../support/replicator-process.ts';

// The Worker unreachable for 5 minutes while changes keep coming (issue 11: "a Worker outage longer
// than ~2 minutes with a full window loops reconnects"). Its own file: it takes that long, and
// runs beside the others.

const OUTAGE_MS = 5 * 60_000;

let pipeline: Pipeline | undefined;
afterEach(async () => {
  await pipeline?.close();
  pipeline = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Sample {
  at: number;
  sessions: number;
  paused: number;
  status: string;
  healthy: boolean;
  httpStatus: number;
  confirmed: bigint;
  wal: bigint;
}

it('a 5-minute edge outage (503, then connections refused) while changes flow: one session, reading never pauses, the slot keeps being confirmed, /healthz says lagging, and everything arrives in order afterwards', {
  timeout: OUTAGE_MS + 180_000,
}, async () => {
  const p = await Pipeline.create('outage');
  pipeline = p;
  // A small window: were delivery to hold the acknowledgement, reading would pause within seconds.
  const r = await p.replicator({ MAX_UNACKED: '200', RETRY_BASE_MS: '100', RETRY_MAX_MS: '5000' });
  onTestFailed(() =>
    console.error(
      r.logs
        .slice(-60)
        .map((l) => JSON.stringify(l))
        .join('\n'),
    ),
  );
  const accounts = [await insertAccount(p.sql, 'alpha'), await insertAccount(p.sql, 'bravo')];
  await eventually(() => accounts.every((a) => p.sink.changesOf(a).length === 1), 20_000, 'both accounts delivered');
  const names = new Map(accounts.map((a) => [a, [] as string[]]));

  let down = true;
  p.sink.behaviour = () => (down ? 503 : 200);
  const port = Number(new URL(p.sink.url).port);
  const started = Date.now();
  let writing = true;
  const writer = (async () => {
    for (let i = 0; writing; i++) {
      const a = accounts[i % 2]!;
      names.get(a)!.push(...(await insertActors(p.sql, a, `o${i}`, 5)));
      await sleep(400);
    }
  })();
  writer.catch(() => {});
  onTestFinished(() => {
    writing = false;
  });

  const samples: Sample[] = [];
  let refused = false;
  while (Date.now() - started < OUTAGE_MS) {
    // Second half: nothing listens at all.
    if (!refused && Date.now() - started > OUTAGE_MS / 2) {
      await p.sink.stop();
      refused = true;
    }
    const response = await r.get('/healthz');
    const health = JSON.parse(response.text) as { status: string; healthy: boolean };
    samples.push({
      at: Date.now(),
      sessions: await r.metric('edgeplane_replicator_sessions_total'),
      paused: await r.metric('edgeplane_replicator_paused'),
      status: health.status,
      healthy: health.healthy,
      httpStatus: response.status,
      confirmed: await p.confirmedFlush(),
      wal: await p.currentWal(),
    });
    await sleep(5_000);
  }
  const during = p.sink.log.filter((x) => x.at >= started).length;
  writing = false;
  await writer;
  const lastCommit = await p.currentWal();

  // One session all along, never paused, healthy and lagging (after the first retries).
  expect(samples.length).toBeGreaterThan(50);
  expect(new Set(samples.map((s) => s.sessions))).toEqual(new Set([1]));
  expect(samples.filter((s) => s.paused !== 0)).toEqual([]);
  expect(samples.filter((s) => !s.healthy || s.httpStatus !== 200)).toEqual([]);
  expect(samples.slice(1).filter((s) => s.status !== 'lagging')).toEqual([]);
  // The slot keeps being confirmed: each sample's position is confirmed by the one 10 s later.
  for (let i = 0; i + 2 < samples.length; i++) expect(samples[i + 2]!.confirmed, `sample ${i}`).toBeGreaterThanOrEqual(samples[i]!.wal);
  const reconnects = r.logs.filter((l) => /reconnect/i.test(String(l.msg)) || l.msg === 'backpressure: reading paused');
  expect(reconnects).toEqual([]);
  expect(r.logs.filter((l) => l.msg === 'streaming')).toHaveLength(1);
  // It kept trying, with backoff, and got refused or found nobody.
  expect(during).toBeGreaterThan(20);
  const networkFailures = r.logs.filter((l) => l.msg === 'delivery failed; retrying this account with backoff' && l.reason === 'network');
  expect(networkFailures.length).toBeGreaterThan(0);

  // The edge is back: everything, in order, for both accounts.
  down = false;
  await p.sink.start(port);
  for (const a of accounts) {
    const expected = names.get(a)!;
    expect(expected.length).toBeGreaterThan(1000);
    await eventually(() => firstDeliveries([...p.sink.changesOf(a)]).length >= expected.length + 1, 90_000, `everything for ${a}`);
    const firsts = firstDeliveries([...p.sink.changesOf(a)]);
    expect(firsts.slice(1).map((c) => c.data?.name)).toEqual(expected);
    expect(isSortedByPosition(firsts)).toBe(true);
  }
  expect(await p.confirmedFlush()).toBeGreaterThanOrEqual(lastCommit);
  await eventually(async () => (await r.health()).status === 'ok', 20_000, '/healthz ok again');
  expect(await r.metric('edgeplane_replicator_sessions_total')).toBe(1);
});
