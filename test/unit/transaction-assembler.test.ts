import { describe, expect, it } from 'vitest';
import type { PgoutputMessage, Relation } from '../../replicator/pgoutput/messages.ts';
import { rowBuilder } from '../../replicator/pgoutput/decoder.ts';
import { columnType } from '../../replicator/pgoutput/values.ts';
import { toChanges } from '../../replicator/assemble/routed-changes.ts';
import { TransactionAssembler, type SkippedRow } from '../../replicator/assemble/transaction-assembler.ts';
import { AssemblyError } from '../../replicator/errors.ts';
import { postgresTimeToIso } from '../../replicator/pg-time.ts';

const relation = (name: string): Relation => {
  const columns = ['id', 'account_id', 'deleted_at'].map((c) => ({ name: c, typeOid: 25, typeMod: -1, isKey: false, type: columnType(25) }));
  return { oid: name.length, namespace: 'public', name, replicaIdentity: 'f', columns, makeRow: rowBuilder(columns) };
};
const actors = relation('actors');
const accounts = relation('accounts');
const begin = (xid: number): PgoutputMessage => ({ tag: 'begin', xid, finalLsn: 1000n, commitTime: 0n });
const commit = (commitLsn: bigint): PgoutputMessage => ({ tag: 'commit', flags: 0, commitLsn, endLsn: commitLsn + 8n, commitTime: 1_000_000n });
const ins = (rel: Relation, row: Record<string, string | null>, xid?: number): PgoutputMessage => ({ tag: 'insert', xid, relation: rel, new: row });
const upd = (rel: Relation, old: Record<string, string | null>, row: Record<string, string | null>): PgoutputMessage => ({
  tag: 'update',
  xid: undefined,
  relation: rel,
  old,
  key: null,
  new: row,
  unchangedToast: null,
});

