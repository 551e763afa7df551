import { describe, expect, it } from 'vitest';
import { accessGrants, candidateResources, grantsFor, longestGrant, mayAccess, viewFor, type ClientContext } from '../../src/access/access.ts';
import type { ActorId, ClientId, PolicyId, ResourceId } from '../../src/ids.ts';
import { insert, rows, stateOf, update, uuid } from './support/builder.ts';

const V = { major: 1, minor: 4, patch: 2 };

function world() {
  const account = uuid();
  const acc = rows.account(account);
  const actor = rows.actor(account);
  const group = rows.group(account);
  const site = rows.site(account);
  const resource = rows.resource(account);
  const policy = rows.policy(account, group.id, resource.id);
  const client = rows.client(account, actor.id);
  const base = [
    insert('accounts', acc),
    insert('actors', actor),
    insert('actor_groups', group),
    insert('actor_group_memberships', rows.membership(account, actor.id, group.id)),
    insert('sites', site),
    insert('resources', resource),
    insert('resource_connections', rows.connection(account, resource.id, site.id)),
    insert('policies', policy),
    insert('clients', client),
  ];
  const ctx: ClientContext = { clientId: client.id as ClientId, actorId: actor.id as ActorId, version: V, remoteIp: '10.0.0.1', country: 'DE' };
  return { account, acc, actor, group, site, resource, policy, client, base, ctx };
}

describe('access computation (docs/protocol.md#access-rule)', () => {
  it('grants through an enabled policy of a live group the actor is in, for a connected resource', () => {
    const w = world();
    const state = stateOf(w.account, w.base);
    expect(mayAccess(state, w.ctx, w.resource.id as ResourceId, 0)).toBe(true);
    expect(viewFor(state, w.ctx, w.resource.id as ResourceId, 0)).toEqual({
      id: w.resource.id,
      type: 'dns',
      name: 'Wiki',
      address: 'wiki.example.com',
      address_description: null,
      ip_stack: 'dual',
      filters: [],
      sites: [{ id: w.site.id, name: 'HQ' }],
    });
    expect(candidateResources(state, w.ctx.actorId)).toEqual(new Set([w.resource.id]));
  });

  it('denies when any clause fails', () => {
    const w = world();
    const cases = {
      'policy disabled': update('policies', w.policy, { disabled_at: 'x' }),
      'policy deleted': update('policies', w.policy, { deleted_at: 'x' }),
      'group deleted': update('actor_groups', w.group, { deleted_at: 'x' }),
      'resource deleted': update('resources', w.resource, { deleted_at: 'x' }),
      'site deleted': update('sites', w.site, { deleted_at: 'x' }),
      'actor disabled': update('actors', w.actor, { disabled_at: 'x' }),
      'account disabled': update('accounts', w.acc, { disabled_at: 'x' }),
      'client deleted': update('clients', w.client, { deleted_at: 'x' }),
      'conditions invalid': update('policies', w.policy, { conditions: [{ property: 'nope' }] }),
      'condition fails': update('policies', w.policy, { conditions: [{ property: 'remote_ip_location_region', operator: 'is_in', values: ['FR'] }] }),
      'internet hidden from 1.4': update('resources', w.resource, { type: 'internet', address: null }),
    };
    for (const [name, c] of Object.entries(cases)) {
      const state = stateOf(w.account, [...w.base, c]);
      const seen = viewFor(state, { ...w.ctx, version: name.startsWith('internet') ? { major: 1, minor: 2, patch: 0 } : V }, w.resource.id as ResourceId, 0);
      expect(seen, name).toBeNull();
    }
  });

  it('picks the grant that lasts longest, no end beating any end', () => {
    const grant = (policyId: string, until: number | null) => ({ policyId: policyId as PolicyId, until });
    expect(longestGrant([grant('a', 10), grant('b', 30), grant('c', 20)])?.policyId).toBe('b');
    expect(longestGrant([grant('a', 10), grant('b', null), grant('c', 20)])?.policyId).toBe('b');
    expect(longestGrant([])).toBeUndefined();
  });

  it('lists every policy that grants, with the end of its time window', () => {
    const w = world();
    const now = Date.UTC(2026, 10, 23, 12, 0, 0); // a Monday
    const window = { property: 'current_utc_datetime', operator: 'is_in_day_of_week_time_ranges', values: ['M/09:00-17:00/UTC'] };
    const second = rows.policy(w.account, w.group.id, w.resource.id, { conditions: [window] });
    const state = stateOf(w.account, [...w.base, insert('policies', second)]);
    const grants = grantsFor(state, w.ctx.actorId, w.resource.id as ResourceId, { remoteIp: null, country: null, verified: false, nowMs: now });
    expect(grants).toEqual(
      expect.arrayContaining([
        { policyId: w.policy.id, until: null },
        { policyId: second.id, until: Date.UTC(2026, 10, 23, 17, 0, 1) },
      ]),
    );
    expect(accessGrants(state, w.ctx, w.resource.id as ResourceId, now)).toHaveLength(2);
  });
});
