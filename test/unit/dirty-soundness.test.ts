import { describe, expect, it } from 'vitest';
import { AccountState } from '../../src/access/account-state.ts';
import { accessGrants, type ClientContext } from '../../src/access/access.ts';
import { applyChange } from '../../src/access/apply-change.ts';
import { Dirty } from '../../src/access/dirty.ts';
import type { Change } from '../../src/change.ts';
import type { AccountId, ActorId, ClientId, ResourceId } from '../../src/ids.ts';
import type { Row } from '../../src/json.ts';
import type { TableName } from '../../src/tables.ts';
import { insert, remove, rows, update, uuid } from './support/builder.ts';
import { seededRandom } from '../support/seeded-random.ts';

/** The rows of a small random account, kept current as changes are generated. */
class Model {
  readonly rows = new Map<TableName, Row[]>();
  constructor(readonly account: string) {}
  list(t: TableName): Row[] {
    if (!this.rows.has(t)) this.rows.set(t, []);
    return this.rows.get(t)!;
  }
  live(t: TableName): Row[] {
    return this.list(t).filter((r) => r.deleted_at == null);
  }
  apply(c: Change): Change {
    const list = this.list(c.table);
    const key = (r: Row) => (c.table === 'resource_connections' ? `${r.resource_id as string}|${r.site_id as string}` : (r.id as string));
    const old = c.old ? list.findIndex((r) => key(r) === key(c.old!)) : -1;
    if (old >= 0) list.splice(old, 1);
    // A soft delete arrives as a delete of the old row; the model keeps the row, deleted.
    if (c.data) list.push(c.data);
    else if (c.op === 'delete' && c.old && 'deleted_at' in c.old) list.push({ ...c.old, deleted_at: 'x' });
    return c;
  }
}

const CONDITIONS = [[], [{ property: 'remote_ip_location_region', operator: 'is_in', values: ['DE'] }], [{ property: 'client_verified', operator: 'is', values: ['true'] }]];

function seedModel(rnd: () => number): { model: Model; changes: Change[] } {
  const account = uuid();
  const m = new Model(account);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const changes: Change[] = [m.apply(insert('accounts', rows.account(account)))];
  for (let i = 0; i < 4; i++) changes.push(m.apply(insert('actors', rows.actor(account))));
  for (let i = 0; i < 3; i++) changes.push(m.apply(insert('actor_groups', rows.group(account))));
  for (let i = 0; i < 2; i++) changes.push(m.apply(insert('sites', rows.site(account, { name: `S${i}` }))));
  for (let i = 0; i < 4; i++) changes.push(m.apply(insert('resources', rows.resource(account, { name: `R${i}` }))));
  for (const a of m.list('actors'))
    for (const g of m.list('actor_groups')) if (rnd() < 0.5) changes.push(m.apply(insert('actor_group_memberships', rows.membership(account, a.id, g.id))));
  for (const r of m.list('resources'))
    for (const s of m.list('sites')) if (rnd() < 0.6) changes.push(m.apply(insert('resource_connections', rows.connection(account, r.id, s.id))));
  for (let i = 0; i < 6; i++) {
    changes.push(m.apply(insert('policies', rows.policy(account, pick(m.list('actor_groups')).id, pick(m.list('resources')).id, { conditions: pick(CONDITIONS) }))));
  }
  for (const a of m.list('actors')) changes.push(m.apply(insert('clients', rows.client(account, a.id, { verified_at: rnd() < 0.5 ? 'x' : null }))));
  return { model: m, changes };
}

