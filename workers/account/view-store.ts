import type { SentViews } from '../../src/access/client-views.ts';
import { bytesToUuid, uuidToBytes, type ResourceId } from '../../src/ids.ts';

/**
 * Per connection, the digest of each resource view last sent (DESIGN property 7): the object
 * sends a view again only when its digest changes. SQLite holds it so that it survives
 * hibernation; memory mirrors it once loaded.
 */
export class ViewStore implements SentViews {
  private loaded: Map<number, Map<ResourceId, number>> | undefined;

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

  set(conn: number, resourceId: ResourceId, digest: number): void {
    let views = this.all().get(conn);
    if (!views) this.all().set(conn, (views = new Map()));
    views.set(resourceId, digest);
    this.sql.exec('insert or replace into client_views (conn, resource_id, digest) values (?, ?, ?)', conn, uuidToBytes(resourceId).buffer as ArrayBuffer, digest);
  }

  delete(conn: number, resourceId: ResourceId): void {
    this.all().get(conn)?.delete(resourceId);
    this.sql.exec('delete from client_views where conn = ? and resource_id = ?', conn, uuidToBytes(resourceId).buffer as ArrayBuffer);
  }

  drop(conn: number): void {
    this.all().delete(conn);
    this.sql.exec('delete from client_views where conn = ?', conn);
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
