import { describe, expect, it } from 'vitest';
import { PlacementLeases } from '../../workers/account/relay-leases.ts';

describe('placement leases (docs/architecture.md#relays)', () => {
  const a = 'account-a';
  /** A relay's count of n sockets, taken at n ms (later counts are larger in these tests). */
  const count = (n: number) => ({ n, at: n });

  it('places up to its connects on its relay, then ends once its last connect answered, reporting every placement it held and the last count', () => {
    const leases = new PlacementLeases();
    expect(leases.grant(a, 'EU', 'r0', 2, 10_000, 0)).toBeNull();
    const first = leases.take(a, 'EU', 1);
    const second = leases.take(a, 'EU', 2);
    expect([first.lease?.name, second.lease?.name]).toEqual(['r0', 'r0']);
    // Exhausted while one connect is in flight: nothing to take, nothing ended yet.
    expect(leases.take(a, 'EU', 3)).toEqual({ lease: null, ended: null });
    expect(leases.answered(first.lease!, count(2), false)).toBeNull();
    expect(leases.answered(second.lease!, count(3), false)).toEqual({ accountId: a, name: 'r0', sockets: count(3), connects: 2 });
    expect(leases.size).toBe(0);
  });

  it('a connect the relay refused (a bad token) gives its placement back', () => {
    const leases = new PlacementLeases();
    leases.grant(a, 'EU', 'r0', 1, 10_000, 0);
    const refused = leases.take(a, 'EU', 1).lease!;
    expect(leases.answered(refused, null, false)).toBeNull();
    const next = leases.take(a, 'EU', 2).lease!;
    expect(next.name).toBe('r0');
    expect(leases.answered(next, count(1), false)).toEqual({ accountId: a, name: 'r0', sockets: count(1), connects: 1 });
  });

  it('is per account and region', () => {
    const leases = new PlacementLeases();
    leases.grant(a, 'EU', 'r0', 5, 10_000, 0);
    expect(leases.take(a, 'NA', 1).lease).toBeNull();
    expect(leases.take('account-b', 'EU', 1).lease).toBeNull();
    expect(leases.take(a, 'EU', 1).lease?.name).toBe('r0');
  });

  it('ends past its time with its unused placements returned, and a relay that fails ends it at once', () => {
    const leases = new PlacementLeases();
    leases.grant(a, 'EU', 'r0', 5, 10_000, 0);
    const used = leases.take(a, 'EU', 1).lease!;
    expect(leases.answered(used, count(7), false)).toBeNull();
    expect(leases.take(a, 'EU', 10_000)).toEqual({ lease: null, ended: { accountId: a, name: 'r0', sockets: count(7), connects: 5 } });
    leases.grant(a, 'EU', 'r1', 5, 10_000, 20_000);
    const failed = leases.take(a, 'EU', 20_001).lease!;
    expect(leases.answered(failed, null, true)).toEqual({ accountId: a, name: 'r1', sockets: null, connects: 5 });
    expect(leases.take(a, 'EU', 20_002).lease).toBeNull();
  });

  it('a lease replaced while a connect of it is in flight ends once that connect answered, not before (its placements stay counted at the writer until its sockets are)', () => {
    const leases = new PlacementLeases();
    leases.grant(a, 'EU', 'r0', 2, 10_000, 0);
    const inFlight = leases.take(a, 'EU', 1).lease!;
    expect(leases.grant(a, 'EU', 'r1', 3, 10_000, 2)).toBeNull();
    const next = leases.take(a, 'EU', 3).lease!;
    expect(next.name).toBe('r1');
    expect(leases.answered(inFlight, count(4), false)).toEqual({ accountId: a, name: 'r0', sockets: count(4), connects: 2 });
    // A lease with nothing in flight ends at its replacement.
    expect(leases.answered(next, count(1), false)).toBeNull();
    expect(leases.grant(a, 'EU', 'r2', 1, 10_000, 4)).toEqual({ accountId: a, name: 'r1', sockets: count(1), connects: 3 });
  });

  it('lets one connect at a time ask the writer for an account and region; the others wait for its answer, and learn whether it brought a lease', async () => {
    const leases = new PlacementLeases();
    const first = leases.ask(a, 'EU', 0, 10_000);
    const second = leases.ask(a, 'EU', 0, 10_000);
    const elsewhere = leases.ask(a, 'NA', 0, 10_000);
    expect('done' in first && 'wait' in second && 'done' in elsewhere).toBe(true);
    if (!('done' in first) || !('wait' in second)) return;
    leases.grant(a, 'EU', 'r0', 3, 10_000, 0);
    first.done(true);
    expect(await second.wait).toBe(true);
    expect(leases.take(a, 'EU', 1).lease?.name).toBe('r0');
    // Answered: the next connect without a lease asks itself; a writer that granted none tells the waiters so.
    const third = leases.ask(a, 'EU', 0, 10_000);
    const fourth = leases.ask(a, 'EU', 0, 10_000);
    if (!('done' in third) || !('wait' in fourth)) throw new Error('expected one asker and one waiter');
    third.done(false);
    expect(await fourth.wait).toBe(false);
    // No lease came: for a while every connect asks at once, none waits for another (a small account the writer holds).
    const fifth = leases.ask(a, 'EU', 5_000, 10_000);
    const sixth = leases.ask(a, 'EU', 5_000, 10_000);
    expect('done' in fifth && 'done' in sixth).toBe(true);
    expect('wait' in leases.ask(a, 'EU', 10_001, 10_000)).toBe(false);
    expect('wait' in leases.ask(a, 'EU', 10_002, 10_000)).toBe(true);
  });

  it("keeps the relay's latest count, whatever order its connects answered in", () => {
    const leases = new PlacementLeases();
    leases.grant(a, 'EU', 'r0', 2, 10_000, 0);
    const one = leases.take(a, 'EU', 1).lease!;
    const two = leases.take(a, 'EU', 1).lease!;
    expect(leases.answered(one, { n: 2, at: 20 }, false)).toBeNull();
    expect(leases.answered(two, { n: 1, at: 10 }, false)).toEqual({ accountId: a, name: 'r0', sockets: { n: 2, at: 20 }, connects: 2 });
  });

  it('takes an ask answered once: the failure path that answers again (not leased) after a lease was granted changes nothing', () => {
    const leases = new PlacementLeases();
    const first = leases.ask(a, 'EU', 0, 10_000);
    if (!('done' in first)) throw new Error('expected to ask');
    first.done(false);
    // Unleased for a while: this connect asks without the others waiting, and brings a lease.
    const second = leases.ask(a, 'EU', 1, 10_000);
    if (!('done' in second)) throw new Error('expected to ask');
    second.done(true);
    second.done(false);
    leases.ask(a, 'EU', 2, 10_000);
    expect('wait' in leases.ask(a, 'EU', 3, 10_000)).toBe(true);
  });

  it('remembers a bounded number of leases: the oldest is dropped', () => {
    const leases = new PlacementLeases(2);
    for (const region of ['EU', 'NA', 'AS']) leases.grant(a, region, `r-${region}`, 1, 10_000, 0);
    expect(leases.size).toBe(2);
    expect(leases.take(a, 'EU', 1).lease).toBeNull();
    expect(leases.take(a, 'AS', 1).lease?.name).toBe('r-AS');
  });
});
