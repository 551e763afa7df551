import { describe, expect, it } from 'vitest';
import { decideFlow, earliest } from '../../src/flows/authorize.ts';
import type { FlowRecord } from '../../src/flows/flow-index.ts';
import { noticesForPair, reviewFlow } from '../../src/flows/review.ts';
import type { ActorId, ClientId, FlowId, GatewayId, PolicyId, ResourceId, SiteId, TokenId } from '../../src/ids.ts';
import type { TokenRecord } from '../../src/records.ts';
import { AccountState } from '../../src/access/account-state.ts';
import { applyChange } from '../../src/access/apply-change.ts';
import { Dirty } from '../../src/access/dirty.ts';
import type { AccountId } from '../../src/ids.ts';
import type { Row } from '../../src/json.ts';
import { insert, rows, stateOf, update, uuid } from './support/builder.ts';

const flow = (over: Partial<FlowRecord>): FlowRecord => ({
  id: uuid() as FlowId,
  clientId: 'c' as ClientId,
  gatewayId: 'g1' as GatewayId,
  resourceId: 'r' as ResourceId,
  policyId: 'p1' as PolicyId,
  tokenId: 't' as TokenId,
  expiresAt: null,
  remoteIp: null,
  country: null,
  createdAt: 0,
  ...over,
});

describe('what gateways are told about a pair (issue 4)', () => {
  it('rejects once when no flow of the pair is left on a gateway', () => {
    const a = flow({});
    const b = flow({});
    expect(noticesForPair([a, b], [])).toEqual([{ gatewayId: 'g1', event: 'reject_access', clientId: 'c', resourceId: 'r' }]);
  });

  it('sends the remaining expiry when other live flows of the pair remain', () => {
    const a = flow({ expiresAt: 1000 });
    const b = flow({ expiresAt: 5000 });
    expect(noticesForPair([a, b], [b])).toEqual([{ gatewayId: 'g1', event: 'access_authorization_expiry_updated', clientId: 'c', resourceId: 'r', expiresAt: 5000 }]);
    expect(noticesForPair([a, b], [a, { ...b, expiresAt: null }])).toEqual([
      { gatewayId: 'g1', event: 'access_authorization_expiry_updated', clientId: 'c', resourceId: 'r', expiresAt: null },
    ]);
  });

  it('tells a re-authorization even when the expiry is the same, and nothing when nothing changed', () => {
    const a = flow({});
    expect(noticesForPair([a], [{ ...a, policyId: 'p2' as PolicyId }])).toHaveLength(1);
    expect(noticesForPair([a], [a])).toEqual([]);
  });

  it('tells each gateway about its own flows only', () => {
    const a = flow({ gatewayId: 'g1' as GatewayId });
    const b = flow({ gatewayId: 'g2' as GatewayId });
    expect(noticesForPair([a, b], [b])).toEqual([{ gatewayId: 'g1', event: 'reject_access', clientId: 'c', resourceId: 'r' }]);
  });

  it('earliest ignores missing ends', () => {
    expect(earliest(null, 5, 3, null)).toBe(3);
    expect(earliest(null, null)).toBeNull();
  });
});

