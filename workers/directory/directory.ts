import type { AccountId } from '../../src/ids.ts';
import { shardOf } from './shards.ts';

/** How long a positive answer is believed in this isolate: a deleted account's object refuses its devices meanwhile. */
export const KNOWN_FOR_MS = 60_000;
/** Accounts remembered per isolate, in each of the two maps below. */
const REMEMBERED_MAX = 10_000;

const knownUntil = new Map<AccountId, number>();
/** What this isolate last told the directory about each account, so that a batch costs no call when nothing changed. */
const told = new Map<AccountId, boolean>();

function remember<V>(map: Map<AccountId, V>, key: AccountId, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > REMEMBERED_MAX) map.delete(map.keys().next().value!);
}

function shard(env: Env, accountId: AccountId) {
  return env.DIRECTORY.get(env.DIRECTORY.idFromName(shardOf(accountId)));
}

/**
 * Whether the edge knows the account (docs/architecture.md#a-device-connects): asked before a
 * connect reaches, and so creates, the account's object. Throws when the shard cannot answer.
 */
export async function isKnownAccount(env: Env, accountId: AccountId, nowMs = Date.now()): Promise<boolean> {
  const until = knownUntil.get(accountId);
  if (until !== undefined && until > nowMs) return true;
  const known = await shard(env, accountId).known(accountId);
  if (known) remember(knownUntil, accountId, nowMs + KNOWN_FOR_MS);
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
  remember(told, accountId, exists);
  if (!exists) knownUntil.delete(accountId);
}
