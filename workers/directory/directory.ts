import { rememberBounded } from '../../src/bounded-map.ts';
import type { AccountId } from '../../src/ids.ts';
import { shardOf } from './shards.ts';

/** How long a positive answer is believed in this isolate: a deleted account's object refuses its devices meanwhile. */
export const KNOWN_FOR_MS = 60_000;
/**
 * How long a connect naming an account the directory does not know waits for its row to be
 * delivered (an account and its first token committed a moment ago): the replicator's usual lag,
 * with room. docs/protocol.md#account-directory.
 */
export const ACCOUNT_WAIT_MS = 1_000;
/** Accounts remembered per isolate, in each of the two maps below. */
const REMEMBERED_MAX = 10_000;

const knownUntil = new Map<AccountId, number>();
/** What this isolate last told the directory about each account, so that a batch costs no call when nothing changed. */
const told = new Map<AccountId, boolean>();

function shard(env: Env, accountId: AccountId) {
  return env.DIRECTORY.get(env.DIRECTORY.idFromName(shardOf(accountId)));
}

/**
 * Whether the edge knows the account (docs/architecture.md#a-device-connects): asked before a
 * connect reaches, and so creates, the account's object. Throws when the shard cannot answer.
 */
export async function isKnownAccount(env: Env, accountId: AccountId, opts: { waitMs?: number } = {}): Promise<boolean> {
  const nowMs = Date.now();
  const until = knownUntil.get(accountId);
  if (until !== undefined && until > nowMs) return true;
  const known = await shard(env, accountId).known(accountId, opts.waitMs ?? 0);
  if (known) rememberBounded(knownUntil, accountId, Date.now() + KNOWN_FOR_MS, REMEMBERED_MAX);
  else knownUntil.delete(accountId);
  return known;
}

/**
 * Tells the directory whether the account's object holds its account row after a batch. `always`:
 * the batch had an `accounts` change (another isolate may have told otherwise since); without it,
 * only when this isolate has not told the same before.
 */
export async function recordAccount(env: Env, accountId: AccountId, exists: boolean, always: boolean): Promise<void> {
  if (!always && told.get(accountId) === exists) return;
  await shard(env, accountId).record(accountId, exists);
  rememberBounded(told, accountId, exists, REMEMBERED_MAX);
  if (!exists) knownUntil.delete(accountId);
}
