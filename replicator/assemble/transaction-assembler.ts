import { tmpdir } from 'node:os';
import { accountIdOf, softDeleteAware } from '../../src/change.ts';
import type { Row } from '../../src/json.ts';
import type { Lsn } from '../../src/lsn.ts';
import { isDomainTable, SOFT_DELETE_TABLES, type TableName } from '../../src/tables.ts';
import { AssemblyError } from '../errors.ts';
import type { PgoutputMessage, Relation } from '../pgoutput/messages.ts';
import { SpillFile } from './spill-file.ts';

export interface RowEvent {
  op: 'insert' | 'update' | 'delete';
  table: TableName;
  accountId: string;
  old: Row | null;
  data: Row | null;
  /** The (sub)transaction that made it, so that a streamed subtransaction's abort can drop it. */
  xid: number;
}

export interface TruncateEvent {
  op: 'truncate';
  table: TableName;
  xid: number;
}

export type TransactionEvent = RowEvent | TruncateEvent;

export interface AssembledTransaction {
  xid: number;
  commitLsn: Lsn;
  /** What to acknowledge once the transaction is delivered: Postgres resends transactions whose commit starts at or after it. */
  endLsn: Lsn;
  commitTime: bigint;
  /** The events, when the transaction was held in memory (empty when it was spilled). */
  events: TransactionEvent[];
  /** Where its events are when it was too large to hold: read back in chunks, then removed. */
  spill: SpillFile | null;
}

export interface SkippedRow {
  reason: 'not a domain table' | 'no account id';
  table: string;
  xid: number;
}

interface OpenTransaction {
  xid: number;
  events: TransactionEvent[];
  /** pgoutput bytes of the events held in `events` (near enough for the spill threshold). */
  bytes: number;
  spill: SpillFile | null;
}

/** When open transactions go to disk (docs/architecture.md#the-path-of-a-change, step 4). */
export interface SpillOptions {
  /** Events of open transactions held in memory, all together; past it the largest goes to a file. */
  maxEvents: number;
  /** The same in pgoutput bytes. */
  maxBytes: number;
  /** Where spill files go. */
  dir: string;
}

const open = (xid: number): OpenTransaction => ({ xid, events: [], bytes: 0, spill: null });

/**
 * Turns decoded pgoutput messages into committed transactions, in commit order. Plain
 * transactions arrive whole between Begin and Commit; streamed ones (protocol 2) arrive in blocks,
 * possibly interleaved with others, and are held until their Stream Commit or dropped on Stream Abort.
 * Held events are bounded: past `maxEvents` or `maxBytes` for all open transactions together, the
 * largest one moves to a spill file, and its further events go there too.
 */
export class TransactionAssembler {
  private current: OpenTransaction | null = null;
  private readonly streamed = new Map<number, OpenTransaction>();
  private block: OpenTransaction | null = null;
  private heldEvents = 0;
  private heldBytes = 0;
  private readonly spillOptions: SpillOptions;

  constructor(
    private readonly onSkip: (row: SkippedRow) => void = () => {},
    spill: Partial<SpillOptions> = {},
    private readonly onSpill: (txn: { xid: number; events: number }) => void = () => {},
  ) {
    this.spillOptions = { maxEvents: 10_000, maxBytes: 8 << 20, dir: tmpdir(), ...spill };
  }

  /** True when no transaction is open: acknowledging the server's WAL end cannot skip anything then. */
  get idle(): boolean {
    return this.current === null && this.streamed.size === 0;
  }

  /** Events held in memory for transactions not yet committed (spilled ones not counted). */
  get openEvents(): number {
    return this.heldEvents;
  }

  /**
   * Takes the next message; returns the transaction it commits, if it does. `bytes`, the size of
   * the message, counts towards the spill threshold in bytes.
   */
  push(message: PgoutputMessage, bytes = 0): AssembledTransaction | null {
    switch (message.tag) {
      case 'begin':
        if (this.current) throw new AssemblyError(`Begin of ${message.xid} inside transaction ${this.current.xid}`, { xid: message.xid });
        this.current = open(message.xid);
        return null;
      case 'commit': {
        const txn = this.current;
        if (!txn) throw new AssemblyError('Commit without Begin', { lsn: message.commitLsn });
        this.current = null;
        return this.committed(txn, message);
      }
      case 'stream_start': {
        let txn = this.streamed.get(message.xid);
        if (!txn) {
          txn = open(message.xid);
          this.streamed.set(message.xid, txn);
        }
        this.block = txn;
        return null;
      }
      case 'stream_stop':
        this.block = null;
        return null;
      case 'stream_commit': {
        const txn = this.streamed.get(message.xid) ?? open(message.xid);
        this.streamed.delete(message.xid);
        return this.committed(txn, message);
      }
      case 'stream_abort': {
        const txn = this.streamed.get(message.xid);
        if (!txn) return null;
        if (message.subxid === message.xid) {
          this.streamed.delete(message.xid);
          this.release(txn);
          txn.spill?.remove();
        } else if (txn.spill) txn.spill.abort(message.subxid);
        else {
          const before = txn.events.length;
          txn.events = txn.events.filter((e) => e.xid !== message.subxid);
          // Sizes are not kept per event: the bytes go down in proportion.
          const bytes = before === 0 ? 0 : Math.round((txn.bytes * (before - txn.events.length)) / before);
          this.heldEvents -= before - txn.events.length;
          this.heldBytes -= bytes;
          txn.bytes -= bytes;
        }
        return null;
      }
      case 'insert':
        this.row(message.xid, message.relation, 'insert', null, message.new, bytes);
        return null;
      case 'update':
        this.row(message.xid, message.relation, 'update', message.old, message.new, bytes);
        return null;
      case 'delete':
        this.row(message.xid, message.relation, 'delete', message.old ?? message.key, null, bytes);
        return null;
      case 'truncate': {
        const target = this.target(message.xid);
        let size = bytes;
        for (const relation of message.relations) {
          if (!isDomainTable(relation.name)) this.onSkip({ reason: 'not a domain table', table: relation.name, xid: target.xid });
          else if (target.spill) target.spill.appendTruncate(message.xid ?? target.xid, relation.name);
          else {
            this.hold(target, { op: 'truncate', table: relation.name, xid: message.xid ?? target.xid }, size);
            size = 0;
          }
        }
        return null;
      }
      case 'relation':
      case 'type':
      case 'origin':
      case 'message':
      case 'unknown':
        return null;
    }
  }