describe('reviewing and deciding flows against the state', () => {
  const account = uuid();
  const actor = rows.actor(account);
  const group = rows.group(account);
  const site = rows.site(account);
  const resource = rows.resource(account);
  const p1 = rows.policy(account, group.id, resource.id);
  const client = rows.client(account, actor.id);
  const gateway = rows.gateway(account, site.id);
  const token = rows.token(account, 'client', actor.id);
  const base = [
    insert('accounts', rows.account(account)),
    insert('actors', actor),
    insert('actor_groups', group),
    insert('actor_group_memberships', rows.membership(account, actor.id, group.id)),
    insert('sites', site),
    insert('resources', resource),
    insert('resource_connections', rows.connection(account, resource.id, site.id)),
    insert('policies', p1),
    insert('clients', client),
    insert('gateways', gateway),
    insert('tokens', token),
  ];
  const live = flow({
    clientId: client.id as ClientId,
    gatewayId: gateway.id as GatewayId,
    resourceId: resource.id as ResourceId,
    policyId: p1.id as PolicyId,
    tokenId: token.id as TokenId,
  });

  it('keeps, re-authorizes, revokes or drops', () => {
    expect(reviewFlow(stateOf(account, base), live, 0, false)).toEqual({ kind: 'keep' });
    expect(reviewFlow(stateOf(account, base), live, 0, true)).toEqual({ kind: 'revoke' });
    const p2 = rows.policy(account, group.id, resource.id);
    const moved = stateOf(account, [...base, insert('policies', p2), update('policies', p1, { deleted_at: 'x' })]);
    expect(reviewFlow(moved, live, 0, false)).toEqual({ kind: 'reauthorize', flow: { ...live, policyId: p2.id } });
    expect(reviewFlow(stateOf(account, [...base, update('policies', p1, { disabled_at: 'x' })]), live, 0, false)).toEqual({ kind: 'revoke' });
    expect(reviewFlow(stateOf(account, [...base, update('gateways', gateway, { deleted_at: 'x' })]), live, 0, false)).toEqual({ kind: 'drop' });
    expect(reviewFlow(stateOf(account, base), { ...live, expiresAt: 10 }, 20, false)).toEqual({ kind: 'reauthorize', flow: { ...live, expiresAt: null } });
  });

  it('re-authorizes to the longest-lasting conforming policy, keeping its own on a tie', () => {
    // Monday 2026-11-23, 10:00 UTC: two windows are open, one until 11:00, one until 15:00.
    const now = Date.parse('2026-11-23T10:00:00Z');
    const window = (ranges: string) => ({ conditions: [{ property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: [`M/${ranges}/UTC`] }] });
    const short = rows.policy(account, group.id, resource.id, window('09:00-11:00'));
    const long = rows.policy(account, group.id, resource.id, window('09:00-15:00'));
    const withPolicies = (...policies: (typeof p1)[]) => stateOf(account, [...base.filter((c) => c.table !== 'policies'), ...policies.map((p) => insert('policies', p))]);
    const endOf = (state: ReturnType<typeof stateOf>, policy: typeof p1) => {
      const f = reviewFlow(state, { ...live, policyId: 'gone' as PolicyId }, now, false);
      expect(f).toMatchObject({ kind: 'reauthorize', flow: { policyId: policy.id } });
      return (f as { flow: FlowRecord }).flow.expiresAt!;
    };
    const shortEnd = endOf(withPolicies(short), short);
    const longEnd = endOf(withPolicies(long), long);
    expect(longEnd).toBeGreaterThan(shortEnd);
    const both = withPolicies(short, long);
    // A flow made under the short window moves to the long one, with its end.
    expect(reviewFlow(both, { ...live, policyId: short.id as PolicyId, expiresAt: shortEnd }, now, false)).toEqual({
      kind: 'reauthorize',
      flow: { ...live, policyId: long.id, expiresAt: longEnd },
    });
    // One made under the long one stays.
    expect(reviewFlow(both, { ...live, policyId: long.id as PolicyId, expiresAt: longEnd }, now, false)).toEqual({ kind: 'keep' });
    // A policy without an end outlasts both.
    const forever = withPolicies(short, long, p1);
    expect(reviewFlow(forever, { ...live, policyId: long.id as PolicyId, expiresAt: longEnd }, now, false)).toEqual({
      kind: 'reauthorize',
      flow: { ...live, policyId: p1.id, expiresAt: null },
    });
    // Ties keep the flow's own policy: two without an end, or ends the token's expiry caps.
    const p3 = rows.policy(account, group.id, resource.id);
    const twoForever = withPolicies(p3, p1);
    expect(reviewFlow(twoForever, live, now, false)).toEqual({ kind: 'keep' });
    expect(reviewFlow(twoForever, { ...live, policyId: p3.id as PolicyId }, now, false)).toEqual({ kind: 'keep' });
    const capped = stateOf(account, [
      ...base.filter((c) => c.table !== 'policies' && c.table !== 'tokens'),
      insert('policies', short),
      insert('policies', long),
      insert('tokens', { ...token, expires_at: new Date(now + 60_000).toISOString() }),
    ]);
    expect(reviewFlow(capped, { ...live, policyId: short.id as PolicyId, expiresAt: now + 60_000 }, now, false)).toEqual({ kind: 'keep' });
  });

  it('marks a filters change for resource_updated, an address, type or ip_stack change as breaking, and a rename as neither', () => {
    const marks = (patch: Partial<Row>) => {
      const state = new AccountState(account as AccountId);
      for (const c of base) applyChange(state, c, new Dirty());
      const dirty = new Dirty();
      applyChange(state, update('resources', resource, patch), dirty);
      return { reshaped: [...dirty.reshaped], breaking: [...dirty.breaking], resources: [...dirty.resources] };
    };
    expect(marks({ name: 'Renamed' })).toEqual({ reshaped: [], breaking: [], resources: [resource.id] });
    expect(marks({ address_description: 'new words' })).toEqual({ reshaped: [], breaking: [], resources: [resource.id] });
    expect(marks({ filters: [{ protocol: 'udp', ports: ['53'] }] })).toEqual({ reshaped: [resource.id], breaking: [], resources: [resource.id] });
    expect(marks({ name: 'Renamed', filters: [{ protocol: 'tcp', ports: ['22'] }] })).toMatchObject({ reshaped: [resource.id] });
    for (const patch of [{ address: 'new.example.com' }, { type: 'ip', address: '10.0.0.1' }, { ip_stack: 'ipv4_only' }]) {
      expect(marks(patch)).toEqual({ reshaped: [], breaking: [resource.id], resources: [resource.id] });
    }
  });

  it('decides create_flow: offline without a gateway of a connected site, the least loaded one otherwise', () => {
    const state = stateOf(account, base);
    const ctx = { clientId: client.id as ClientId, actorId: actor.id as ActorId, version: { major: 1, minor: 4, patch: 2 }, remoteIp: null, country: null };
    const tokenRecord = state.tokens.get(token.id as TokenId) as TokenRecord;
    expect(decideFlow(state, ctx, tokenRecord, resource.id as ResourceId, [], [], 0)).toEqual({ ok: false, reason: 'offline' });
    const gw = (id: string, load: number) => ({ id: id as GatewayId, siteId: site.id as SiteId, version: { major: 1, minor: 4, patch: 0 }, load });
    const decided = decideFlow(state, ctx, tokenRecord, resource.id as ResourceId, [gw('busy', 5), gw('idle', 1)], [], 0);
    expect(decided).toMatchObject({ ok: true, gatewayId: 'idle', grant: { policyId: p1.id, until: null }, expiresAt: null });
    expect(decideFlow(state, ctx, tokenRecord, resource.id as ResourceId, [gw('busy', 5), gw('idle', 1)], ['busy' as GatewayId], 0)).toMatchObject({ gatewayId: 'busy' });
    expect(decideFlow(state, ctx, { ...tokenRecord, expiresAt: 99 }, resource.id as ResourceId, [gw('idle', 0)], [], 0)).toMatchObject({ expiresAt: 99 });
  });
});
