import { describe, expect, it } from 'vitest';
import { nextTimeBoundary } from '../../src/access/access.ts';
import { dueAt, expiredTokens, nextWake } from '../../src/alarm.ts';
import { FlowIndex, type FlowRecord } from '../../src/flows/flow-index.ts';
import type { ClientId, FlowId, GatewayId, PolicyId, ResourceId, TokenId } from '../../src/ids.ts';
import { insert, rows, stateOf, uuid } from './support/builder.ts';

const NOW = Date.UTC(2026, 10, 23, 12, 0, 0); // a Monday
const iso = (ms: number) => new Date(ms).toISOString();
const WINDOW_END = Date.UTC(2026, 10, 23, 17, 0, 1);

/** An account with one actor in one group: an untimed policy on `wiki`, a 09:00-17:00 UTC one on `db`. */
function world() {
  const account = uuid();
  const actor = rows.actor(account);
  const group = rows.group(account);
  const site = rows.site(account);
  const wiki = rows.resource(account);
  const db = rows.resource(account, { name: 'DB' });
  const window = { property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: ['M/09:00-17:00/UTC'] };
  const client = rows.client(account, actor.id);
  const expired = rows.token(account, 'client', actor.id, { expires_at: iso(NOW - 1) });
  const expiringNow = rows.token(account, 'client', actor.id, { expires_at: iso(NOW) });
  const later = rows.token(account, 'client', actor.id, { expires_at: iso(NOW + 3_600_000) });
  const forever = rows.token(account, 'client', actor.id);
  const changes = [
    insert('accounts', rows.account(account)),
    insert('actors', actor),
    insert('actor_groups', group),
    insert('actor_group_memberships', rows.membership(account, actor.id, group.id)),
    insert('sites', site),
    insert('resources', wiki),
    insert('resources', db),
    insert('resource_connections', rows.connection(account, wiki.id, site.id)),
    insert('resource_connections', rows.connection(account, db.id, site.id)),
    insert('policies', rows.policy(account, group.id, wiki.id)),
    insert('clients', client),
    insert('tokens', expired),
    insert('tokens', expiringNow),
    insert('tokens', later),
    insert('tokens', forever),
  ];
  return {
    actorId: actor.id as string,
    clientId: client.id as ClientId,
    wiki: wiki.id as ResourceId,
    db: db.id as ResourceId,
    tokens: { expired: expired.id, expiringNow: expiringNow.id, later: later.id, forever: forever.id },
    untimed: stateOf(account, changes),
    timed: stateOf(account, [...changes, insert('policies', rows.policy(account, group.id, db.id, { conditions: [window] }))]),
  };
}

function flows(...list: Partial<FlowRecord>[]): FlowIndex {
  const index = new FlowIndex();
  for (const over of list) {
    index.put({
      id: uuid() as FlowId,
      clientId: uuid() as ClientId,
      gatewayId: uuid() as GatewayId,
      resourceId: uuid() as ResourceId,
      policyId: uuid() as PolicyId,
      tokenId: uuid() as TokenId,
      expiresAt: null,
      remoteIp: null,
      country: null,
      createdAt: 0,
      ...over,
    });
  }
  return index;
}

