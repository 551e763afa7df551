import { errorSummary } from '../../src/errors.ts';
import type { AccountId } from '../../src/ids.ts';
import { formatPosition, parsePosition } from '../../src/lsn.ts';
import { errorResponse } from '../http-errors.ts';
import { log } from '../log.ts';
import type { AlarmClock } from './alarm-clock.ts';
import type { RelayCount } from './relay-leases.ts';
import type { MetaStore } from './meta-store.ts';
import type { RelayConfig } from './relay-config.ts';
import { LOCAL_REGION, locationHintOf, placeDevice, REGION_HEADER, regionOfRelay, relayName, relayRetryDelayMs, type RelaySlot } from './relay-placement.ts';
import { atOrBefore, type RelayAck, type RelayBatch, type RelayCalls, type RelayPeer, type RelayStore, type WriterCalls } from './relay-store.ts';

/** A relay reports its sockets to the writer in this header of its 101, as `<count> <its Date.now()>` (docs/architecture.md#relays). */
export const RELAY_SOCKETS_HEADER = 'x-edgeplane-relay-sockets';

/** The header's value for a count taken now. */
export function socketsHeader(n: number, at: number): string {
  return `${n} ${at}`;
}

function parseSockets(value: string | null): RelayCount | null {
  const [n, at] = (value ?? '').split(' ').map(Number);
  return Number.isSafeInteger(n) && Number.isSafeInteger(at) && n! >= 0 ? { n: n!, at: at! } : null;
}
/** The writer's answer to a connect it placed on a relay: the relay's name, in a 307 the Worker follows. */
export const RELAY_NAME_HEADER = 'x-edgeplane-relay';
/**
 * Set by the Worker on a client's connect (and dropped when a device sends it): it may take a
 * placement lease. The writer's 307 then carries, in the same header, how many more connects of
 * the region the Worker may place on that relay without asking (docs/architecture.md#relays).
 */
export const RELAY_LEASE_HEADER = 'x-edgeplane-relay-lease';
/** Connects one lease covers at most, and how long a Worker's isolate uses it. */
export const RELAY_LEASE_CONNECTS = 64;
export const RELAY_LEASE_TTL_MS = 10_000;
/**
 * How long a placement counts against its relay without the Worker's report of the relay's
 * answer (a Worker that died in between): the cap holds while connects are in flight, and a lost
 * report does not fill a relay for ever.
 */
const PLACING_TTL_MS = 30_000;
/** How long the writer waits for a relay to acknowledge a batch before it retries from its alarm. */
const RELAY_FORWARD_TIMEOUT_MS = 2_000;

