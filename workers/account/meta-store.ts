import type { AccountId } from '../../src/ids.ts';
import { formatPosition, parsePosition, type Position } from '../../src/lsn.ts';
import type { HydrationSnapshot } from '../../src/ordering.ts';
import { formatSnapshot, parseSnapshot } from '../../src/snapshot.ts';
import type { PendingResync } from './resync.ts';

/** Connection numbers reserved by one storage write. */
const CONNECTION_BLOCK = 1024;

/**
 * Small key/value facts about the object: its account, cache version, position, hydration snapshot.
 * Values read once are kept in memory (every batch reads the position and the snapshot); after a
 * failed transaction, `reset` forgets them so that memory is never ahead of storage.
 */
export class MetaStore {
  private readonly known = new Map<string, string | null>();
  private position_: Position | null | undefined;
  private snapshot_: HydrationSnapshot | null | undefined;
  /** The block of connection numbers this instance hands out (nextConnection). */
  private connections: { next: number; end: number } | undefined;

  constructor(private readonly sql: SqlStorage) {
    sql.exec('create table if not exists meta (key text primary key, value text not null) without rowid');
  }

  private get(key: string): string | null {
    if (this.known.has(key)) return this.known.get(key)!;
    const rows = this.sql.exec<{ value: string }>('select value from meta where key = ?', key).toArray();
    const value = rows[0]?.value ?? null;
    this.known.set(key, value);
    return value;
  }

  private set(key: string, value: string | null): void {
    if (value === null) this.sql.exec('delete from meta where key = ?', key);
    else this.sql.exec('insert or replace into meta (key, value) values (?, ?)', key, value);
    this.known.set(key, value);
  }

  reset(): void {
    this.known.clear();
    // A block whose reservation may have rolled back: its numbers could be handed out again.
    this.connections = undefined;
    this.position_ = undefined;
    this.snapshot_ = undefined;
  }

  get accountId(): AccountId | null {
    return this.get('account_id') as AccountId | null;
  }
  set accountId(id: AccountId | null) {
    this.set('account_id', id);
  }

  get cacheVersion(): number | null {
    const v = this.get('cache_version');
    return v === null ? null : Number(v);
  }
  set cacheVersion(v: number | null) {
    this.set('cache_version', v === null ? null : String(v));
  }

  /** The last applied change's position (docs/architecture.md#2-order); null before the first change. */
  get position(): Position | null {
    if (this.position_ === undefined) {
      const v = this.get('position');
      this.position_ = v === null ? null : parsePosition(v);
    }
    return this.position_;
  }
  set position(p: Position | null) {
    this.set('position', p === null ? null : formatPosition(p));
    this.position_ = p;
  }

  get snapshot(): HydrationSnapshot | null {
    if (this.snapshot_ === undefined) {
      const v = this.get('snapshot');
      const [takenAt, text] = v === null ? [] : v.split('|');
      this.snapshot_ = v === null ? null : { snapshot: parseSnapshot(text ?? ''), takenAt: Number(takenAt) };
    }
    return this.snapshot_;
  }
  set snapshot(s: HydrationSnapshot | null) {
    this.set('snapshot', s === null ? null : `${s.takenAt}|${formatSnapshot(s.snapshot)}`);
    this.snapshot_ = s;
  }

  /** The replication epoch its position belongs to (docs/architecture.md#12-epochs); null before the first. */
  get epoch(): string | null {
    return this.get('epoch');
  }
  set epoch(e: string | null) {
    this.set('epoch', e);
  }

  /** Rows that did not fit and were applied fail-closed (treated as deleted), since the object was created. */
  get failClosed(): number {
    return Number(this.get('fail_closed') ?? 0);
  }
  set failClosed(n: number) {
    this.set('fail_closed', String(n));
  }

  /** Changes dropped for being at or below the position, since the object was created. */
  get staleSkipped(): number {
    return Number(this.get('stale_skipped') ?? 0);
  }
  set staleSkipped(n: number) {
    this.set('stale_skipped', String(n));
  }

  /**
   * A push that failed after its batch was stored (workers/account/resync.ts): the next one
   * re-examines every socket and flow, with these resources marked. null: none pending.
   */
  get resync(): PendingResync | null {
    const v = this.get('resync');
    if (v === null) return null;
    const parsed = JSON.parse(v) as Partial<PendingResync>;
    return { breaking: parsed.breaking ?? [], reshaped: parsed.reshaped ?? [] };
  }
  set resync(r: PendingResync | null) {
    this.set('resync', r === null ? null : JSON.stringify(r));
  }

  /**
   * A new connection number, unique within the object for its lifetime. Numbers are reserved in
   * blocks (storage holds the end of the last block), so that a connect does not write one: a
   * new instance starts after the last block, and the numbers a block had left are skipped.
   */
  nextConnection(): number {
    if (!this.connections || this.connections.next >= this.connections.end) {
      const start = Number(this.get('next_conn') ?? 1);
      this.set('next_conn', String(start + CONNECTION_BLOCK));
      this.connections = { next: start, end: start + CONNECTION_BLOCK };
    }
    return this.connections.next++;
  }
}