describe('dueAt: what an alarm re-examines', () => {
  it("marks every timed policy's pairs, the tokens expired by now (inclusive) and nothing else", () => {
    const w = world();
    const dirty = dueAt(w.timed, new FlowIndex(), NOW);
    expect([...dirty.pairs]).toEqual([[w.actorId, new Set([w.db])]]);
    expect(dirty.tokens).toEqual(new Set([w.tokens.expired, w.tokens.expiringNow]));
    expect(dirty.clients.size + dirty.actors.size + dirty.resources.size).toBe(0);
  });

  it("marks an expired flow's pair through its client's actor, or the client when it is gone; live flows stay unmarked", () => {
    const w = world();
    const gone = uuid() as ClientId;
    const live = flows(
      { clientId: w.clientId, resourceId: w.wiki, expiresAt: NOW },
      { clientId: gone, resourceId: w.wiki, expiresAt: NOW - 5 },
      { clientId: w.clientId, resourceId: w.db, expiresAt: NOW + 1 },
      { clientId: w.clientId, resourceId: w.db, expiresAt: null },
    );
    const dirty = dueAt(w.untimed, live, NOW);
    expect([...dirty.pairs]).toEqual([[w.actorId, new Set([w.wiki])]]);
    expect(dirty.clients).toEqual(new Set([gone]));
  });

  it('looks at a timed policy only when its window opens or closes, or after it changed, however many tokens expire meanwhile', () => {
    const account = uuid();
    const group = rows.group(account);
    const site = rows.site(account);
    const db = rows.resource(account, { name: 'DB' });
    const window = { property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: ['M/09:00-17:00/UTC'] };
    const policy = rows.policy(account, group.id, db.id, { conditions: [window] });
    const actors = Array.from({ length: 1_000 }, () => rows.actor(account));
    const tokens = [1, 2, 3].map((h) => rows.token(account, 'client', actors[0]!.id, { expires_at: iso(NOW + h * 3_600_000) }));
    const state = stateOf(account, [
      insert('accounts', rows.account(account)),
      insert('actor_groups', group),
      insert('sites', site),
      insert('resources', db),
      insert('resource_connections', rows.connection(account, db.id, site.id)),
      insert('policies', policy),
      ...actors.flatMap((a) => [insert('actors', a), insert('actor_group_memberships', rows.membership(account, a.id, group.id))]),
      ...tokens.map((t) => insert('tokens', t)),
    ]);
    const pairs = (at: number) => [...dueAt(state, new FlowIndex(), at).pairs.values()].reduce((n, set) => n + set.size, 0);
    // Its boundary is unknown until an alarm settles it: the first one looks at its pairs, once.
    expect(nextTimeBoundary(state, NOW)).toBe(WINDOW_END);
    expect(pairs(NOW)).toBe(1_000);
    expect(nextTimeBoundary(state, NOW)).toBe(WINDOW_END);
    // Tokens expiring at 13:00, 14:00 and 15:00 wake the alarm: no window opened or closed, no pair is looked at.
    for (const [i, t] of tokens.entries()) {
      const dirty = dueAt(state, new FlowIndex(), NOW + (i + 1) * 3_600_000);
      expect(dirty.pairs.size).toBe(0);
      expect(dirty.tokens.has(t.id as TokenId)).toBe(true);
    }
    // At the window's end, its pairs again, and then not until the next boundary (Monday 09:00 a week later).
    expect(pairs(WINDOW_END)).toBe(1_000);
    expect(pairs(WINDOW_END + 60_000)).toBe(0);
    expect(nextTimeBoundary(state, WINDOW_END + 60_000)).toBe(Date.UTC(2026, 10, 30, 9, 0, 0));
    // Stored again (a change of the row): unsettled, so the next alarm looks at it whatever the time.
    state.put({ table: 'policies', record: { ...state.policies.get(policy.id as PolicyId)! } });
    expect(pairs(WINDOW_END + 120_000)).toBe(1_000);
    expect(pairs(WINDOW_END + 180_000)).toBe(0);
    // Disabled, it grants nothing and has no boundary; deleted, it is gone from the heap too.
    state.put({ table: 'policies', record: { ...state.policies.get(policy.id as PolicyId)!, disabled: true } });
    expect(nextTimeBoundary(state, WINDOW_END + 180_000)).toBeNull();
    state.remove({ table: 'policies', record: state.policies.get(policy.id as PolicyId)! });
    expect(state.timeBoundaries.size + state.unsettledTimed.size).toBe(0);
  });

  it('is empty when nothing is due', () => {
    const w = world();
    expect(dueAt(w.untimed, flows({ expiresAt: NOW + 1 }), NOW - 10).empty).toBe(true);
  });
});

