import type { Change } from '../../src/change.ts';
import { comparePositions, formatPosition, parsePosition, type Position } from '../../src/lsn.ts';
import type { RelayCount } from './relay-leases.ts';
import type { RelaySlot } from './relay-placement.ts';
import type { FlowHandoff, HandoffResult, RemoteGateway } from './remote-gateways.ts';

/** One applied batch as the writer forwards it to its relays (docs/architecture.md#relays). */
export interface RelayBatch {
  /** The writer's stream: a new one begins with each hydration of the writer. */
  stream: string;
  /** The writer's position before the batch (null: none yet), and after it. */
  after: string | null;
  position: string | null;
  changes: Change[];
}

/** A relay's acknowledged position, or that it must join again (another stream). */
export type RelayAck = { ok: true; position: string | null } | { ok: false; error: string };

/** What a relay needs to start following the writer: its stream, position and epoch at the join. */
export interface RelayJoin {
  stream: string;
  position: string | null;
  epoch: string | null;
  /** The account's gateways and the objects that hold them. */
  gateways: RemoteGateway[];
}

/** Batches since a position, or null when the writer's log no longer covers it (the relay re-hydrates). */
export type CatchUp = { batches: RelayBatch[]; more: boolean } | null;

export interface RelayPeer extends RelaySlot {
  name: string;
  acked: Position | null;
  failures: number;
  retryAt: number | null;
}

const positionText = (p: Position | null) => (p === null ? '' : formatPosition(p));
const positionOf = (text: string) => (text === '' ? null : parsePosition(text));

/** a <= b, with null as the beginning. */
export function atOrBefore(a: Position | null, b: Position | null): boolean {
  if (a === null) return true;
  return b !== null && comparePositions(a, b) <= 0;
}

/**
 * The relay side of an object in SQLite: on the writer, its relays (acknowledged positions,
 * socket counts, retries) and the log of recent batches they catch up from; on a relay, its role,
 * name and the writer's stream it follows. Small facts are kept in their own table so that the
 * writer's meta and this stay independent.
 */
export class RelayStore {
  private readonly facts = new Map<string, string | null>();
  private peers_: Map<string, RelayPeer> | undefined;

  constructor(private readonly sql: SqlStorage) {
    sql.exec(`create table if not exists relay_facts (key text primary key, value text not null) without rowid;
      create table if not exists relay_peers (name text primary key, region text not null, n integer not null, sockets integer not null,
        acked text not null, failures integer not null, retry_at integer) without rowid;
      create table if not exists relay_batches (batch integer primary key, after text not null, position text not null, bytes integer not null);
      create table if not exists relay_changes (batch integer not null, i integer not null, change text not null, primary key (batch, i)) without rowid;
      create table if not exists relay_gateway_homes (gateway text primary key, holder text not null) without rowid;`);
  }

  private fact(key: string): string | null {
    if (!this.facts.has(key)) this.facts.set(key, this.sql.exec<{ value: string }>('select value from relay_facts where key = ?', key).toArray()[0]?.value ?? null);
    return this.facts.get(key)!;
  }

  private setFact(key: string, value: string | null): void {
    if (value === null) this.sql.exec('delete from relay_facts where key = ?', key);
    else this.sql.exec('insert or replace into relay_facts (key, value) values (?, ?)', key, value);
    this.facts.set(key, value);
  }

  /** After a failed transaction: forget what memory holds. */
  reset(): void {
    this.facts.clear();
    this.peers_ = undefined;
  }

  /** Set on a relay: the writer's name (its account id) and the relay's own name. */
  get relayOf(): { accountId: string; name: string } | null {
    const accountId = this.fact('relay_account');
    const name = this.fact('relay_name');
    return accountId === null || name === null ? null : { accountId, name };
  }
  set relayOf(r: { accountId: string; name: string }) {
    this.setFact('relay_account', r.accountId);
    this.setFact('relay_name', r.name);
  }

  /** The writer's stream: its own (writer) or the one it follows (relay). */
  get stream(): string | null {
    return this.fact('stream');
  }
  set stream(s: string | null) {
    this.setFact('stream', s);
  }

  /** The region of the first device the writer held itself (auto placement keeps one region there). */
  get home(): string | null {
    return this.fact('home');
  }
  set home(r: string | null) {
    this.setFact('home', r);
  }

  /** On a relay: since when it has held no socket (null: it holds some, or has not told the writer it holds none). */
  get idleSince(): number | null {
    const v = this.fact('idle_since');
    return v === null ? null : Number(v);
  }
  set idleSince(at: number | null) {
    this.setFact('idle_since', at === null ? null : String(at));
  }

  /** The account's online gateways by holder: the writer's list, or the last one it sent this relay. */
  get presence(): RemoteGateway[] {
    const v = this.fact('presence');
    return v === null ? [] : (JSON.parse(v) as RemoteGateway[]);
  }
  set presence(list: RemoteGateway[]) {
    this.setFact('presence', JSON.stringify(list));
  }

  /** The object that last held a gateway (by site and external id): it owns the gateway's flows. */
  gatewayHome(siteId: string, externalId: string): string | null {
    return this.sql.exec<{ holder: string }>('select holder from relay_gateway_homes where gateway = ?', `${siteId}/${externalId}`).toArray()[0]?.holder ?? null;
  }
  setGatewayHome(siteId: string, externalId: string, holder: string): void {
    this.sql.exec('insert or replace into relay_gateway_homes values (?, ?)', `${siteId}/${externalId}`, holder);
  }

