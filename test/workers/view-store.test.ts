import { env, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { ResourceId } from '../../src/ids.ts';
import { ViewStore } from '../../workers/account/view-store.ts';
import { seededRandom } from '../support/seeded-random.ts';

const resource = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` as ResourceId;

/** Every connection's views as plain objects, for comparison. */
function snapshot(store: ViewStore, conns: readonly number[]): Record<number, Record<string, number>> {
  return Object.fromEntries(conns.map((c) => [c, Object.fromEntries(store.of(c))]));
}

describe('ViewStore (the digests each connection was sent, docs/architecture.md#7-diffs-not-re-sends)', () => {
  it('writes gathered in a batch (multi-row statements, deletes, dropped connections) are what a fresh instance reads back', async () => {
    const stub = env.ACCOUNT.get(env.ACCOUNT.idFromName(`view-store-${crypto.randomUUID()}`));
    await runInDurableObject(stub, (_instance, state) => {
      const sql = state.storage.sql;
      const store = new ViewStore(sql);
      const conns = [1, 2, 3, 4];
      const random = seededRandom(7);
      // Outside a batch every write goes straight to SQLite.
      store.set(4, resource(1), 41);
      state.storage.transactionSync(() =>
        store.batch(() => {
          // 100 views for conn 1: more than one statement's worth of rows (33).
          for (let i = 0; i < 100; i++) store.set(1, resource(i), i);
          for (let i = 0; i < 40; i++) store.set(2, resource(i), 1000 + i);
          // Later writes of a pair win: overwritten, deleted, deleted then set again.
          for (let i = 0; i < 100; i += 3) store.set(1, resource(i), 5000 + i);
          for (let i = 1; i < 100; i += 7) store.delete(1, resource(i));
          store.delete(2, resource(5));
          store.set(2, resource(5), 7);
          store.delete(4, resource(1));
          for (let i = 0; i < 50; i++) store.set(3, resource(Math.floor(random() * 60)), i);
          // A connection dropped inside the batch takes its pending writes with it.
          store.drop(3);
          store.set(3, resource(99), 99);
        }),
      );
      const expected = snapshot(store, conns);
      expect(Object.keys(expected[1]!)).toHaveLength(100 - 15);
      expect(expected[2]![resource(5)]).toBe(7);
      expect(expected[3]).toEqual({ [resource(99)]: 99 });
      expect(expected[4]).toEqual({});
      expect(snapshot(new ViewStore(sql), conns)).toEqual(expected);
      // A revocation's deletes, more than one statement's worth (50), across connections.
      state.storage.transactionSync(() =>
        store.batch(() => {
          for (let i = 0; i < 100; i += 1) if (i % 3 !== 0) store.delete(1, resource(i));
          for (let i = 1; i < 40; i += 2) store.delete(2, resource(i));
        }),
      );
      const revoked = snapshot(store, conns);
      expect(Object.keys(revoked[1]!).sort()).toEqual(
        Object.keys(expected[1]!)
          .filter((id) => Number(id.slice(-12)) % 3 === 0)
          .sort(),
      );
      expect(Object.keys(revoked[2]!)).toHaveLength(20);
      expect(snapshot(new ViewStore(sql), conns)).toEqual(revoked);
      // A batch that fails stores nothing (the transaction rolls back).
      expect(() =>
        state.storage.transactionSync(() =>
          store.batch(() => {
            store.set(2, resource(0), -1);
            throw new Error('boom');
          }),
        ),
      ).toThrow('boom');
      expect(new ViewStore(sql).of(2).get(resource(0))).toBe(1000);
    });
  });
});
