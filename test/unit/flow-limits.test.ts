import { describe, expect, it } from 'vitest';
import { displace } from '../../src/flows/displace.ts';
import { FlowIndex, type FlowRecord } from '../../src/flows/flow-index.ts';
import { FlowLimitsError, readFlowLimits } from '../../src/flows/limits.ts';
import { FlowRateLimiter } from '../../src/flows/rate-limit.ts';
import type { ClientId, FlowId, GatewayId, PolicyId, ResourceId, TokenId } from '../../src/ids.ts';
import { uuid } from './support/builder.ts';

const flow = (over: Partial<FlowRecord>): FlowRecord => ({
  id: uuid() as FlowId,
  clientId: 'c' as ClientId,
  gatewayId: 'g1' as GatewayId,
  resourceId: 'r' as ResourceId,
  policyId: 'p' as PolicyId,
  tokenId: 't' as TokenId,
  expiresAt: null,
  remoteIp: null,
  country: null,
  createdAt: 0,
  ...over,
});

describe('flow limits (docs/protocol.md#limits)', () => {
  it('reads FLOW_* variables with defaults, and names an invalid one with what it means', () => {
    expect(readFlowLimits({})).toEqual({ ratePerSecond: 10, burst: 100, maxPerClient: 1000, logBacklogMax: 100_000, retentionMs: 30 * 86_400_000 });
    expect(readFlowLimits({ FLOW_RATE_PER_SECOND: '0', FLOW_BURST: 5, FLOW_MAX_PER_CLIENT: '', FLOW_RETENTION_DAYS: '0' })).toMatchObject({
      ratePerSecond: 0,
      burst: 5,
      maxPerClient: 1000,
      retentionMs: null,
    });
    expect(() => readFlowLimits({ FLOW_BURST: 'many' })).toThrow(FlowLimitsError);
    expect(() => readFlowLimits({ FLOW_BURST: '0' })).toThrow(/FLOW_BURST="0".*bucket size/);
    expect(() => readFlowLimits({ FLOW_RATE_PER_SECOND: '-1' })).toThrow(/FLOW_RATE_PER_SECOND/);
  });

  it('a token bucket per connection: a burst, then the rate, exactly; connections apart; rate 0 is no limit', () => {
    const limiter = new FlowRateLimiter(2, 3);
    const t0 = 1_000_000;
    const taken = (conn: number, at: number) => limiter.take(conn, at).ok;
    expect([1, 2, 3, 4].map(() => taken(1, t0))).toEqual([true, true, true, false]);
    expect(limiter.take(1, t0)).toEqual({ ok: false, retryInMs: 500, debt: 2 });
    expect(taken(2, t0)).toBe(true);
    expect(taken(1, t0 + 499)).toBe(false);
    expect(taken(1, t0 + 500)).toBe(true);
    expect(taken(1, t0 + 500)).toBe(false);
    // Refused requests are a debt the rate forgives: sending on regardless grows it.
    const greedy = new FlowRateLimiter(2, 3);
    let debt = 0;
    for (let i = 0; i < 100; i++) {
      const r = greedy.take(7, t0 + i * 10); // 100 a second against 2
      if (!r.ok) debt = r.debt;
    }
    expect(debt).toBeGreaterThan(90);
    // Idle long enough: a full bucket again, never more than the burst.
    expect([1, 2, 3, 4].map(() => taken(1, t0 + 60_000))).toEqual([true, true, true, false]);
    limiter.forget(1);
    expect(taken(1, t0 + 60_000)).toBe(true);
    const off = new FlowRateLimiter(0, 1);
    for (let i = 0; i < 10_000; i++) expect(off.take(1, t0).ok).toBe(true);
    expect(off.size).toBe(0);
  });

  it('holds buckets only for connections that have not refilled', () => {
    const limiter = new FlowRateLimiter(10, 10);
    for (let conn = 0; conn < 100_000; conn++) limiter.take(conn, conn); // one each, 1 ms apart
    // A bucket refills in 1 s: about 1,000 connections can still hold one, and the sweep keeps it near that.
    expect(limiter.size).toBeLessThanOrEqual(2_048 + 1);
  });

  it("replaces the pair's flow on the chosen gateway only; at the cap, evicts the client's oldest, telling its gateway", () => {
    const flows = new FlowIndex();
    const onG1 = flow({ resourceId: 'r' as ResourceId, gatewayId: 'g1' as GatewayId, createdAt: 1 });
    const onG2 = flow({ resourceId: 'r' as ResourceId, gatewayId: 'g2' as GatewayId, createdAt: 2 });
    const other = flow({ resourceId: 'r2' as ResourceId, gatewayId: 'g2' as GatewayId, createdAt: 3 });
    const otherClient = flow({ clientId: 'c2' as ClientId, createdAt: 0 });
    for (const f of [onG1, onG2, other, otherClient]) flows.put(f);

    const again = flow({ resourceId: 'r' as ResourceId, gatewayId: 'g1' as GatewayId, createdAt: 4 });
    expect(displace(flows, again, 10)).toEqual({ replaced: [onG1], evicted: [], notices: [] });
    // At a cap of 3 the replacement alone keeps the client at 3.
    expect(displace(flows, again, 3)).toEqual({ replaced: [onG1], evicted: [], notices: [] });
    // A new pair at the cap: the oldest flow goes, and the pair has no flow left on g1.
    const fresh = flow({ resourceId: 'r3' as ResourceId, gatewayId: 'g1' as GatewayId, createdAt: 4 });
    expect(displace(flows, fresh, 3)).toEqual({
      replaced: [],
      evicted: [onG1],
      notices: [{ gatewayId: 'g1', event: 'reject_access', clientId: 'c', resourceId: 'r' }],
    });
    // A lower cap evicts as many as it takes, oldest first; another client's flows are never touched.
    const d = displace(flows, fresh, 1);
    expect(d.evicted).toEqual([onG1, onG2, other]);
    expect(d.notices).toHaveLength(3);
  });
});