  peers(): Map<string, RelayPeer> {
    if (!this.peers_) {
      this.peers_ = new Map();
      const rows = this.sql
        .exec<{ name: string; region: string; n: number; sockets: number; acked: string; failures: number; retry_at: number | null }>('select * from relay_peers')
        .toArray();
      for (const r of rows)
        this.peers_.set(r.name, { name: r.name, region: r.region, n: r.n, sockets: r.sockets, acked: positionOf(r.acked), failures: r.failures, retryAt: r.retry_at });
    }
    return this.peers_;
  }

  putPeer(p: RelayPeer): void {
    this.sql.exec('insert or replace into relay_peers values (?, ?, ?, ?, ?, ?, ?)', p.name, p.region, p.n, p.sockets, positionText(p.acked), p.failures, p.retryAt);
    this.peers().set(p.name, p);
  }

  /** On the writer: a relay retired; nothing is forwarded or logged for it, and the gateways it last held have no home. */
  removePeer(name: string): void {
    this.sql.exec('delete from relay_peers where name = ?', name);
    this.sql.exec('delete from relay_gateway_homes where holder = ?', name);
    this.peers().delete(name);
  }

  /** The earliest retry due among the relays, if any. */
  get retryAt(): number | null {
    let at: number | null = null;
    for (const p of this.peers().values()) if (p.retryAt !== null && (at === null || p.retryAt < at)) at = p.retryAt;
    return at;
  }

  /** Appends a batch the writer applied (inside its storage transaction) and keeps the log bounded. */
  append(after: Position | null, position: Position, changes: readonly Change[], maxBatches: number): void {
    const texts = changes.map((c) => JSON.stringify(c));
    const bytes = texts.reduce((n, t) => n + t.length, 0);
    const batch = (this.sql.exec<{ b: number | null }>('select max(batch) as b from relay_batches').one().b ?? 0) + 1;
    this.sql.exec('insert into relay_batches values (?, ?, ?, ?)', batch, positionText(after), positionText(position), bytes);
    for (const [i, t] of texts.entries()) this.sql.exec('insert into relay_changes values (?, ?, ?)', batch, i, t);
    this.prune(maxBatches);
  }

  /** Drops batches every relay acknowledged, and the oldest beyond `maxBatches` (a relay behind them re-hydrates). */
  prune(maxBatches: number): void {
    let floor: Position | null | undefined;
    for (const p of this.peers().values()) if (floor === undefined || atOrBefore(p.acked, floor)) floor = p.acked;
    const headers = this.sql.exec<{ batch: number; position: string }>('select batch, position from relay_batches order by batch').toArray();
    let drop = 0;
    for (const [i, h] of headers.entries()) {
      const acknowledged = floor !== undefined && floor !== null && atOrBefore(positionOf(h.position), floor);
      if (acknowledged || headers.length - i > maxBatches) drop = h.batch;
      else break;
    }
    if (drop === 0) return;
    this.sql.exec('delete from relay_batches where batch <= ?', drop);
    this.sql.exec('delete from relay_changes where batch <= ?', drop);
  }

  /** A new stream: the old log's positions mean nothing in it. */
  restart(stream: string): void {
    this.sql.exec('delete from relay_batches');
    this.sql.exec('delete from relay_changes');
    this.stream = stream;
  }

  /**
   * The batches after `since`, in order, at most `limit`; null when the log does not reach back to
   * it (pruned, or the writer is past it with nothing logged).
   */
  since(since: Position | null, writerAt: Position | null, limit: number): CatchUp {
    const stream = this.stream ?? '';
    const headers = this.sql.exec<{ batch: number; after: string; position: string }>('select batch, after, position from relay_batches order by batch').toArray();
    const newer = headers.filter((h) => !atOrBefore(positionOf(h.position), since));
    if (newer.length === 0) return atOrBefore(writerAt, since) ? { batches: [], more: false } : null;
    if (!atOrBefore(positionOf(newer[0]!.after), since)) return null;
    const taken = newer.slice(0, limit);
    const batches = taken.map((h) => ({
      stream,
      after: h.after === '' ? null : h.after,
      position: h.position,
      changes: this.sql
        .exec<{ change: string }>('select change from relay_changes where batch = ? order by i', h.batch)
        .toArray()
        .map((r) => JSON.parse(r.change) as Change),
    }));
    return { batches, more: newer.length > limit };
  }
}

/**
 * What a writer and its relays call on each other (internal RPC, explicit so that the stub's
 * inferred types stay shallow: a Change holds arbitrary JSON rows).
 */
export interface WriterCalls {
  relayJoin(accountId: string, name: string): Promise<RelayJoin>;
  relayCatchUp(accountId: string, name: string, stream: string, since: string | null): Promise<CatchUp>;
  relaySockets(accountId: string, name: string, sockets: RelayCount): Promise<void>;
  relayPlaced(accountId: string, name: string, sockets: RelayCount | null, connects?: number): Promise<void>;
  relayRetire(accountId: string, name: string): Promise<boolean>;
  gatewayPresence(accountId: string, holder: string, gateway: Omit<RemoteGateway, 'holder'>, online: boolean): Promise<void>;
  takeFlow(accountId: string, handoff: FlowHandoff): Promise<HandoffResult>;
}

export interface RelayCalls {
  relayAdopt(accountId: string, name: string): Promise<void>;
  relayBatch(accountId: string, name: string, batch: RelayBatch): Promise<RelayAck>;
  relayPresence(accountId: string, name: string, gateways: RemoteGateway[]): Promise<void>;
  takeFlow(accountId: string, handoff: FlowHandoff): Promise<HandoffResult>;
  fetch(request: Request): Promise<Response>;
}
