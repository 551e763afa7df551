import { describe, expect, it } from 'vitest';
import { accountRowAfter, firstForeignChange, type Change } from '../../src/change.ts';
import { insert, remove, rows, update, uuid } from './support/builder.ts';

describe('firstForeignChange (docs/architecture.md#6-isolation)', () => {
  const mine = uuid();
  const other = uuid();

  it("finds nothing in a batch of the account's own inserts, updates, deletes and its own accounts row", () => {
    const actor = rows.actor(mine);
    const batch = [insert('accounts', rows.account(mine)), insert('actors', actor), update('actors', actor, { name: 'Bo' }), remove('actors', actor)];
    expect(firstForeignChange(mine, batch)).toBeNull();
    expect(firstForeignChange(mine, [])).toBeNull();
  });

  it('names the first change of another account, by its new row or, for a delete, its old one', () => {
    const batch = [insert('actors', rows.actor(mine)), remove('sites', rows.site(other)), insert('sites', rows.site(other))];
    expect(firstForeignChange(mine, batch)).toEqual({ index: 1, accountId: other });
    expect(firstForeignChange(mine, [insert('accounts', rows.account(other))])).toEqual({ index: 0, accountId: other });
  });

  it("refuses a row that names no account, and lets a truncate (every account's) through", () => {
    const orphan = insert('actors', { ...rows.actor(mine), account_id: null });
    expect(firstForeignChange(mine, [orphan])).toEqual({ index: 0, accountId: null });
    const truncate: Change = { lsn: '0/10', seq: 0, xid: 1, table: 'actors', op: 'truncate', old: null, data: null, committed_at: '2026-11-22T20:00:00.000000Z' };
    expect(firstForeignChange(mine, [truncate])).toBeNull();
  });
});

describe('accountRowAfter (docs/protocol.md#account-directory)', () => {
  const id = uuid();
  const account = rows.account(id);

  it('tells what the last change of the accounts row leaves: live, deleted (hard or soft), or untouched', () => {
    expect(accountRowAfter([insert('actors', rows.actor(id))])).toBeUndefined();
    expect(accountRowAfter([insert('accounts', account), insert('actors', rows.actor(id))])).toBe(true);
    expect(accountRowAfter([insert('accounts', account), update('accounts', account, { name: 'renamed' })])).toBe(true);
    expect(accountRowAfter([insert('accounts', account), remove('accounts', account)])).toBe(false);
    expect(accountRowAfter([update('accounts', account, { deleted_at: '2026-12-02T10:00:00Z' })])).toBe(false);
    expect(accountRowAfter([remove('accounts', account), insert('accounts', account)])).toBe(true);
    const truncate: Change = { lsn: '0/10', seq: 0, xid: 1, table: 'accounts', op: 'truncate', old: null, data: null, committed_at: '2026-11-22T20:00:00.000000Z' };
    expect(accountRowAfter([insert('accounts', account), truncate])).toBe(false);
  });
});
