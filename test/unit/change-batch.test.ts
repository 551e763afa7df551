import { describe, expect, it } from 'vitest';
import { changeBatchSchema, parseChangeBatch, type Change } from '../../src/change.ts';
import { insert, remove, rows, update, uuid } from './support/builder.ts';

const account = uuid();
const actor = rows.actor(account);
const truncate: Change = { lsn: '0/10', seq: 0, xid: 1, table: 'actors', op: 'truncate', old: null, data: null, committed_at: '2026-11-22T20:00:00.000000Z' };
const good = [insert('actors', actor), update('actors', actor, { name: 'Bo' }), remove('actors', actor), truncate];
const one = good[0]!;

/** Batches changeBatchSchema accepts, and some it refuses, each a field or a shape away from a good one. */
const accepted: unknown[] = [
  { changes: [] },
  { changes: good },
  { epoch: 'e', changes: good },
  { epoch: 'x'.repeat(64), changes: [one] },
  { changes: [{ ...update('actors', actor, { name: 'Bo' }), old: null }] },
  // Unknown keys are dropped, at both levels.
  { changes: [{ ...one, extra: 1 }], also: true },
  { changes: [{ ...one, seq: 0, xid: Number.MAX_SAFE_INTEGER }] },
];
const refused: unknown[] = [
  null,
  [],
  'changes',
  {},
  { changes: {} },
  { epoch: '', changes: [] },
  { epoch: 'x'.repeat(65), changes: [] },
  { epoch: null, changes: [] },
  { epoch: 7, changes: [] },
  { changes: [null] },
  { changes: [[]] },
  { changes: [{ ...one, lsn: '16B3748' }] },
  { changes: [{ ...one, lsn: 1 }] },
  { changes: [{ ...one, seq: -1 }] },
  { changes: [{ ...one, seq: 1.5 }] },
  { changes: [{ ...one, xid: '7' }] },
  { changes: [{ ...one, xid: Number.MAX_SAFE_INTEGER + 1 }] },
  { changes: [{ ...one, table: 'change_logs' }] },
  { changes: [{ ...one, table: 'toString' }] },
  { changes: [{ ...one, committed_at: null }] },
  { changes: [{ ...one, op: 'upsert' }] },
  { changes: [{ ...one, old: {} }] },
  { changes: [{ ...one, data: null }] },
  { changes: [{ ...one, data: [] }] },
  { changes: [{ ...one, data: undefined }] },
  { changes: [{ ...good[1]!, old: [] }] },
  { changes: [{ ...good[2]!, old: null }] },
  { changes: [{ ...good[2]!, data: {} }] },
  { changes: [{ ...truncate, old: {} }] },
  { changes: [{ ...truncate, data: {} }] },
  { changes: [one, { ...one, seq: 'a' }] },
];

describe('parseChangeBatch (the changes route fast path)', () => {
  it('accepts what changeBatchSchema accepts, with the same result', () => {
    for (const raw of accepted) {
      const zod = changeBatchSchema.safeParse(raw);
      expect(zod.success, JSON.stringify(raw)).toBe(true);
      expect(parseChangeBatch(raw)).toStrictEqual(zod.data);
    }
  });

  it('refuses what changeBatchSchema refuses', () => {
    for (const raw of refused) {
      expect(changeBatchSchema.safeParse(raw).success, JSON.stringify(raw)).toBe(false);
      expect(parseChangeBatch(raw), JSON.stringify(raw)).toBeUndefined();
    }
  });
});
