import type { AccountId } from '../../src/ids.ts';
import { formatPosition, parsePosition, type Position } from '../../src/lsn.ts';
import { formatSnapshot, parseSnapshot, type Snapshot } from '../../src/snapshot.ts';

/** The hydration snapshot and the time (epoch ms) it was taken. */
export interface HydrationSnapshot {
  snapshot: Snapshot;
  takenAt: number;
}

/** Small key/value facts about the object: its account, cache version, position, hydration snapshot. */
export class MetaStore {
  constructor(private readonly sql: SqlStorage) {
    sql.exec('create table if not exists meta (key text primary key, value text not null) without rowid');
  }

  private get(key: string): string | null {
    const rows = this.sql.exec<{ value: string }>('select value from meta where key = ?', key).toArray();
    return rows[0]?.value ?? null;
  }

  private set(key: string, value: string | null): void {
    if (value === null) this.sql.exec('delete from meta where key = ?', key);
    else this.sql.exec('insert or replace into meta (key, value) values (?, ?)', key, value);
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

  /** The last applied change's position (DESIGN property 2); null before the first change. */
  get position(): Position | null {
    const v = this.get('position');
    return v === null ? null : parsePosition(v);
  }
  set position(p: Position | null) {
    this.set('position', p === null ? null : formatPosition(p));
  }

  get snapshot(): HydrationSnapshot | null {
    const v = this.get('snapshot');
    if (v === null) return null;
    const [takenAt, text] = v.split('|');
    return { snapshot: parseSnapshot(text ?? ''), takenAt: Number(takenAt) };
  }
  set snapshot(s: HydrationSnapshot | null) {
    this.set('snapshot', s === null ? null : `${s.takenAt}|${formatSnapshot(s.snapshot)}`);
  }

  /** Changes dropped for being at or below the position, since the object was created. */
  get staleSkipped(): number {
    return Number(this.get('stale_skipped') ?? 0);
  }
  set staleSkipped(n: number) {
    this.set('stale_skipped', String(n));
  }

  /** A new connection number, unique within the object for its lifetime. */
  nextConnection(): number {
    const n = Number(this.get('next_conn') ?? 1);
    this.set('next_conn', String(n + 1));
    return n;
  }
}
