import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JsonValue } from '../../src/json.ts';
import { spilledDeliveries, toChanges } from '../../replicator/assemble/routed-changes.ts';
import { removeStaleSpillFiles } from '../../replicator/assemble/spill-file.ts';
import { type AssembledTransaction, TransactionAssembler } from '../../replicator/assemble/transaction-assembler.ts';
import { type Delivery, toDelivery } from '../../replicator/deliver/delivery.ts';
import { SpillError } from '../../replicator/errors.ts';
import type { PgoutputMessage, Relation } from '../../replicator/pgoutput/messages.ts';
import { rowBuilder } from '../../replicator/pgoutput/decoder.ts';
import { columnType } from '../../replicator/pgoutput/values.ts';

const relation = (name: string, columns = ['id', 'account_id', 'name', 'deleted_at']): Relation => {
  const cols = columns.map((c) => ({ name: c, typeOid: 25, typeMod: -1, isKey: false, type: columnType(25) }));
  return { oid: name.length, namespace: 'public', name, replicaIdentity: 'f', columns: cols, makeRow: rowBuilder(cols) };
};
const actors = relation('actors');
const groups = relation('actor_groups');
type Values = Record<string, JsonValue>;
const ins = (rel: Relation, row: Values, xid?: number): PgoutputMessage => ({ tag: 'insert', xid, relation: rel, new: row });
const upd = (rel: Relation, old: Values, row: Values, xid?: number): PgoutputMessage => ({ tag: 'update', xid, relation: rel, old, key: null, new: row, unchangedToast: null });
const del = (rel: Relation, old: Values, xid?: number): PgoutputMessage => ({ tag: 'delete', xid, relation: rel, old, key: null });
const truncate = (xid?: number): PgoutputMessage => ({ tag: 'truncate', xid, options: 0, relations: [groups, relation('flows')] });
const commitOf = (commitLsn: bigint): PgoutputMessage => ({ tag: 'commit', flags: 0, commitLsn, endLsn: commitLsn + 8n, commitTime: 848_710_461_103_077n });
const streamCommit = (xid: number, commitLsn: bigint): PgoutputMessage => ({ tag: 'stream_commit', xid, flags: 0, commitLsn, endLsn: commitLsn + 8n, commitTime: 1_000_000n });

/** Names COPY, JSON, the spill file's tabs and lines and UTF-8 could each get wrong. */
const ODD = ['tab\there', 'new\nline', 'cr\rlf', 'back\\slash \\N', 'quote "q"', 'é ü 漢字 🚀', '\u2028\u2029', 'lone \ud800 surrogate', ''];

/** A transaction's row messages: inserts, updates, soft deletes and restores, deletes, a truncate. */
function rowMessages(n: number, xid?: number): PgoutputMessage[] {
  const out: PgoutputMessage[] = [];
  for (let i = 0; i < n; i++) {
    const account = `acct-${i % 3}`;
    const row = { id: `id-${i}`, account_id: account, name: ODD[i % ODD.length] as string, deleted_at: null };
    switch (i % 6) {
      case 0:
        out.push(ins(actors, row, xid));
        break;
      case 1:
        out.push(upd(actors, row, { ...row, name: `${row.name}!` }, xid));
        break;
      case 2:
        out.push(upd(actors, row, { ...row, deleted_at: '2026-01-01T00:00:00.000000Z' }, xid)); // soft delete
        break;
      case 3:
        out.push(upd(groups, { ...row, deleted_at: '2026-01-01T00:00:00.000000Z' }, row, xid)); // restore
        break;
      case 4:
        out.push(del(actors, { ...row, name: 'x'.repeat(3000) }, xid));
        break;
      default:
        out.push(i === 5 ? truncate(xid) : ins(groups, { ...row, extra: [1, 'two', { three: [null, true] }] } as Values, xid));
    }
  }
  return out;
}