/** A call to a relay, answered with `late` if the relay does not answer within RELAY_FORWARD_TIMEOUT_MS: a relay that hangs holds nothing of its writer's. */
export async function relayCall<T>(call: Promise<T>, late: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(late), RELAY_FORWARD_TIMEOUT_MS);
  });
  try {
    return await Promise.race([call, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The objects of an account: its writer, named for the account, and its relays, named for their region and number (placed near that region). */
export function relayStub(env: Env, name: string): RelayCalls {
  const hint = locationHintOf(regionOfRelay(name));
  return env.ACCOUNT.get(env.ACCOUNT.idFromName(name), hint ? { locationHint: hint } : undefined) as unknown as RelayCalls;
}

export function writerStub(env: Env, accountId: string): WriterCalls {
  return env.ACCOUNT.get(env.ACCOUNT.idFromName(accountId)) as unknown as WriterCalls;
}

/** A new relay could not be adopted (unreachable, or an instance that just retired and has yet to reset): the device retries. */
export class RelayAdoptionError extends Error {
  override name = 'RelayAdoptionError';
}

/** What the writer's relay side reads of its object. */
export interface WriterContext {
  ctx: DurableObjectState;
  relays: RelayStore;
  config: RelayConfig;
  meta: MetaStore;
  clock: AlarmClock;
  /** Sockets the writer itself holds. */
  sockets(): number;
  /** The stub of one of the account's relays (relayStub; a seam the fault tests cut). */
  relay(name: string): RelayCalls;
}

/**
 * The writer's side of relays (docs/architecture.md#relays): where a connecting device goes, the
 * adoption of a new relay, and the forwarding of each stored batch, with retries from the alarm.
 */
export class RelayWriter {
  /**
   * Connects placed on a relay whose answer the Worker has not reported yet, by relay name (the
   * times they were placed, oldest first). Placement counts them with the relay's last report, so
   * that connects in flight together respect the cap.
   */
  private readonly placing = new Map<string, { region: string; n: number; at: number[] }>();
  /** Relays being adopted, so that concurrent connects to a new relay adopt it once. */
  private readonly adopting = new Map<string, Promise<RelayPeer>>();
  /** When each relay took the count the writer holds (the relay's clock): an older one, reported late, is dropped. */
  private readonly countedAt = new Map<string, number>();

  constructor(private readonly w: WriterContext) {}

  /**
   * Where a connecting device goes: null when the writer holds it; else a 307 naming the relay,
   * which the Worker follows (followPlacement), so that the socket runs between the Worker and the
   * relay, never through the writer (whose object may be on another continent).
   */
  async place(accountId: AccountId, request: Request, gatewayHome: string | null): Promise<Response | null> {
    const { relays, ctx, config } = this.w;
    const header = request.headers.get(REGION_HEADER);
    const region = header !== null && /^[A-Z]{2}$/.test(header) ? header : LOCAL_REGION;
    const now = Date.now();
    const slots = new Map<string, RelaySlot>([...relays.peers()].map(([name, p]) => [name, { region: p.region, n: p.n, sockets: p.sockets }]));
    for (const [name, pending] of this.placing) {
      while (pending.at.length > 0 && now - pending.at[0]! > PLACING_TTL_MS) pending.at.shift();
      if (pending.at.length === 0) {
        this.placing.delete(name);
        continue;
      }
      const slot = slots.get(name);
      slots.set(name, { region: pending.region, n: pending.n, sockets: (slot?.sockets ?? 0) + pending.at.length });
    }
    // A reconnecting gateway goes back to the object that owns its flows (its init lists them), cap or not.
    const homePeer = gatewayHome === null ? undefined : relays.peers().get(gatewayHome);
    const placed =
      gatewayHome === ''
        ? { kind: 'writer' as const }
        : homePeer
          ? { kind: 'relay' as const, region: homePeer.region, n: homePeer.n }
          : placeDevice(this.w.config, region, { sockets: this.w.sockets(), home: relays.home }, [...slots.values()]);
    if (placed.kind === 'writer') {
      if (relays.home === null) ctx.storage.transactionSync(() => (relays.home = region));
      return null;
    }
    const name = relayName(accountId, placed.region, placed.n);
    // A lease only for a client placed by the cap (a gateway goes where its flows are), and only
    // out of the room left under the cap: its connects count against the relay like this one.
    // Not while two leases' worth of placements on it are in flight already: connects asking at
    // once must not reserve the relay's room many times over (and push devices to new relays).
    const pending = this.placing.get(name) ?? { region: placed.region, n: placed.n, at: [] };
    const room = Math.min(config.maxSockets - (slots.get(name)?.sockets ?? 0) - 1, 2 * RELAY_LEASE_CONNECTS - pending.at.length);
    const lease = request.headers.get(RELAY_LEASE_HEADER) === '1' && gatewayHome === null ? Math.max(0, Math.min(RELAY_LEASE_CONNECTS, room)) : 0;
    // Counted before the first await: the next connect's placement sees it.
    for (let i = 0; i <= lease; i++) pending.at.push(now);
    this.placing.set(name, pending);
    try {
      if (!relays.peers().has(name)) await this.adopt(accountId, name, placed.region, placed.n, this.w.relay(name));
    } catch (err) {
      this.release(name, 1 + lease);
      throw new RelayAdoptionError(`adopting relay ${name} failed: ${errorSummary(err)}`, { cause: err });
    }
    const headers: Record<string, string> = { [RELAY_NAME_HEADER]: name };
    if (lease > 0) headers[RELAY_LEASE_HEADER] = String(lease);
    return new Response(null, { status: 307, headers });
  }

  /**
   * The Worker's report of placed connects: the relay answered (with its socket count after its
   * last 101). `connects`: how many placements the report ends (a lease's, used or not, at once).
   */
  placed(name: string, sockets: RelayCount | null, connects = 1): void {
    this.release(name, connects);
    if (sockets !== null) this.counted(name, sockets);
  }

  /**
   * A relay's socket count, from a placement's report or the relay's own after closes. Reports
   * of one relay race each other (each sent after its own answer): a late one carries an older
   * count, and taking it would give the relay's room out again.
   */
  counted(name: string, sockets: RelayCount): void {
    const current = this.w.relays.peers().get(name);
    if (!current || sockets.at < (this.countedAt.get(name) ?? Number.NEGATIVE_INFINITY)) return;
    this.countedAt.set(name, sockets.at);
    if (sockets.n !== current.sockets) this.w.ctx.storage.transactionSync(() => this.w.relays.putPeer({ ...current, sockets: sockets.n }));
  }

  private release(name: string, connects: number): void {
    const pending = this.placing.get(name);
    pending?.at.splice(0, connects);
    if (pending?.at.length === 0) this.placing.delete(name);
  }

  /**
   * A relay that holds no socket and no flow asks to retire (docs/architecture.md#relays): refused
   * while a connect placed on it is in flight or it is being adopted; else it is forgotten, and a
   * later device of its region adopts it anew (it re-hydrates). True too for a relay already
   * forgotten: its earlier answer was lost.
   */
  retire(name: string): boolean {
    const { relays, ctx, meta } = this.w;
    if (this.placing.has(name) || this.adopting.has(name)) return false;
    if (!relays.peers().has(name)) return true;
    ctx.storage.transactionSync(() => {
      relays.removePeer(name);
      relays.prune(this.w.config.logMaxBatches);
    });
    this.countedAt.delete(name);
    log.info({ component: 'relay', account: meta.accountId, relay: name, position: meta.position && formatPosition(meta.position) }, 'a relay retired');
    return true;
  }

  /** A new relay of the account, once however many connects wait for it. */
  private adopt(accountId: AccountId, name: string, region: string, n: number, stub: RelayCalls): Promise<RelayPeer> {
    let adoption = this.adopting.get(name);
    if (!adoption) {
      adoption = (async () => {
        await stub.relayAdopt(accountId, name);
        // From now on every batch is logged for it: it joins at a position at or after this one.
        const peer: RelayPeer = { name, region, n, sockets: 0, acked: this.w.meta.position, failures: 0, retryAt: null };
        this.w.ctx.storage.transactionSync(() => this.w.relays.putPeer(peer));
        log.info({ component: 'relay', account: accountId, relay: name }, 'a new relay');
        return peer;
      })().finally(() => this.adopting.delete(name));
      this.adopting.set(name, adoption);
    }
    return adoption;
  }

  /**
   * Sends a stored batch (null: only the writer's position, for a relay to catch up to) to every
   * relay in step, in parallel, each bounded in time; a relay that does not acknowledge is retried
   * from the alarm with backoff (it catches up from the log by position). A relay with a retry
   * pending gets no new batch meanwhile: a relay that hangs costs the account's stream one wait
   * of RELAY_FORWARD_TIMEOUT_MS, not one per batch. `only`: these relays, whatever their state.
   */
  async forward(batch: Omit<RelayBatch, 'stream'> | null, only?: ReadonlySet<string>): Promise<void> {
    const { relays, meta, ctx } = this.w;
    const peers = [...relays.peers().values()].filter((p) => (only ? only.has(p.name) : p.retryAt === null));
    const accountId = meta.accountId;
    const stream = relays.stream;
    if (peers.length === 0 || accountId === null || stream === null) return;
    const at = meta.position;
    const sent: RelayBatch = batch ? { stream, ...batch } : { stream, after: at && formatPosition(at), position: at && formatPosition(at), changes: [] };
    const acks = await Promise.all(
      peers.map(async (p): Promise<RelayAck> => {
        try {
          return await relayCall(this.w.relay(p.name).relayBatch(accountId, p.name, sent), { ok: false, error: `no answer within ${RELAY_FORWARD_TIMEOUT_MS} ms` });
        } catch (err) {
          return { ok: false, error: errorSummary(err) };
        }
      }),
    );
    const now = Date.now();
    ctx.storage.transactionSync(() => {
      peers.forEach((p, i) => {
        const ack = acks[i]!;
        // Retired while its forward was in flight: it stays retired.
        const current = relays.peers().get(p.name);
        if (!current) return;
        if (ack.ok) relays.putPeer({ ...current, acked: ack.position === null ? null : parsePosition(ack.position), failures: 0, retryAt: null });
        else {
          const failures = current.failures + 1;
          relays.putPeer({ ...current, failures, retryAt: now + relayRetryDelayMs(failures) });
          log.warn({ component: 'relay', account: accountId, relay: p.name, failures, err: ack.error }, 'a relay did not acknowledge a batch; retrying from the alarm');
        }
      });
      relays.prune(this.w.config.logMaxBatches);
    });
    await this.w.clock.noLaterThan(relays.retryAt);
  }

  /**
   * A new instance of the writer: a relay behind its position with no retry due is one whose
   * forward an earlier instance never finished (it ended between storing a batch and recording
   * the acknowledgements). The replicator had no answer for that batch and sends it again, which
   * wakes this instance, but all stale, so nothing would forward it: the relay is due at once.
   */
  async resumeForwards(now: number): Promise<void> {
    const { relays, meta, ctx } = this.w;
    const unfinished = [...relays.peers().values()].filter((p) => p.retryAt === null && !atOrBefore(meta.position, p.acked));
    if (unfinished.length === 0) return;
    ctx.storage.transactionSync(() => {
      for (const p of unfinished) relays.putPeer({ ...p, retryAt: now });
    });
    log.warn(
      { component: 'relay', account: meta.accountId, position: meta.position && formatPosition(meta.position), relays: unfinished.length },
      'relays behind a forward an earlier instance did not finish: catching them up',
    );
    await this.w.clock.noLaterThan(now);
  }

  /**
   * The alarm: relays due for a retry get the writer's position and catch up to it; those back in
   * step get the account's gateway list too, whose changes skipped them meanwhile.
   */
  async retryDue(now: number): Promise<void> {
    const { relays, meta } = this.w;
    const due = new Set([...relays.peers().values()].filter((p) => p.retryAt !== null && p.retryAt <= now).map((p) => p.name));
    if (due.size === 0) return;
    await this.forward(null, due);
    const accountId = meta.accountId;
    const back = [...due].filter((name) => relays.peers().get(name)?.retryAt === null);
    if (accountId === null || back.length === 0) return;
    const list = relays.presence;
    await Promise.allSettled(back.map((name) => relayCall(this.w.relay(name).relayPresence(accountId, name, list), undefined)));
  }
}

/** The Worker's connect of a device to a relay: the relay's answer for the device, and its socket count after a 101 (else null). */
export async function connectRelay(env: Env, accountId: string, name: string, request: Request): Promise<{ response: Response; sockets: RelayCount | null }> {
  let relayed: Response;
  try {
    relayed = await relayStub(env, name).fetch(request);
  } catch (err) {
    log.warn({ component: 'relay', account: accountId, relay: name, err: errorSummary(err) }, 'a relay did not answer a connect');
    relayed = errorResponse(503, { error: 'relay unavailable, retry later' });
  }
  const sockets = relayed.status === 101 ? parseSockets(relayed.headers.get(RELAY_SOCKETS_HEADER)) : null;
  const response = relayed.status === 101 ? new Response(null, { status: 101, webSocket: relayed.webSocket }) : relayed;
  return { response, sockets };
}

/** The writer hears how placed connects ended (relayPlaced): `connects` placements, the relay's last count. */
export function reportPlaced(env: Env, accountId: string, name: string, sockets: RelayCount | null, connects = 1): Promise<void> {
  return writerStub(env, accountId).relayPlaced(accountId, name, sockets, connects);
}

/**
 * The Worker's side of a connect the writer placed on a relay (its 307): the same upgrade goes to
 * the relay, whose answer goes to the device, and the writer hears how it ended (`report`, which
 * the Worker runs after the answer, with waitUntil).
 */
export async function followPlacement(env: Env, accountId: string, request: Request, answer: Response): Promise<{ response: Response; report: (() => Promise<void>) | null }> {
  const name = answer.status === 307 ? answer.headers.get(RELAY_NAME_HEADER) : null;
  if (name === null || !name.startsWith(`${accountId}/relay/`)) return { response: answer, report: null };
  const { response, sockets } = await connectRelay(env, accountId, name, request);
  return { response, report: () => reportPlaced(env, accountId, name, sockets) };
}

/** The placement lease a writer's 307 grants: a relay of the account, and how many connects more (null: none). */
export function leaseOf(accountId: string, answer: Response): { relay: string; connects: number } | null {
  const relay = answer.status === 307 ? answer.headers.get(RELAY_NAME_HEADER) : null;
  const connects = Number(answer.headers.get(RELAY_LEASE_HEADER) ?? 0);
  if (relay === null || !relay.startsWith(`${accountId}/relay/`)) return null;
  return Number.isSafeInteger(connects) && connects > 0 ? { relay, connects: Math.min(connects, RELAY_LEASE_CONNECTS) } : null;
}
