import type { SentViews } from '../../src/access/client-views.ts';
import { bytesToUuid, uuidToBytes, type ResourceId } from '../../src/ids.ts';

/** SQLite in Durable Objects binds at most 100 parameters a statement: 33 rows of 3. */
const ROWS_PER_STATEMENT = 33;

interface PendingView {
  conn: number;
  resourceId: ResourceId;
  /** null: delete the row. */
  digest: number | null;
}

/**
 * Per connection, the digest of each resource view last sent (docs/architecture.md#7-diffs-not-re-sends): the object
 * sends a view again only when its digest changes. SQLite holds it so that it survives
 * hibernation; memory mirrors it once loaded.
 */
export class ViewStore implements SentViews {
  private loaded: Map<number, Map<ResourceId, number>> | undefined;
  /** Inside `batch`: the writes not yet sent to SQLite, by `conn|resource`. */
  private pending: Map<string, PendingView> | undefined;

  constructor(private readonly sql: SqlStorage) {
    sql.exec('create table if not exists client_views (conn integer not null, resource_id blob not null, digest integer not null, primary key (conn, resource_id)) without rowid');
  }

  private all(): Map<number, Map<ResourceId, number>> {
    if (this.loaded) return this.loaded;
    const map = new Map<number, Map<ResourceId, number>>();
    for (const row of this.sql.exec<{ conn: number; resource_id: ArrayBuffer; digest: number }>('select conn, resource_id, digest from client_views')) {
      let views = map.get(row.conn);
      if (!views) map.set(row.conn, (views = new Map()));
      views.set(bytesToUuid<'resource'>(row.resource_id), row.digest);
    }
    this.loaded = map;
    return map;
  }

  of(conn: number): ReadonlyMap<ResourceId, number> {
    return this.all().get(conn) ?? new Map();
  }

  /**
   * Runs `fn` with the writes it makes gathered and stored at its end in multi-row statements:
   * a batch that changes one view for each of 5,000 clients costs 152 statements, not 5,000 (the
   * statements, not the rows, are what a small batch spends its storage time on). Call it inside
   * the storage transaction the writes belong to.
   */
  batch<T>(fn: () => T): T {
    if (this.pending) return fn();
    this.pending = new Map();
    try {
      const result = fn();
      this.flush(this.pending);
      return result;
    } finally {
      this.pending = undefined;
    }
  }

  set(conn: number, resourceId: ResourceId, digest: number): void {
    let views = this.all().get(conn);
    if (!views) this.all().set(conn, (views = new Map()));
    views.set(resourceId, digest);
    this.write({ conn, resourceId, digest });
  }

  delete(conn: number, resourceId: ResourceId): void {
    this.all().get(conn)?.delete(resourceId);
    this.write({ conn, resourceId, digest: null });
  }

  drop(conn: number): void {
    this.all().delete(conn);
    if (this.pending) for (const [key, p] of this.pending) if (p.conn === conn) this.pending.delete(key);
    this.sql.exec('delete from client_views where conn = ?', conn);
  }

  private write(p: PendingView): void {
    if (this.pending) this.pending.set(`${p.conn}|${p.resourceId}`, p);
    else this.flush(new Map([['', p]]));
  }

  private flush(pending: ReadonlyMap<string, PendingView>): void {
    const upserts: PendingView[] = [];
    for (const p of pending.values()) {
      if (p.digest !== null) upserts.push(p);
      else this.sql.exec('delete from client_views where conn = ? and resource_id = ?', p.conn, uuidToBytes(p.resourceId).buffer as ArrayBuffer);
    }
    for (let i = 0; i < upserts.length; i += ROWS_PER_STATEMENT) {
      const rows = upserts.slice(i, i + ROWS_PER_STATEMENT);
      const values: (number | ArrayBuffer)[] = [];
      for (const p of rows) values.push(p.conn, uuidToBytes(p.resourceId).buffer as ArrayBuffer, p.digest!);
      this.sql.exec(`insert or replace into client_views (conn, resource_id, digest) values ${rows.map(() => '(?, ?, ?)').join(', ')}`, ...values);
    }
  }

  /** Forgets connections that no longer exist (sockets closed while the object was not running). */
  retain(live: ReadonlySet<number>): void {
    for (const conn of [...this.all().keys()]) if (!live.has(conn)) this.drop(conn);
  }

  /** Forget the memory copy (after a failed transaction). */
  reset(): void {
    this.loaded = undefined;
  }
}