/** What the session routes for a spilled transaction: its file read back in chunks. */
function readBack(txn: AssembledTransaction, truncateAccounts: string[], chunk: number): Delivery[] {
  const out: Delivery[] = [];
  for (let events = txn.spill!.read(chunk); events.length > 0; events = txn.spill!.read(chunk)) out.push(...spilledDeliveries(txn, events, truncateAccounts, out.length));
  return out;
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'spill-test-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('spilling large transactions', () => {
  it('spills a plain transaction past the threshold and reads back the same changes and positions, in chunks', () => {
    const accounts = ['acct-0', 'acct-1', 'acct-2', 'acct-9'];
    const messages = rowMessages(100);
    const held = new TransactionAssembler(undefined, { maxEvents: Number.POSITIVE_INFINITY, maxBytes: Number.POSITIVE_INFINITY, dir });
    const spilled: Array<{ xid: number; events: number }> = [];
    const spilling = new TransactionAssembler(undefined, { maxEvents: 10, dir }, (s) => spilled.push(s));
    for (const a of [held, spilling]) {
      a.push({ tag: 'begin', xid: 42, finalLsn: 0n, commitTime: 0n });
      for (const m of messages) a.push(m, 100);
    }
    // Past the threshold, nothing more is held in memory.
    expect(spilling.openEvents).toBe(0);
    const inMemory = held.push(commitOf(0x16b3748n))!;
    const onDisk = spilling.push(commitOf(0x16b3748n))!;
    expect(inMemory.spill).toBeNull();
    expect(onDisk.events).toEqual([]);
    expect(spilled).toEqual([{ xid: 42, events: 11 }]);
    expect(readdirSync(dir)).toHaveLength(1);

    const expected = toChanges(inMemory, accounts).map(toDelivery);
    expect(onDisk.spill!.changeCount(accounts.length)).toBe(expected.length);
    expect(onDisk.spill!.hasTruncate).toBe(true);
    const got = readBack(onDisk, accounts, 7);
    expect(got).toEqual(expected);
    expect(got.map((d) => d.position.seq)).toEqual(expected.map((_, i) => i));
    // Parsed back, the rows are what toChanges built, odd strings included.
    expect(got.map((d) => [d.op, d.oldJson && JSON.parse(d.oldJson), d.dataJson && JSON.parse(d.dataJson)])).toEqual(
      toChanges(inMemory, accounts).map((r) => [r.change.op, r.change.old, r.change.data]),
    );
    onDisk.spill!.remove();
    onDisk.spill!.remove();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('spills interleaved streamed transactions, drops aborted subtransactions on reading, and deletes an aborted one', () => {
    const run = (maxEvents: number) => {
      const a = new TransactionAssembler(undefined, { maxEvents, dir });
      const block = (xid: number, messages: PgoutputMessage[]) => {
        a.push({ tag: 'stream_start', xid, firstSegment: false });
        for (const m of messages) a.push(m);
        a.push({ tag: 'stream_stop' });
      };
      const big = rowMessages(60, 50);
      const sub = rowMessages(20, 51).map((m) => ({ ...m, xid: 51 }) as PgoutputMessage);
      const later = rowMessages(30, 50);
      block(50, big.slice(0, 30));
      block(70, rowMessages(8, 70)); // another streamed transaction, interleaved
      block(50, [...sub.slice(0, 10), ...big.slice(30)]);
      block(90, rowMessages(25, 90)); // one that aborts whole
      block(
        70,
        rowMessages(4, 71).map((m) => ({ ...m, xid: 71 }) as PgoutputMessage),
      );
      block(50, sub.slice(10));
      const files = readdirSync(dir).length;
      a.push({ tag: 'stream_abort', xid: 90, subxid: 90 });
      const afterAbort = readdirSync(dir).length;
      a.push({ tag: 'stream_abort', xid: 50, subxid: 51 });
      a.push({ tag: 'stream_abort', xid: 70, subxid: 71 });
      block(50, later);
      const first = a.push(streamCommit(70, 300n))!;
      const second = a.push(streamCommit(50, 400n))!;
      expect(a.idle).toBe(true);
      expect(a.openEvents).toBe(0);
      return { first, second, files, afterAbort };
    };
    const held = run(Number.POSITIVE_INFINITY);
    const spilled = run(20);
    expect(held.files).toBe(0);
    // 50 and 90 went to disk; 70 stayed small enough to hold.
    expect(spilled.files).toBe(2);
    expect(spilled.afterAbort).toBe(1);
    expect(spilled.first.spill).toBeNull();
    expect(toChanges(spilled.first, ['acct-0'])).toEqual(toChanges(held.first, ['acct-0']));
    expect(toChanges(held.first, []).every((c) => c.change.xid === 70)).toBe(true);
    const expected = toChanges(held.second, ['acct-0', 'acct-1']).map(toDelivery);
    expect(expected).toHaveLength(60 + 30 + 2); // the aborted subtransaction's 20 are gone; a truncate in each part goes to 2 accounts
    expect(spilled.second.spill!.changeCount(2)).toBe(expected.length);
    expect(readBack(spilled.second, ['acct-0', 'acct-1'], 13)).toEqual(expected);
    spilled.second.spill!.remove();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('reads back rows longer than its read buffer, between short ones', () => {
    const a = new TransactionAssembler(undefined, { maxEvents: 1, dir });
    a.push({ tag: 'begin', xid: 3, finalLsn: 0n, commitTime: 0n });
    const names = ['short', 'é'.repeat(700_000), 'x'.repeat(3_000_000), 'short again'];
    for (const [i, name] of names.entries()) a.push(ins(actors, { id: `id-${i}`, account_id: 'A', name, deleted_at: null }));
    const txn = a.push(commitOf(77n))!;
    expect(txn.spill!.bytes).toBeGreaterThan(4_000_000);
    expect(readBack(txn, [], 3).map((d) => (JSON.parse(d.dataJson!) as { name: string }).name)).toEqual(names);
    txn.spill!.remove();
  });

  it('keeps the events of every open transaction together under the threshold, in count and in bytes', () => {
    for (const [options, bound] of [
      [{ maxEvents: 50 }, 50],
      [{ maxEvents: Number.POSITIVE_INFINITY, maxBytes: 3000 }, 20], // 150 bytes an event
    ] as const) {
      const a = new TransactionAssembler(undefined, { ...options, dir });
      let most = 0;
      for (let round = 0; round < 40; round++) {
        for (const xid of [1, 2, 3, 4]) {
          a.push({ tag: 'stream_start', xid, firstSegment: round === 0 });
          for (const m of rowMessages(xid * 2, xid)) {
            a.push(m, 150);
            most = Math.max(most, a.openEvents);
          }
          a.push({ tag: 'stream_stop' });
        }
      }
      expect(most).toBe(bound);
      expect(readdirSync(dir).length).toBeGreaterThan(0);
      a.discard();
      expect(readdirSync(dir)).toEqual([]);
      expect(a.idle).toBe(true);
    }
  });

  it('says which file it could not write, as a SpillError', () => {
    const a = new TransactionAssembler(undefined, { maxEvents: 2, dir: path.join(dir, 'missing') });
    a.push({ tag: 'begin', xid: 5, finalLsn: 0n, commitTime: 0n });
    const [first, second, third] = rowMessages(3);
    a.push(first!);
    a.push(second!);
    expect(() => a.push(third!)).toThrow(SpillError);
    expect(() => a.push(third!)).toThrow(/spill file .*missing.*ENOENT/);
  });

  it('removes the spill files of open transactions when the session ends, and those of replicators that died', () => {
    const a = new TransactionAssembler(undefined, { maxEvents: 5, dir });
    a.push({ tag: 'begin', xid: 1, finalLsn: 0n, commitTime: 0n });
    for (const m of rowMessages(20)) a.push(m);
    const [own] = readdirSync(dir);
    expect(own).toMatch(new RegExp(`^edgeplane-spill-${process.pid}-1-`));

    const dead = spawnSync(process.execPath, ['-e', '0']).pid;
    writeFileSync(path.join(dir, `edgeplane-spill-${dead}-7-abcd.tsv`), '');
    writeFileSync(path.join(dir, `edgeplane-spill-${process.ppid}-7-abcd.tsv`), '');
    writeFileSync(path.join(dir, 'unrelated'), '');
    expect(removeStaleSpillFiles(dir)).toBe(1);
    expect(readdirSync(dir).sort()).toEqual([own, `edgeplane-spill-${process.ppid}-7-abcd.tsv`, 'unrelated'].sort());

    a.discard();
    expect(existsSync(path.join(dir, own!))).toBe(false);
  });
});
