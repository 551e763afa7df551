import type { AccountId } from '../../src/ids.ts';

/** The directory's shards: one per value of an account id's first two hex digits. */
export const DIRECTORY_SHARDS = 256;

export function shardOf(accountId: AccountId): string {
  return accountId.slice(0, 2);
}
