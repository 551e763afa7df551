import { rememberBounded } from '../../src/bounded-map.ts';

/**
 * Placement leases a Worker's isolate holds (docs/architecture.md#relays): the writer, answering
 * a client's connect with a relay, may let the Worker place up to RELAY_LEASE_CONNECTS more clients
 * of the same account and region on that relay for RELAY_LEASE_TTL_MS without asking it. The
 * writer counts the lease's connects against the relay's cap from the start; the Worker tells it
 * once, when the lease ends, how many it covered and the relay's last socket count. So a reconnect
 * storm costs the writer one request per lease, not two per device.
 */

/** A relay's socket count, and when the relay counted them (its clock): reports of one relay race, the latest count wins. */
export interface RelayCount {
  n: number;
  at: number;
}

/** What the writer hears when a lease ends: the placements it held (used or not), the relay's last count. */
export interface LeaseEnd {
  accountId: string;
  name: string;
  sockets: RelayCount | null;
  connects: number;
}

/** One lease, as `take` hands it to a connect and `answered` takes it back. */
export interface Lease {
  /** Its account and region (keyOf). */
  key: string;
  accountId: string;
  name: string;
  /** Connects the lease may still place. */
  left: number;
  /** Placements the writer reserved for it, all reported at its end. */
  reserved: number;
  inFlight: number;
  sockets: RelayCount | null;
  until: number;
  /** Reported to the writer already: nothing more is. */
  ended: boolean;
}

/** Leases remembered per isolate at most (the oldest ends unreported: the writer's reservation lapses on its own). */
const LEASES_MAX = 10_000;

const keyOf = (accountId: string, region: string) => `${accountId}|${region}`;

export class PlacementLeases {
  private readonly byKey = new Map<string, Lease>();
  /** The connect of this isolate asking the writer for an account and region: the others wait for its answer and lease. */
  private readonly asks = new Map<string, Promise<boolean>>();
  /** Accounts and regions whose last ask brought no lease (the writer holds their devices itself), until when: no waiting for each other's asks. */
  private readonly unleased = new Map<string, number>();

  constructor(private readonly max = LEASES_MAX) {}

  /**
   * A connect that found no lease to take: `done` when it is to ask the writer itself (call it
   * once the writer answered, with whether it granted a lease, after granting it); else `wait`,
   * the answer of the connect already asking: whether it brought a lease to take from (if not,
   * ask the writer without waiting again: it holds the account's devices itself). So many connects
   * at once cost one ask per lease, not one each (every ask reserves a lease's room at the writer).
   */
  ask(accountId: string, region: string, now: number, ttlMs: number): { done: (leased: boolean) => void } | { wait: Promise<boolean> } {
    const key = keyOf(accountId, region);
    let answeredOnce = false;
    // Once only: the caller answers after the writer's 307, and again (not leased) if it failed.
    const answer = (leased: boolean): boolean => {
      if (answeredOnce) return false;
      answeredOnce = true;
      if (leased) this.unleased.delete(key);
      else rememberBounded(this.unleased, key, now + ttlMs, this.max);
      return true;
    };
    const until = this.unleased.get(key);
    if (until !== undefined && until > now) return { done: answer };
    const pending = this.asks.get(key);
    if (pending) return { wait: pending };
    let resolve!: (leased: boolean) => void;
    const answered = new Promise<boolean>((r) => (resolve = r));
    rememberBounded(this.asks, key, answered, this.max);
    return {
      done: (leased) => {
        if (!answer(leased)) return;
        if (this.asks.get(key) === answered) this.asks.delete(key);
        resolve(leased);
      },
    };
  }

  /**
   * A new lease from the writer's answer. The one it replaces ends now, or, with connects of it
   * still in flight, once the last of them answered: its placements are released at the writer
   * only when its sockets are there to count (else the relay's room would be given out twice).
   */
  grant(accountId: string, region: string, name: string, connects: number, ttlMs: number, now: number): LeaseEnd | null {
    const key = keyOf(accountId, region);
    const old = this.byKey.get(key);
    rememberBounded(this.byKey, key, { key, accountId, name, left: connects, reserved: connects, inFlight: 0, sockets: null, until: now + ttlMs, ended: false }, this.max);
    if (!old) return null;
    old.left = 0;
    return old.inFlight === 0 ? end(old) : null;
  }

  /**
   * The relay the next connect of the account and region goes to without asking the writer, or
   * null. A lease past its time ends here (`ended`, to report) unless connects are still in flight.
   */
  take(accountId: string, region: string, now: number): { lease: Lease | null; ended: LeaseEnd | null } {
    const key = keyOf(accountId, region);
    const lease = this.byKey.get(key);
    if (!lease) return { lease: null, ended: null };
    if (lease.until <= now || lease.left === 0) {
      if (lease.inFlight > 0) return { lease: null, ended: null };
      this.byKey.delete(key);
      return { lease: null, ended: end(lease) };
    }
    lease.left--;
    lease.inFlight++;
    return { lease, ended: null };
  }

  /**
   * A leased connect's answer: the relay's socket count after a 101 (null: it refused the
   * device, whose placement goes back to the lease). A relay that failed (`broken`) ends the
   * lease: the next connect asks the writer. The lease's end, once its last connect answered, is
   * returned to report.
   */
  answered(lease: Lease, sockets: RelayCount | null, broken: boolean): LeaseEnd | null {
    lease.inFlight--;
    if (sockets !== null) {
      if (lease.sockets === null || sockets.at >= lease.sockets.at) lease.sockets = sockets;
    } else if (!broken && !lease.ended && this.byKey.get(lease.key) === lease) {
      // A connect the relay refused (a bad token) took no socket: its placement is the next one's.
      lease.left++;
    }
    if (broken) lease.left = 0;
    if (lease.ended || lease.left > 0 || lease.inFlight > 0) return null;
    if (this.byKey.get(lease.key) === lease) this.byKey.delete(lease.key);
    return end(lease);
  }

  get size(): number {
    return this.byKey.size;
  }
}

function end(lease: Lease): LeaseEnd {
  lease.ended = true;
  return { accountId: lease.accountId, name: lease.name, sockets: lease.sockets, connects: lease.reserved };
}
