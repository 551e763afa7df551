import { describe, expect, it } from 'vitest';
import type { Row } from '../../src/json.ts';
import { basicSetup, TestAccount, type Basic } from './support/account.ts';
import { connect, type Device, type Frame } from './support/device.ts';
import { database } from './support/world.ts';
import { seededRandom } from '../support/seeded-random.ts';

const sql = database();

interface Tenant {
  account: TestAccount;
  tag: string;
  s: Basic;
  device: Device;
  resources: Row[];
  policies: Row[];
  frames: Frame[];
  ids: Set<string>;
}

async function tenant(tag: string): Promise<Tenant> {
  const account = await TestAccount.create(sql, tag);
  const s = await basicSetup(account, { name: `${tag} wiki` });
  await account.apply((t) => t.update('sites', { id: s.site.id }, { name: `${tag} site` }));
  const { device, init } = await connect('client', s.token);
  const ids = new Set([account.id, s.actor.id, s.group.id, s.site.id, s.resource.id, s.policy.id, s.tokenRow.id].map(String));
  return { account, tag, s, device, resources: [s.resource], policies: [s.policy], frames: [init], ids };
}

/** The client's view after replaying init and every diff since. */
function replay(frames: Frame[]): Map<string, string> {
  const view = new Map<string, string>();
  for (const f of frames) {
    if (f.event === 'init') for (const r of f.payload.resources as { id: string }[]) view.set(r.id, JSON.stringify(r));
    if (f.event === 'resource_created_or_updated') view.set(f.payload.id as string, JSON.stringify(f.payload));
    if (f.event === 'resource_deleted') view.delete(f.payload.id as string);
  }
  return view;
}

describe('tenant isolation (docs/architecture.md#6-isolation)', () => {
  it('randomized changes in two accounts never reach the other account, and each view converges', async () => {
    const seed = Date.now() % 100_000;
    const rnd = seededRandom(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const tenants = [await tenant('alpha'), await tenant('bravo')];
    for (let step = 0; step < 40; step++) {
      const t = pick(tenants);
      const op = pick(['create', 'rename', 'delete-policy', 'restore-policy', 'membership', 'site'] as const);
      await t.account.apply(async (tx) => {
        if (op === 'create') {
          const r = await t.account.resource(tx, { name: `${t.tag} r${step}`, address: `r${step}.${t.tag}.example.com` });
          await t.account.connection(tx, r.id, t.s.site.id);
          const p = await t.account.policy(tx, t.s.group.id, r.id);
          t.resources.push(r);
          t.policies.push(p);
          t.ids.add(String(r.id)).add(String(p.id));
        } else if (op === 'rename') {
          await tx.update('resources', { id: pick(t.resources).id }, { name: `${t.tag} renamed ${step}` });
        } else if (op === 'delete-policy') {
          await tx.update('policies', { id: pick(t.policies).id }, { deleted_at: new Date() });
        } else if (op === 'restore-policy') {
          await tx.update('policies', { id: pick(t.policies).id }, { deleted_at: null });
        } else if (op === 'membership') {
          const n = await tx.delete('actor_group_memberships', { actor_id: t.s.actor.id, group_id: t.s.group.id });
          if (n === 0) await t.account.membership(tx, t.s.actor.id, t.s.group.id);
        } else {
          await tx.update('sites', { id: t.s.site.id }, { name: `${t.tag} site ${step}` });
        }
      });
    }
    for (const t of tenants) t.frames.push(...(await t.device.drain()));
    for (const [i, t] of tenants.entries()) {
      const other = tenants[1 - i]!;
      const text = JSON.stringify(t.frames);
      for (const id of other.ids) expect(text.includes(id), `seed ${seed}: ${t.tag} saw ${other.tag}'s ${id}`).toBe(false);
      expect(text.includes(other.tag), `seed ${seed}: ${t.tag} saw ${other.tag}'s names`).toBe(false);
      // The diffs replayed equal what a fresh connection is sent: the views converge.
      const fresh = await connect('client', t.s.token);
      expect(replay(t.frames), `seed ${seed}`).toEqual(replay([fresh.init]));
      fresh.device.close();
      t.device.close();
    }
  });
});
