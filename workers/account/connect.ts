import type { AccountState } from '../../src/access/account-state.ts';
import { accountActive, actorActive } from '../../src/access/access.ts';
import type { ActorId, SiteId } from '../../src/ids.ts';
import type { TokenRecord } from '../../src/records.ts';
import { checkToken, type ParsedToken } from '../../src/tokens.ts';
import type { DeviceKind } from '../connect-params.ts';

export type Admission = { ok: true; token: TokenRecord } | { ok: false; error: string };

/**
 * Whether a device may connect with this token (PROTOCOL section 3): the token exists, is of the
 * kind the route serves, matches its salted hash, has not expired; the account is active; a
 * client token's actor is active, a site token's site exists. Every refusal is a 401.
 */
export async function admit(state: AccountState, kind: DeviceKind, presented: ParsedToken, nowMs: number): Promise<Admission> {
  const token = state.tokens.get(presented.tokenId);
  const check = await checkToken(token, kind === 'client' ? 'client' : 'site', presented.secret, nowMs);
  if (check === 'unknown' || check === 'mismatch') return { ok: false, error: 'invalid token' };
  if (check === 'wrong_type') return { ok: false, error: `not a ${kind === 'client' ? 'client' : 'site'} token` };
  if (check === 'expired') return { ok: false, error: 'token expired' };
  if (!accountActive(state)) return { ok: false, error: 'account disabled or deleted' };
  const owner = token!.ownerId;
  if (kind === 'client' && !actorActive(state, owner as ActorId)) return { ok: false, error: 'actor disabled or deleted' };
  if (kind === 'gateway' && !state.sites.has(owner as SiteId)) return { ok: false, error: 'site deleted' };
  return { ok: true, token: token! };
}
