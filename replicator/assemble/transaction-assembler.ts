import { accountIdOf, softDeleteAware } from '../../src/change.ts';
import type { Row } from '../../src/json.ts';
import type { Lsn } from '../../src/lsn.ts';
import { isDomainTable, SOFT_DELETE_TABLES, type TableName } from '../../src/tables.ts';
import { AssemblyError } from '../errors.ts';
import type { PgoutputMessage, Relation } from '../pgoutput/messages.ts';

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
  events: TransactionEvent[];
}

export interface SkippedRow {
  reason: 'not a domain table' | 'no account id';
  table: string;
  xid: number;
}

interface OpenTransaction {
  xid: number;
  events: TransactionEvent[];
}

/**
 * Turns decoded pgoutput messages into committed transactions, in commit order. Plain
 * transactions arrive whole between Begin and Commit; streamed ones (protocol 2) arrive in blocks,
 * possibly interleaved with others, and are held until their Stream Commit or dropped on Stream Abort.
 */
export class TransactionAssembler {
  private current: OpenTransaction | null = null;
  private readonly streamed = new Map<number, OpenTransaction>();
  private block: OpenTransaction | null = null;

  constructor(private readonly onSkip: (row: SkippedRow) => void = () => {}) {}

  /** True when no transaction is open: acknowledging the server's WAL end cannot skip anything then. */
  get idle(): boolean {
    return this.current === null && this.streamed.size === 0;
  }

  /** Events held for transactions not yet committed (memory accounting). */
  get openEvents(): number {
    let n = this.current?.events.length ?? 0;
    for (const t of this.streamed.values()) n += t.events.length;
    return n;
  }

  push(message: PgoutputMessage): AssembledTransaction | null {
    switch (message.tag) {
      case 'begin':
        if (this.current) throw new AssemblyError(`Begin of ${message.xid} inside transaction ${this.current.xid}`, { xid: message.xid });
        this.current = { xid: message.xid, events: [] };
        return null;
      case 'commit': {
        const open = this.current;
        if (!open) throw new AssemblyError('Commit without Begin', { lsn: message.commitLsn });
        this.current = null;
        return { xid: open.xid, commitLsn: message.commitLsn, endLsn: message.endLsn, commitTime: message.commitTime, events: open.events };
      }
      case 'stream_start': {
        let open = this.streamed.get(message.xid);
        if (!open) {
          open = { xid: message.xid, events: [] };
          this.streamed.set(message.xid, open);
        }
        this.block = open;
        return null;
      }
      case 'stream_stop':
        this.block = null;
        return null;
      case 'stream_commit': {
        const open = this.streamed.get(message.xid) ?? { xid: message.xid, events: [] };
        this.streamed.delete(message.xid);
        return { xid: open.xid, commitLsn: message.commitLsn, endLsn: message.endLsn, commitTime: message.commitTime, events: open.events };
      }
      case 'stream_abort': {
        if (message.subxid === message.xid) this.streamed.delete(message.xid);
        else {
          const open = this.streamed.get(message.xid);
          if (open) open.events = open.events.filter((e) => e.xid !== message.subxid);
        }
        return null;
      }
      case 'insert':
        this.row(message.xid, message.relation, 'insert', null, message.new);
        return null;
      case 'update':
        this.row(message.xid, message.relation, 'update', message.old, message.new);
        return null;
      case 'delete':
        this.row(message.xid, message.relation, 'delete', message.old ?? message.key, null);
        return null;
      case 'truncate': {
        const target = this.target(message.xid);
        for (const relation of message.relations) {
          if (isDomainTable(relation.name)) target.events.push({ op: 'truncate', table: relation.name, xid: message.xid ?? target.xid });
          else this.onSkip({ reason: 'not a domain table', table: relation.name, xid: target.xid });
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

  private target(xid: number | undefined): OpenTransaction {
    if (xid !== undefined) {
      if (!this.block) throw new AssemblyError(`change of streamed transaction ${xid} outside a stream block`, { xid });
      return this.block;
    }
    if (!this.current) throw new AssemblyError('change outside a transaction');
    return this.current;
  }

  private row(xid: number | undefined, relation: Relation, op: RowEvent['op'], old: Row | null, data: Row | null): void {
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
        this.move(target, table, from, old, data, eventXid);
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
    target.events.push({ op: e.op, table, accountId, old: e.old, data: e.data, xid: eventXid });
  }

  /**
   * An update that moves a row to another account (docs/architecture.md#5-fat-typed-changes): the old account
   * loses the row (a delete of the old row, unless it was soft-deleted there already) and the new
   * one gains it (an insert, unless it arrives soft-deleted), so that no object keeps a row that
   * is no longer its account's.
   */
  private move(target: OpenTransaction, table: TableName, from: string, old: Row, data: Row, xid: number): void {
    const soft = SOFT_DELETE_TABLES.has(table);
    if (!soft || old.deleted_at == null) target.events.push({ op: 'delete', table, accountId: from, old, data: null, xid });
    const to = accountIdOf(table, data);
    if (to === undefined) this.onSkip({ reason: 'no account id', table, xid: target.xid });
    else if (!soft || data.deleted_at == null) target.events.push({ op: 'insert', table, accountId: to, old: null, data, xid });
  }
}
