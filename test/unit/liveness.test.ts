import { describe, expect, it } from 'vitest';
import { livenessAction, livenessTimings } from '../../replicator/stream/liveness.ts';
import { classifyStatus } from '../../replicator/deliver/worker-response.ts';
import { backoffDelay } from '../../replicator/retry.ts';

describe('liveness', () => {
  it('sends status updates well before wal_sender_timeout and gives up after twice it', () => {
    expect(livenessTimings(60_000, 10_000, 0)).toEqual({ statusIntervalMs: 10_000, timeoutMs: 120_000 });
    expect(livenessTimings(6_000, 10_000, 0)).toEqual({ statusIntervalMs: 2_000, timeoutMs: 12_000 });
    expect(livenessTimings(0, 10_000, 0).timeoutMs).toBe(120_000);
    expect(livenessTimings(60_000, 10_000, 5_000).timeoutMs).toBe(5_000);
  });

  it('pings a silent server, reports status on a talking one, reconnects on a dead one', () => {
    const t = { statusIntervalMs: 10_000, timeoutMs: 120_000 };
    expect(livenessAction(5_000, 4_000, 0, t)).toBe('none');
    expect(livenessAction(10_000, 9_000, 0, t)).toBe('status');
    expect(livenessAction(30_000, 5_000, 15_000, t)).toBe('ping');
    expect(livenessAction(130_000, 5_000, 125_000, t)).toBe('reconnect');
  });
});

describe('retry policy', () => {
  it('backs off exponentially with jitter, capped', () => {
    expect(backoffDelay(0, 100, 30_000, () => 0)).toBe(50);
    expect(backoffDelay(0, 100, 30_000, () => 1)).toBe(100);
    expect(backoffDelay(3, 100, 30_000, () => 1)).toBe(800);
    expect(backoffDelay(40, 100, 30_000, () => 1)).toBe(30_000);
    expect(backoffDelay(40, 100, 30_000, () => 0)).toBe(15_000);
  });

  it('classifies Worker answers: retry 5xx, 408, 409, 429; other 4xx are bugs (still retried)', () => {
    expect(classifyStatus(200)).toBe('delivered');
    expect(classifyStatus(204)).toBe('delivered');
    for (const s of [500, 502, 503, 408, 409, 429]) expect(classifyStatus(s)).toBe('transient');
    for (const s of [400, 401, 403, 404, 413]) expect(classifyStatus(s)).toBe('permanent');
  });
});