/** One random change to the model: any table, any kind of edit access depends on. */
function randomChange(m: Model, rnd: () => number): Change | null {
  const pick = <T>(xs: T[]) => (xs.length ? xs[Math.floor(rnd() * xs.length)]! : undefined);
  const a = m.account;
  switch (Math.floor(rnd() * 14)) {
    case 0: {
      const r = pick(m.live('actor_group_memberships'));
      return r ? m.apply(remove('actor_group_memberships', r)) : null;
    }
    case 1: {
      const x = pick(m.live('actors'));
      const g = pick(m.live('actor_groups'));
      return x && g && !m.list('actor_group_memberships').some((r) => r.actor_id === x.id && r.group_id === g.id)
        ? m.apply(insert('actor_group_memberships', rows.membership(a, x.id, g.id)))
        : null;
    }
    case 2: {
      const p = pick(m.live('policies'));
      const g = pick(m.live('actor_groups'));
      return p && g ? m.apply(update('policies', p, { actor_group_id: g.id })) : null;
    }
    case 3: {
      const p = pick(m.live('policies'));
      const r = pick(m.live('resources'));
      return p && r ? m.apply(update('policies', p, { resource_id: r.id })) : null;
    }
    case 4: {
      const p = pick(m.live('policies'));
      return p ? m.apply(update('policies', p, { disabled_at: p.disabled_at ? null : 'x' })) : null;
    }
    case 5: {
      const p = pick(m.list('policies'));
      return p ? m.apply(update('policies', p, { deleted_at: p.deleted_at ? null : 'x' })) : null;
    }
    case 6: {
      const p = pick(m.live('policies'));
      return p ? m.apply(update('policies', p, { conditions: pick(CONDITIONS)! })) : null;
    }
    case 7: {
      const g = pick(m.list('actor_groups'));
      return g ? m.apply(update('actor_groups', g, { deleted_at: g.deleted_at ? null : 'x' })) : null;
    }
    case 8: {
      const s = pick(m.list('sites'));
      return s ? m.apply(update('sites', s, rnd() < 0.5 ? { name: `S${uuid()}` } : { deleted_at: s.deleted_at ? null : 'x' })) : null;
    }
    case 9: {
      const r = pick(m.list('resources'));
      return r ? m.apply(update('resources', r, rnd() < 0.5 ? { name: `R${uuid()}` } : { deleted_at: r.deleted_at ? null : 'x' })) : null;
    }
    case 10: {
      const c = pick(m.live('resource_connections'));
      return c ? m.apply(remove('resource_connections', c)) : null;
    }
    case 11: {
      const r = pick(m.live('resources'));
      const s = pick(m.live('sites'));
      return r && s && !m.list('resource_connections').some((c) => c.resource_id === r.id && c.site_id === s.id)
        ? m.apply(insert('resource_connections', rows.connection(a, r.id, s.id)))
        : null;
    }
    case 12: {
      const c = pick(m.live('clients'));
      return c ? m.apply(update('clients', c, { verified_at: c.verified_at ? null : 'x' })) : null;
    }
    default: {
      const x = pick(m.list('actors'));
      return x ? m.apply(update('actors', x, { disabled_at: x.disabled_at ? null : 'x' })) : null;
    }
  }
}

/** Everything a client is shown: per resource, its view and the conditions it is granted under. */
function snapshotViews(state: AccountState, clients: ClientContext[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const ctx of clients) {
    for (const resourceId of state.resources.keys()) {
      const grants = accessGrants(state, ctx, resourceId, 0);
      if (grants.length === 0) continue;
      const conditions = [...new Set(grants.map((g) => JSON.stringify(state.policies.get(g.policyId)?.conditions)))].sort();
      out.set(
        `${ctx.clientId}|${resourceId}`,
        JSON.stringify([state.resources.get(resourceId), [...state.sitesOfResource.get(resourceId)].map((s) => state.sites.get(s)), conditions]),
      );
    }
  }
  return out;
}

describe('dirty marking is sound (docs/architecture.md#8-no-n1)', () => {
  it('marks every (client, resource) whose view or grant changes, over random batches', () => {
    const seed = Date.now() % 1_000_000;
    const rnd = seededRandom(seed);
    for (let round = 0; round < 300; round++) {
      const { model, changes } = seedModel(rnd);
      const state = new AccountState(model.account as AccountId);
      for (const c of changes) applyChange(state, c, new Dirty());
      const clients: ClientContext[] = model.list('clients').map((c) => ({
        clientId: c.id as ClientId,
        actorId: c.actor_id as ActorId,
        version: { major: 1, minor: 4, patch: 2 },
        remoteIp: null,
        country: rnd() < 0.5 ? 'DE' : 'FR',
      }));
      const before = snapshotViews(state, clients);
      const dirty = new Dirty();
      const batch: Change[] = [];
      for (let i = 1 + Math.floor(rnd() * 4); i > 0; i--) {
        const c = randomChange(model, rnd);
        if (c) batch.push(c);
      }
      for (const c of batch) applyChange(state, c, dirty);
      const after = snapshotViews(state, clients);
      for (const ctx of clients) {
        for (const resourceId of new Set([...state.resources.keys(), ...[...before.keys()].map((k) => k.split('|')[1] as ResourceId)])) {
          const key = `${ctx.clientId}|${resourceId}`;
          if (before.get(key) === after.get(key)) continue;
          const marked = dirty.resourcesFor(ctx.actorId, ctx.clientId);
          const covered = marked === 'all' || marked.has(resourceId);
          expect(covered, `seed ${seed} round ${round}: ${key} changed by ${JSON.stringify(batch.map((c) => [c.table, c.op]))} but was not marked`).toBe(true);
        }
      }
    }
  });
});
