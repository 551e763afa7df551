import { FlowIndex, type FlowRecord } from '../../src/flows/flow-index.ts';
import { bytesToUuid, uuidToBytes, type FlowId } from '../../src/ids.ts';

const blob = (id: string) => uuidToBytes(id).buffer as ArrayBuffer;
const uuid = <K extends string>(b: unknown) => bytesToUuid<K>(b as ArrayBuffer);

interface FlowRow {
  id: ArrayBuffer;
  client_id: ArrayBuffer;
  gateway_id: ArrayBuffer;
  resource_id: ArrayBuffer;
  policy_id: ArrayBuffer;
  token_id: ArrayBuffer;
  expires_at: number | null;
  remote_ip: string | null;
  country: string | null;
  created_at: number;
}

/** A row for Postgres `flows`, waiting in the outbox. */
export interface FlowLogEntry {
  id: FlowId;
  json: string;
}

/**
 * Live flows in SQLite (they outlive hibernation and restarts) and the outbox of flows still to
 * be appended to Postgres's `flows` audit log: creating a flow never waits for the database.
 */
export class FlowStore {
  /**
   * Entries in the outbox, once counted (every create_flow asks). enqueueLog is the last write of
   * create_flow's transaction, so a count it raised is never rolled back.
   */
  private backlog: number | undefined;

  constructor(private readonly sql: SqlStorage) {
    sql.exec(`create table if not exists flows (
      id blob primary key, client_id blob not null, gateway_id blob not null, resource_id blob not null,
      policy_id blob not null, token_id blob not null, expires_at integer, remote_ip text, country text,
      created_at integer not null default 0
    ) without rowid`);
    // Objects whose table predates created_at: their flows count as the oldest.
    if (sql.exec<{ n: number }>("select count(*) as n from pragma_table_info('flows') where name = 'created_at'").one().n === 0) {
      sql.exec('alter table flows add column created_at integer not null default 0');
    }
    sql.exec('create table if not exists flow_outbox (seq integer primary key autoincrement, id blob not null, json text not null)');
    sql.exec('create table if not exists flow_log_meta (id integer primary key check (id = 1), retention_at integer)');
  }

  load(): FlowIndex {
    const index = new FlowIndex();
    for (const r of this.sql.exec<Record<string, ArrayBuffer | string | number | null>>('select * from flows')) {
      const row = r as unknown as FlowRow;
      index.put({
        id: uuid(row.id),
        clientId: uuid(row.client_id),
        gatewayId: uuid(row.gateway_id),
        resourceId: uuid(row.resource_id),
        policyId: uuid(row.policy_id),
        tokenId: uuid(row.token_id),
        expiresAt: row.expires_at === null ? null : Number(row.expires_at),
        remoteIp: row.remote_ip,
        country: row.country,
        createdAt: Number(row.created_at),
      });
    }
    return index;
  }

  put(f: FlowRecord): void {
    this.sql.exec(
      'insert or replace into flows (id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at, remote_ip, country, created_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      blob(f.id),
      blob(f.clientId),
      blob(f.gatewayId),
      blob(f.resourceId),
      blob(f.policyId),
      blob(f.tokenId),
      f.expiresAt,
      f.remoteIp,
      f.country,
      f.createdAt,
    );
  }

  delete(id: FlowId): void {
    this.sql.exec('delete from flows where id = ?', blob(id));
  }

  clear(): void {
    this.sql.exec('delete from flows');
  }

  enqueueLog(id: FlowId, json: string): void {
    this.sql.exec('insert into flow_outbox (id, json) values (?, ?)', blob(id), json);
    if (this.backlog !== undefined) this.backlog++;
  }

  /** The oldest entries of the outbox, up to `limit`, with the last sequence number they cover. */
  pendingLog(limit: number): { entries: FlowLogEntry[]; upTo: number } {
    const rows = this.sql.exec<{ seq: number; id: ArrayBuffer; json: string }>('select seq, id, json from flow_outbox order by seq limit ?', limit).toArray();
    return { entries: rows.map((r) => ({ id: uuid(r.id), json: r.json })), upTo: rows.at(-1)?.seq ?? 0 };
  }

  ackLog(upTo: number): void {
    this.sql.exec('delete from flow_outbox where seq <= ?', upTo);
    this.backlog = undefined;
  }

  /** When the flow log's retention runs next (epoch ms), or null: not scheduled (docs/architecture.md#11-bounded). */
  get retentionAt(): number | null {
    const row = this.sql.exec<{ retention_at: number | null }>('select retention_at from flow_log_meta where id = 1').toArray()[0];
    return row?.retention_at ?? null;
  }

  set retentionAt(at: number | null) {
    this.sql.exec('insert into flow_log_meta (id, retention_at) values (1, ?) on conflict (id) do update set retention_at = excluded.retention_at', at);
  }

  get logBacklog(): number {
    this.backlog ??= this.sql.exec<{ n: number }>('select count(*) as n from flow_outbox').one().n;
    return this.backlog;
  }
}