describe('nextWake: when the alarm should fire next', () => {
  const idle = { devicesConnected: false, flowLogRetryAt: null };
  const connected = { devicesConnected: true, flowLogRetryAt: null };

  it('is null for an object with no devices, no flows and no pending flow log', () => {
    expect(nextWake(world().timed, new FlowIndex(), NOW, idle)).toBeNull();
  });

  it('with devices connected: at once while an expired token is cached, then the earlier of the next time-window boundary and the next token expiry', () => {
    const w = world();
    expect(nextWake(w.timed, new FlowIndex(), NOW, connected)).toBe(NOW - 1);
    // What the alarm does: the expired tokens leave the cache.
    for (const state of [w.timed, w.untimed]) for (const record of expiredTokens(state, NOW)) state.remove({ table: 'tokens', record });
    expect(nextWake(w.timed, new FlowIndex(), NOW, connected)).toBe(NOW + 3_600_000);
    for (const state of [w.timed, w.untimed]) for (const record of expiredTokens(state, NOW + 3_600_000)) state.remove({ table: 'tokens', record });
    expect(nextWake(w.timed, new FlowIndex(), NOW + 3_600_000, connected)).toBe(WINDOW_END);
    expect(nextWake(w.untimed, new FlowIndex(), NOW + 3_600_000, connected)).toBeNull();
  });

  it('with flows and no devices: flow expiries and time windows, not tokens', () => {
    const w = world();
    expect(nextWake(w.untimed, flows({ expiresAt: NOW + 10 }, { expiresAt: NOW + 5 }), NOW, idle)).toBe(NOW + 5);
    expect(nextWake(w.timed, flows({ expiresAt: null }), NOW, idle)).toBe(WINDOW_END);
    expect(nextWake(w.untimed, flows({ expiresAt: null }), NOW, idle)).toBeNull();
  });

  it('a retry of the flow log, or its retention, comes first when it is earliest', () => {
    const w = world();
    for (const record of expiredTokens(w.timed, NOW)) w.timed.remove({ table: 'tokens', record });
    expect(nextWake(w.timed, new FlowIndex(), NOW, { devicesConnected: true, flowLogRetryAt: NOW + 1_000 })).toBe(NOW + 1_000);
    expect(nextWake(w.untimed, new FlowIndex(), NOW, { devicesConnected: false, flowLogRetryAt: NOW + 1_000 })).toBe(NOW + 1_000);
    expect(nextWake(w.untimed, new FlowIndex(), NOW, { devicesConnected: false, flowLogRetryAt: null, flowRetentionAt: NOW + 7 })).toBe(NOW + 7);
  });
});

describe('expiredTokens: what leaves the cache', () => {
  it('lists the tokens expired by now (inclusive), and follows updates and removals', () => {
    const w = world();
    const ids = (list: { id: string }[]) => new Set(list.map((t) => t.id));
    expect(ids(expiredTokens(w.untimed, NOW))).toEqual(new Set([w.tokens.expired, w.tokens.expiringNow]));
    expect(ids(expiredTokens(w.untimed, NOW + 3_600_000))).toEqual(new Set([w.tokens.expired, w.tokens.expiringNow, w.tokens.later]));
    // An update of the row (a new expiry) moves it; a delete removes it; a token without an end never expires.
    const later = w.untimed.tokens.get(w.tokens.later as TokenId)!;
    w.untimed.put({ table: 'tokens', record: { ...later, expiresAt: NOW - 10 } });
    w.untimed.remove({ table: 'tokens', record: w.untimed.tokens.get(w.tokens.expired as TokenId)! });
    expect(ids(expiredTokens(w.untimed, NOW))).toEqual(new Set([w.tokens.expiringNow, w.tokens.later]));
    expect(ids(expiredTokens(w.untimed, Number.MAX_SAFE_INTEGER)).has(w.tokens.forever as string)).toBe(false);
  });
});