describe('TransactionAssembler', () => {
  it('routes accounts by id and other tables by account_id, with positions in the transaction', () => {
    const a = new TransactionAssembler();
    a.push(begin(7));
    a.push(ins(accounts, { id: 'A', account_id: null, deleted_at: null }));
    a.push(ins(actors, { id: 'x', account_id: 'A', deleted_at: null }));
    expect(a.idle).toBe(false);
    const txn = a.push(commit(0x16b3748n))!;
    expect(a.idle).toBe(true);
    const changes = toChanges(txn);
    expect(changes.map((c) => [c.accountId, c.change.table, c.change.seq, c.change.lsn, c.change.xid])).toEqual([
      ['A', 'accounts', 0, '0/16B3748', 7],
      ['A', 'actors', 1, '0/16B3748', 7],
    ]);
    expect(changes[0]!.change.committed_at).toBe('2000-01-01T00:00:01.000000Z');
  });

  it('turns a soft delete into a delete and a restore into an insert', () => {
    const a = new TransactionAssembler();
    a.push(begin(1));
    a.push(upd(actors, { id: 'x', account_id: 'A', deleted_at: null }, { id: 'x', account_id: 'A', deleted_at: '2026-01-01T00:00:00.000000Z' }));
    a.push(upd(actors, { id: 'x', account_id: 'A', deleted_at: '2026-01-01T00:00:00.000000Z' }, { id: 'x', account_id: 'A', deleted_at: null }));
    a.push(upd(actors, { id: 'x', account_id: 'A', deleted_at: null }, { id: 'x', account_id: 'A', deleted_at: null }));
    const changes = toChanges(a.push(commit(10n))!).map((c) => c.change);
    expect(changes.map((c) => c.op)).toEqual(['delete', 'insert', 'update']);
    expect(changes[0]).toMatchObject({ old: { deleted_at: null }, data: null });
    expect(changes[1]).toMatchObject({ old: null, data: { deleted_at: null } });
  });

  it('moves a row whose account_id changes: a delete to the old account, an insert to the new one', () => {
    const skipped: SkippedRow[] = [];
    const a = new TransactionAssembler((s) => skipped.push(s));
    const memberships = relation('actor_group_memberships');
    const live = { id: 'x', account_id: 'A', deleted_at: null };
    const T = '2026-01-01T00:00:00.000000Z';
    a.push(begin(1));
    a.push(upd(actors, live, { ...live, account_id: 'B' }));
    // Soft-delete rules on each side: a row deleted in the old account is not deleted twice, one
    // that arrives deleted is not inserted.
    a.push(upd(actors, { ...live, deleted_at: T }, { ...live, account_id: 'B' }));
    a.push(upd(actors, live, { ...live, account_id: 'B', deleted_at: T }));
    // Hard-deleted tables have no deleted_at rule.
    a.push(upd(memberships, { ...live, deleted_at: T }, { ...live, account_id: 'B', deleted_at: T }));
    // The new row names no account: the old one still loses it.
    a.push(upd(actors, live, { ...live, account_id: null }));
    // The same account: an ordinary update.
    a.push(upd(actors, live, { ...live, id: 'x' }));
    const changes = toChanges(a.push(commit(10n))!);
    expect(changes.map((c) => [c.accountId, c.change.table, c.change.op, c.change.seq])).toEqual([
      ['A', 'actors', 'delete', 0],
      ['B', 'actors', 'insert', 1],
      ['B', 'actors', 'insert', 2],
      ['A', 'actors', 'delete', 3],
      ['A', 'actor_group_memberships', 'delete', 4],
      ['B', 'actor_group_memberships', 'insert', 5],
      ['A', 'actors', 'delete', 6],
      ['A', 'actors', 'update', 7],
    ]);
    expect(changes[0]!.change).toMatchObject({ old: live, data: null });
    expect(changes[1]!.change).toMatchObject({ old: null, data: { ...live, account_id: 'B' } });
    expect(skipped).toEqual([{ reason: 'no account id', table: 'actors', xid: 1 }]);
  });

  it('skips rows of unknown tables or without an account, and says so', () => {
    const skipped: SkippedRow[] = [];
    const a = new TransactionAssembler((s) => skipped.push(s));
    a.push(begin(1));
    a.push(ins(relation('elsewhere'), { id: '1', account_id: 'A', deleted_at: null }));
    a.push(ins(actors, { id: '1', account_id: null, deleted_at: null }));
    expect(toChanges(a.push(commit(10n))!)).toEqual([]);
    expect(skipped.map((s) => s.reason)).toEqual(['not a domain table', 'no account id']);
  });

  it('holds streamed transactions until Stream Commit and drops aborted subtransactions', () => {
    const a = new TransactionAssembler();
    a.push({ tag: 'stream_start', xid: 50, firstSegment: true });
    a.push(ins(actors, { id: 'keep', account_id: 'A', deleted_at: null }, 50));
    a.push(ins(actors, { id: 'sub', account_id: 'A', deleted_at: null }, 51));
    a.push({ tag: 'stream_stop' });
    // A plain transaction commits in between, and comes out first.
    a.push(begin(60));
    a.push(ins(actors, { id: 'plain', account_id: 'A', deleted_at: null }));
    const plain = a.push(commit(100n))!;
    expect(plain.events.map((e) => (e.op === 'truncate' ? '' : e.data?.id))).toEqual(['plain']);
    expect(a.idle).toBe(false);
    a.push({ tag: 'stream_abort', xid: 50, subxid: 51 });
    a.push({ tag: 'stream_start', xid: 50, firstSegment: false });
    a.push(ins(actors, { id: 'late', account_id: 'A', deleted_at: null }, 50));
    a.push({ tag: 'stream_stop' });
    const streamed = a.push({ tag: 'stream_commit', xid: 50, flags: 0, commitLsn: 200n, endLsn: 208n, commitTime: 0n })!;
    expect(toChanges(streamed).map((c) => [c.change.data?.id, c.change.seq, c.change.xid])).toEqual([
      ['keep', 0, 50],
      ['late', 1, 50],
    ]);
    a.push({ tag: 'stream_start', xid: 70, firstSegment: true });
    a.push(ins(actors, { id: 'gone', account_id: 'A', deleted_at: null }, 70));
    a.push({ tag: 'stream_stop' });
    a.push({ tag: 'stream_abort', xid: 70, subxid: 70 });
    expect(a.idle).toBe(true);
  });

  it('expands a truncate into one change per account, each with its own seq', () => {
    const a = new TransactionAssembler();
    a.push(begin(1));
    a.push({ tag: 'truncate', xid: undefined, options: 0, relations: [actors] });
    const changes = toChanges(a.push(commit(10n))!, ['A', 'B']);
    expect(changes.map((c) => [c.accountId, c.change.op, c.change.seq])).toEqual([
      ['A', 'truncate', 0],
      ['B', 'truncate', 1],
    ]);
  });

  it('refuses impossible sequences with a typed error', () => {
    const a = new TransactionAssembler();
    expect(() => a.push(commit(1n))).toThrow(AssemblyError);
    expect(() => a.push(ins(actors, { id: '1', account_id: 'A', deleted_at: null }))).toThrow(AssemblyError);
    a.push(begin(1));
    expect(() => a.push(begin(2))).toThrow(AssemblyError);
  });

  it('formats commit times with microseconds, before and after 2000', () => {
    expect(postgresTimeToIso(848_710_461_103_077n)).toBe('2026-11-23T00:54:21.103077Z');
    expect(postgresTimeToIso(-1n)).toBe('1999-12-31T23:59:59.999999Z');
  });
});
