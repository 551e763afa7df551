import { env, SELF } from 'cloudflare:test';
import type { Sql } from 'postgres';
import type { Change } from '../../../src/change.ts';
import { pgClient } from '../../../workers/account/database.ts';
import { SIGNATURE_HEADER, signBody } from '../../../src/signature.ts';
import { secretHash } from '../../../src/tokens.ts';

export { commit, Tx } from '../../support/recorded-transaction.ts';

export const BASE = 'http://edgeplane.test';

/**
 * How late after its instant an alarm's effect (a window opening, a token or flow ending) may reach
 * a device: what a user would not notice, with room for the runtime's alarm scheduling on a busy machine.
 */
export const ALARM_LATENESS_MS = 250;

/** The test Postgres, through the same Hyperdrive binding the objects use. */
export function database(): Sql {
  return pgClient(env.DB, 2);
}

type Values = Record<string, unknown>;

export const SECRET = env.REPLICATOR_SECRET!;

export async function postChanges(accountId: string, changes: readonly Change[], opts: { secret?: string; body?: string; signature?: string } = {}): Promise<Response> {
  const body = opts.body ?? JSON.stringify({ changes });
  const signature = opts.signature ?? (await signBody(opts.secret ?? SECRET, body, Math.floor(Date.now() / 1000)));
  return await SELF.fetch(`${BASE}/v1/accounts/${accountId}/changes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', [SIGNATURE_HEADER]: signature },
    body,
  });
}

export interface Applied {
  applied: number;
  skipped: number;
  position: string | null;
}

export async function deliver(accountId: string, changes: readonly Change[]): Promise<Applied> {
  const res = await postChanges(accountId, changes);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST changes: ${res.status} ${text}`);
  return JSON.parse(text) as Applied;
}

/** Random text that is safe in a token and an external id. */
export function randomText(n = 16): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => (b % 36).toString(36)).join('');
}

export async function tokenValues(accountId: string, type: 'client' | 'site', owner: string, extra: Values = {}): Promise<{ values: Values; secret: string }> {
  const secret = randomText(32);
  const salt = randomText(16);
  return {
    secret,
    values: {
      account_id: accountId,
      type,
      [type === 'client' ? 'actor_id' : 'site_id']: owner,
      secret_salt: salt,
      secret_hash: await secretHash(salt, secret),
      ...extra,
    },
  };
}
