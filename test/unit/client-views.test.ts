import { describe, expect, it } from 'vitest';
import { diffClient, initClient, ViewRenderer, type ClientConnection, type SentViews } from '../../src/access/client-views.ts';
import type { ActorId, ClientId, ResourceId } from '../../src/ids.ts';
import { insert, rows, stateOf, update, uuid } from './support/builder.ts';

class MemoryViews implements SentViews {
  readonly map = new Map<number, Map<ResourceId, number>>();
  of(conn: number) {
    return this.map.get(conn) ?? new Map();
  }
  set(conn: number, id: ResourceId, digest: number) {
    if (!this.map.has(conn)) this.map.set(conn, new Map());
    this.map.get(conn)!.set(id, digest);
  }
  delete(conn: number, id: ResourceId) {
    this.map.get(conn)?.delete(id);
  }
}

describe('client view diffing (docs/architecture.md#7-diffs-not-re-sends)', () => {
  it('sends a view once, again only when it changes, and a delete when it goes', () => {
    const account = uuid();
    const actor = rows.actor(account);
    const group = rows.group(account);
    const site = rows.site(account);
    const r = rows.resource(account);
    const policy = rows.policy(account, group.id, r.id);
    const client = rows.client(account, actor.id);
    const base = [
      insert('accounts', rows.account(account)),
      insert('actors', actor),
      insert('actor_groups', group),
      insert('actor_group_memberships', rows.membership(account, actor.id, group.id)),
      insert('sites', site),
      insert('resources', r),
      insert('resource_connections', rows.connection(account, r.id, site.id)),
      insert('policies', policy),
      insert('clients', client),
    ];
    const conn: ClientConnection = { conn: 1, clientId: client.id as ClientId, actorId: actor.id as ActorId, version: '1.4.2', remoteIp: null, country: null };
    const views = new MemoryViews();
    const state = stateOf(account, base);
    const init = JSON.parse(initClient(state, views, new ViewRenderer(state), conn, 0));
    expect(init.event).toBe('init');
    expect(init.payload.resources.map((x: { id: string }) => x.id)).toEqual([r.id]);
    const all = 'all' as const;
    expect(diffClient(state, views, new ViewRenderer(state), conn, all, 0)).toEqual([]);

    const renamed = stateOf(account, [...base, update('resources', r, { name: 'Wiki 2' })]);
    const frames = diffClient(renamed, views, new ViewRenderer(renamed), conn, new Set([r.id as ResourceId]), 0);
    expect(frames.map((f) => JSON.parse(f))).toEqual([{ event: 'resource_created_or_updated', payload: expect.objectContaining({ id: r.id, name: 'Wiki 2' }) }]);
    expect(diffClient(renamed, views, new ViewRenderer(renamed), conn, all, 0)).toEqual([]);

    const described = stateOf(account, [...base, update('resources', r, { name: 'Wiki 2' }), update('policies', policy, { description: 'why' })]);
    expect(diffClient(described, views, new ViewRenderer(described), conn, all, 0)).toEqual([]);

    const gone = stateOf(account, [...base, update('policies', policy, { deleted_at: 'x' })]);
    expect(diffClient(gone, views, new ViewRenderer(gone), conn, all, 0)).toEqual([`{"event":"resource_deleted","payload":{"id":"${r.id as string}"}}`]);
    expect(views.of(1).size).toBe(0);
  });
});
