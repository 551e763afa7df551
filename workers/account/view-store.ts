import type { SentViews } from '../../src/access/client-views.ts';
import { uuidFromHex, uuidToBytes, type ResourceId } from '../../src/ids.ts';
import { jsonPages } from './json-pages.ts';
import { hexText, type JsonTable } from './json-rows.ts';

/** SQLite in Durable Objects binds at most 100 parameters a statement: 33 upserts of 3, or one resource and 99 connections to delete. */
const MAX_PARAMETERS = 100;
const UPSERTS_PER_STATEMENT = Math.floor(MAX_PARAMETERS / 3);
const DELETES_PER_STATEMENT = MAX_PARAMETERS - 1;

/** Rows a page of the first read holds (workers/account/json-pages.ts). */
const LOAD_PAGE_ROWS = 4_096;

const VIEWS: JsonTable = {
  name: 'client_views',
  values: ['conn', hexText('resource_id'), 'digest'],
  key: [
    { column: 'conn', at: 0, blob: false },
    { column: 'resource_id', at: 1, blob: true },
  ],
};

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
    for (const rows of jsonPages(this.sql, VIEWS, LOAD_PAGE_ROWS)) {
      for (const [conn, resourceHex, digest] of rows as [number, string, number][]) {
        let views = map.get(conn);
        if (!views) map.set(conn, (views = new Map()));
        views.set(uuidFromHex<'resource'>(resourceHex), digest);
      }
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
    // Not loaded yet (a close woke the object): SQLite alone holds the connection's rows.
    this.loaded?.delete(conn);
    if (this.pending) for (const [key, p] of this.pending) if (p.conn === conn) this.pending.delete(key);
    this.sql.exec('delete from client_views where conn = ?', conn);
  }

  private write(p: PendingView): void {
    if (this.pending) this.pending.set(`${p.conn}|${p.resourceId}`, p);
    else this.flush(new Map([['', p]]));
  }

  private flush(pending: ReadonlyMap<string, PendingView>): void {
    const upserts: PendingView[] = [];
    const deletes = new Map<ResourceId, number[]>();
    for (const p of pending.values()) {
      if (p.digest !== null) upserts.push(p);
      else {
        const conns = deletes.get(p.resourceId);
        if (conns) conns.push(p.conn);
        else deletes.set(p.resourceId, [p.conn]);
      }
    }
    for (let i = 0; i < upserts.length; i += UPSERTS_PER_STATEMENT) {
      const rows = upserts.slice(i, i + UPSERTS_PER_STATEMENT);
      const values: (number | ArrayBuffer)[] = [];
      for (const p of rows) values.push(p.conn, uuidToBytes(p.resourceId).buffer as ArrayBuffer, p.digest!);
      this.sql.exec(`insert or replace into client_views (conn, resource_id, digest) values ${rows.map(() => '(?, ?, ?)').join(', ')}`, ...values);
    }
    // A revocation deletes one resource's view of thousands of clients: a statement per 99 of
    // them (each a primary-key search), not one a row. A row-value IN list would scan the table.
    for (const [resourceId, conns] of deletes) {
      const id = uuidToBytes(resourceId).buffer as ArrayBuffer;
      for (let i = 0; i < conns.length; i += DELETES_PER_STATEMENT) {
        const some = conns.slice(i, i + DELETES_PER_STATEMENT);
        this.sql.exec(`delete from client_views where resource_id = ? and conn in (${some.map(() => '?').join(', ')})`, id, ...some);
      }
    }
  }

  /**
   * Forgets connections that no longer exist (sockets closed while no instance ran, whose close
   * handlers never ran), in statements of up to 100 connections. Returns how many it forgot.
   * Never call it inside `batch`.
   */
  retain(live: ReadonlySet<number>): number {
    const all = this.all();
    const dead = [...all.keys()].filter((conn) => !live.has(conn));
    for (const conn of dead) all.delete(conn);
    for (let i = 0; i < dead.length; i += MAX_PARAMETERS) {
      const conns = dead.slice(i, i + MAX_PARAMETERS);
      this.sql.exec(`delete from client_views where conn in (${conns.map(() => '?').join(', ')})`, ...conns);
    }
    return dead.length;
  }

  /** Forget the memory copy (after a failed transaction). */
  reset(): void {
    this.loaded = undefined;
  }
}