  /** Drops every open transaction and removes its spill file (the session ends; the next one starts over from the slot). */
  discard(): void {
    for (const txn of [this.current, ...this.streamed.values()]) txn?.spill?.remove();
    this.current = null;
    this.block = null;
    this.streamed.clear();
    this.heldEvents = 0;
    this.heldBytes = 0;
  }

  private committed(txn: OpenTransaction, message: { commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }): AssembledTransaction {
    this.release(txn);
    return { xid: txn.xid, commitLsn: message.commitLsn, endLsn: message.endLsn, commitTime: message.commitTime, events: txn.events, spill: txn.spill };
  }

  /** The transaction leaves the assembler: its events no longer count as held. */
  private release(txn: OpenTransaction): void {
    this.heldEvents -= txn.events.length;
    this.heldBytes -= txn.bytes;
  }

  private hold(txn: OpenTransaction, event: TransactionEvent, bytes: number): void {
    txn.events.push(event);
    txn.bytes += bytes;
    this.heldEvents++;
    this.heldBytes += bytes;
    while ((this.heldEvents > this.spillOptions.maxEvents || this.heldBytes > this.spillOptions.maxBytes) && this.spillLargest());
  }

  /** Moves the open transaction holding the most events to a file of its own; false when none is left in memory. */
  private spillLargest(): boolean {
    let largest: OpenTransaction | undefined;
    for (const txn of [this.current, ...this.streamed.values()]) {
      if (txn && !txn.spill && (!largest || txn.events.length > largest.events.length)) largest = txn;
    }
    if (!largest) return false;
    const spill = SpillFile.create(this.spillOptions.dir, largest.xid);
    for (const e of largest.events) {
      if (e.op === 'truncate') spill.appendTruncate(e.xid, e.table);
      else spill.appendRow(e.xid, e.op, e.table, e.accountId, e.old, e.data);
    }
    this.onSpill({ xid: largest.xid, events: largest.events.length });
    this.release(largest);
    largest.events = [];
    largest.bytes = 0;
    largest.spill = spill;
    return true;
  }

  private target(xid: number | undefined): OpenTransaction {
    if (xid !== undefined) {
      if (!this.block) throw new AssemblyError(`change of streamed transaction ${xid} outside a stream block`, { xid });
      return this.block;
    }
    if (!this.current) throw new AssemblyError('change outside a transaction');
    return this.current;
  }

  private row(xid: number | undefined, relation: Relation, op: RowEvent['op'], old: Row | null, data: Row | null, bytes: number): void {
    const target = this.target(xid);
    const table = relation.name;
    if (!isDomainTable(table)) {
      this.onSkip({ reason: 'not a domain table', table, xid: target.xid });
      return;
    }
    const eventXid = xid ?? target.xid;
    if (op === 'update' && old !== null && data !== null) {
      const from = accountIdOf(table, old);
      if (from !== undefined && from !== accountIdOf(table, data)) {
        this.move(target, table, from, old, data, eventXid, bytes);
        return;
      }
    }
    const accountId = accountIdOf(table, data ?? old ?? {});
    if (accountId === undefined) {
      this.onSkip({ reason: 'no account id', table, xid: target.xid });
      return;
    }
    // Soft deletes are deletes, and restoring a soft-deleted row creates it again (docs/architecture.md#5-fat-typed-changes).
    const e = softDeleteAware(table, op, old, data);
    // An object literal with every field: spreading `e` into it costs microseconds a row.
    this.emit(target, { op: e.op, table, accountId, old: e.old, data: e.data, xid: eventXid }, bytes);
  }

  /** One row event of a transaction: to its spill file once it has one, else held in memory. */
  private emit(target: OpenTransaction, event: RowEvent, bytes: number): void {
    if (target.spill) target.spill.appendRow(event.xid, event.op, event.table, event.accountId, event.old, event.data);
    else this.hold(target, event, bytes);
  }

  /**
   * An update that moves a row to another account (docs/architecture.md#5-fat-typed-changes): the old account
   * loses the row (a delete of the old row, unless it was soft-deleted there already) and the new
   * one gains it (an insert, unless it arrives soft-deleted), so that no object keeps a row that
   * is no longer its account's.
   */
  private move(target: OpenTransaction, table: TableName, from: string, old: Row, data: Row, xid: number, bytes: number): void {
    const soft = SOFT_DELETE_TABLES.has(table);
    if (!soft || old.deleted_at == null) this.emit(target, { op: 'delete', table, accountId: from, old, data: null, xid }, bytes);
    const to = accountIdOf(table, data);
    if (to === undefined) this.onSkip({ reason: 'no account id', table, xid: target.xid });
    else if (!soft || data.deleted_at == null) this.emit(target, { op: 'insert', table, accountId: to, old: null, data, xid }, bytes);
  }
}
