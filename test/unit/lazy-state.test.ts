import { describe, expect, it } from 'vitest';
import { AccountState, type TableSource } from '../../src/access/account-state.ts';
import { accessGrants, type ClientContext } from '../../src/access/access.ts';
import type { AccountId, ActorId, ClientId, ResourceId, TokenId } from '../../src/ids.ts';
import type { Cached } from '../../src/records.ts';
import { DOMAIN_TABLES, type TableName } from '../../src/tables.ts';
import { insert, rows, stateOf, uuid } from './support/builder.ts';

/** A stored account: a state built eagerly, and a source that serves its tables and counts the reads. */
function stored() {
  const account = uuid();
  const actor = rows.actor(account);
  const group = rows.group(account);
  const site = rows.site(account);
  const resource = rows.resource(account);
  const client = rows.client(account, actor.id);
  const token = rows.token(account, 'client', actor.id, { expires_at: '2030-01-01T00:00:00Z' });
  const eager = stateOf(account, [
    insert('accounts', rows.account(account)),
    insert('actors', actor),
    insert('actor_groups', group),
    insert('actor_group_memberships', rows.membership(account, actor.id, group.id)),
    insert('sites', site),
    insert('resources', resource),
    insert('resource_connections', rows.connection(account, resource.id, site.id)),
    insert('policies', rows.policy(account, group.id, resource.id)),
    insert('clients', client),
    insert('tokens', token),
  ]);
  const reads: string[] = [];
  let failing: TableName | undefined;
  const source: TableSource = {
    records: (table) => {
      reads.push(table);
      if (table === failing) throw new Error(`read of ${table} failed (test)`);
      return eager.all(table);
    },
    earliestTokenExpiry: () => {
      reads.push('min(expires_at)');
      return eager.tokenExpiries.earliest();
    },
  };
  const ctx: ClientContext = { clientId: client.id as ClientId, actorId: actor.id as ActorId, version: { major: 1, minor: 4, patch: 2 }, remoteIp: null, country: null };
  return {
    eager,
    lazy: () => new AccountState(account as AccountId, source),
    reads,
    failOn: (table: TableName | undefined) => (failing = table),
    ctx,
    resourceId: resource.id as ResourceId,
    tokenId: token.id as TokenId,
  };
}

const loadedTables = (state: AccountState) => DOMAIN_TABLES.filter((t) => state.loaded(t));

describe('a state rebuilt after a wake reads each table when first needed (docs/architecture.md#after-a-wake)', () => {
  it('reads nothing up front, and one table once, at its first use', () => {
    const w = stored();
    const state = w.lazy();
    expect(loadedTables(state)).toEqual([]);
    expect(state.resources.has(w.resourceId)).toBe(true);
    expect(state.resources.size).toBe(1);
    expect(w.reads).toEqual(['resources']);
    expect(loadedTables(state)).toEqual(['resources']);
  });

  it("a standing client's grants read the access path only: no actor, client or token", () => {
    const w = stored();
    const state = w.lazy();
    expect(accessGrants(state, w.ctx, w.resourceId, 0, true)).toHaveLength(1);
    expect([...w.reads].sort()).toEqual(['actor_group_memberships', 'actor_groups', 'policies', 'resource_connections', 'resources', 'sites']);
    // Without standing, the client, its actor and the account are read too, and the answer is the same.
    expect(accessGrants(state, w.ctx, w.resourceId, 0)).toEqual(accessGrants(w.eager, w.ctx, w.resourceId, 0));
    expect(state.loaded('clients') && state.loaded('actors') && state.loaded('accounts')).toBe(true);
    expect(state.loaded('tokens')).toBe(false);
  });

  it('a record stored into an unread table joins what storage held (the table is read first)', () => {
    const w = stored();
    const state = w.lazy();
    const other = rows.actor(w.eager.accountId);
    state.put({ table: 'actors', record: { id: other.id as ActorId, disabled: false } });
    expect(w.reads).toEqual(['actors']);
    expect([...state.actors.keys()].sort()).toEqual([...w.eager.actors.keys(), other.id].sort());
    // Removing from an unread table reads it first too, so that its indexes stay whole.
    const membership = w.eager.all('actor_group_memberships')[0]!;
    state.remove(membership);
    expect(state.all('actor_group_memberships')).toEqual([]);
    expect(state.groupsOfActor.get(w.ctx.actorId).size).toBe(0);
  });

  it('a failed read leaves the table unread, and the next use reads it again', () => {
    const w = stored();
    const state = w.lazy();
    w.failOn('clients');
    expect(() => state.clients).toThrow('read of clients failed (test)');
    expect(state.loaded('clients')).toBe(false);
    w.failOn(undefined);
    expect(state.clients.size).toBe(1);
    expect(w.reads).toEqual(['clients', 'clients']);
  });

  it('the earliest token expiry comes from storage while the tokens are unread, from the heap once they are', () => {
    const w = stored();
    const state = w.lazy();
    const at = Date.parse('2030-01-01T00:00:00Z');
    expect(state.earliestTokenExpiry()).toBe(at);
    expect(state.earliestTokenExpiry()).toBe(at);
    expect(w.reads).toEqual(['min(expires_at)']);
    state.remove({ table: 'tokens', record: state.tokens.get(w.tokenId)! });
    expect(state.earliestTokenExpiry()).toBeNull();
    expect(w.reads).toEqual(['min(expires_at)', 'tokens']);
  });

  it('read whole, it holds what the eager state holds, table by table', () => {
    const w = stored();
    const state = w.lazy();
    const all = (s: AccountState): Cached[] => DOMAIN_TABLES.flatMap((t) => s.all(t));
    expect(all(state)).toEqual(all(w.eager));
    expect(state.clientsByKey).toEqual(w.eager.clientsByKey);
    expect(state.tokenExpiries.earliest()).toBe(w.eager.tokenExpiries.earliest());
  });
});
