import type { AccountState } from '../../src/access/account-state.ts';
import type { AccountId, TokenId } from '../../src/ids.ts';
import { type Lsn, parseLsn, type Position } from '../../src/lsn.ts';
import type { Database } from './database.ts';

/** The longest a connect waits for its token to arrive in the object's stream (docs/protocol.md#websocket-routes). */
export const FRESH_TOKEN_WAIT_MS = 5_000;
/** Connects of one object checking or waiting for a token the cache does not have, at most, at once. */
export const MAX_FRESH_TOKEN_CHECKS = 64;
/** Unknown token ids remembered as refused: a repeated forged id costs no query. */
export const REFUSED_TOKENS_MAX = 1_024;
export const REFUSED_TOKENS_TTL_MS = 10 * 60_000;

/**
 * What became of a token id the cache did not have when the device connected:
 * - `cached`: it is in the cache now (the batch with its INSERT arrived); admit against the cache;
 * - `refused`: no live row of this account has that id (or the stream passed the database's
 *   position without it): refuse at once (401);
 * - `busy`: too many such connects at once (503);
 * - `behind`: the row exists but the stream did not bring it within the bound (503).
 */
export type FreshTokenOutcome = 'cached' | 'refused' | 'busy' | 'behind';

interface Waiter {
  tokenId: TokenId;
  /** The database's WAL position when the row was found: past it, the stream has brought the row or its end. */
  lsn: Lsn;
  resolve(outcome: 'cached' | 'refused'): void;
}

/** A small LRU of ids with an expiry (Map order is insertion order: the first key is the oldest). */
export class RecentIds {
  private readonly until = new Map<string, number>();

  constructor(
    private readonly max: number,
    private readonly ttlMs: number,
  ) {}

  has(id: string, nowMs: number): boolean {
    const t = this.until.get(id);
    if (t === undefined) return false;
    if (t <= nowMs) {
      this.until.delete(id);
      return false;
    }
    return true;
  }

  add(id: string, nowMs: number): void {
    this.until.delete(id);
    this.until.set(id, nowMs + this.ttlMs);
    while (this.until.size > this.max) this.until.delete(this.until.keys().next().value!);
  }

  get size(): number {
    return this.until.size;
  }
}

/**
 * Whether a live token row with this id exists in this account, and the database's WAL position.
 * `now()` and `pg_current_wal_lsn()` keep Hyperdrive from answering from its query cache.
 */
async function lookupToken(db: Database, accountId: AccountId, tokenId: TokenId): Promise<{ live: boolean; lsn: Lsn }> {
  return await db.run('looking up a new token', async (sql) => {
    const [row] = await sql<{ live: boolean; lsn: string }[]>`
      select exists (
        select 1 from tokens
        where id = ${tokenId} and account_id = ${accountId} and deleted_at is null and (expires_at is null or expires_at > now())
      ) as live,
      (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text as lsn`;
    return { live: row!.live, lsn: parseLsn(row!.lsn) };
  });
}

/**
 * docs/protocol.md#websocket-routes: a token can be used as soon as its INSERT committed. When the
 * cache lacks the presented token id, one bounded query tells whether a live row exists; if not the
 * device is refused at once (and the id remembered, so that repeating it costs nothing); if so, the
 * connect waits for the batch that brings it (resolved by `settle`, no polling), at most
 * FRESH_TOKEN_WAIT_MS from the connect's start.
 */
export class FreshTokens {
  private readonly refused = new RecentIds(REFUSED_TOKENS_MAX, REFUSED_TOKENS_TTL_MS);
  private readonly waiters = new Set<Waiter>();
  /** Lookups in flight by token id: connects presenting the same id at once share one query. */
  private readonly lookups = new Map<TokenId, Promise<{ live: boolean; lsn: Lsn }>>();
  private checks = 0;

  constructor(private readonly db: Database) {}

  /**
   * `state()` is the object's current state (it may be rebuilt while this waits); `hydratedSince` whether the object loaded its account from Postgres after the
   * connect began (then the cache already reflects every committed token: no query is needed).
   */
  async arrival(accountId: AccountId, tokenId: TokenId, state: () => AccountState | undefined, opts: { startedAt: number; hydratedSince: boolean }): Promise<FreshTokenOutcome> {
    if (state()?.tokens.has(tokenId)) return 'cached';
    if (opts.hydratedSince || this.refused.has(tokenId, Date.now())) return 'refused';
    if (this.checks >= MAX_FRESH_TOKEN_CHECKS) return 'busy';
    this.checks++;
    const deadline = opts.startedAt + FRESH_TOKEN_WAIT_MS;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let waiter: Waiter | undefined;
    let done = false;
    const check = async (): Promise<'cached' | 'refused'> => {
      const found = await this.lookup(accountId, tokenId);
      if (!found.live) return 'refused';
      // The bound passed while the database answered: nobody waits any more.
      if (done) return 'refused';
      return await new Promise<'cached' | 'refused'>((resolve) => {
        waiter = { tokenId, lsn: found.lsn, resolve };
        // A batch may have brought it while the database answered. (The stored position is not
        // compared here: only a batch applied from now on is known to come from the same stream.)
        if (state()?.tokens.has(tokenId)) resolve('cached');
        else this.waiters.add(waiter);
      });
    };
    try {
      const timeout = new Promise<'behind'>((resolve) => {
        timer = setTimeout(() => resolve('behind'), Math.max(0, deadline - Date.now()));
      });
      const outcome = await Promise.race([check(), timeout]);
      // Also a token the stream passed without bringing it: gone since the lookup.
      if (outcome === 'refused') this.refused.add(tokenId, Date.now());
      return outcome;
    } finally {
      done = true;
      clearTimeout(timer);
      if (waiter) this.waiters.delete(waiter);
      this.checks--;
    }
  }

  private lookup(accountId: AccountId, tokenId: TokenId): Promise<{ live: boolean; lsn: Lsn }> {
    let pending = this.lookups.get(tokenId);
    if (!pending) {
      pending = lookupToken(this.db, accountId, tokenId).then(
        (found) => {
          // In the same step as the lookup leaves the map, so that no later connect queries again.
          if (!found.live) this.refused.add(tokenId, Date.now());
          this.lookups.delete(tokenId);
          return found;
        },
        (err: unknown) => {
          this.lookups.delete(tokenId);
          throw err;
        },
      );
      this.lookups.set(tokenId, pending);
    }
    return pending;
  }

  /**
   * After a batch is stored, with the position it brought the object to: wake the connects whose
   * token arrived, and refuse those whose database position the stream has passed without it (the
   * token was deleted or expired meanwhile).
   */
  settle(state: AccountState, position: Position | null): void {
    for (const w of this.waiters) this.settleOne(w, state, position);
  }

  private settleOne(w: Waiter, state: AccountState, position: Position | null): void {
    if (state.tokens.has(w.tokenId)) w.resolve('cached');
    else if (position && position.lsn >= w.lsn) w.resolve('refused');
    else return;
    this.waiters.delete(w);
  }

  /** Connects checking or waiting now. */
  get pending(): number {
    return this.checks;
  }

  /** Connects whose token exists and that wait for its batch. */
  get waiting(): number {
    return this.waiters.size;
  }
}
