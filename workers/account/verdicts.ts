import type { AccountState } from '../../src/access/account-state.ts';
import { accountActive, actorActive } from '../../src/access/access.ts';
import type { TokenId } from '../../src/ids.ts';
import { CLOSE, type Attachment } from './sockets.ts';

export type Verdict = { code: number; reason: string } | null;

function tokenVerdict(state: AccountState, tokenId: TokenId, nowMs: number): Verdict {
  const token = state.tokens.get(tokenId);
  if (!token || (token.expiresAt !== null && token.expiresAt <= nowMs)) return { code: CLOSE.tokenGone, reason: 'token deleted or expired' };
  return null;
}

/**
 * Whether a connected device may stay: null, or the close code and reason (docs/protocol.md#websocket-routes).
 * For a client, null means what `clientActive` checks holds (src/access/access.ts `accessGrants`' standing).
 */
export function socketVerdict(state: AccountState, a: Attachment, nowMs: number): Verdict {
  const token = tokenVerdict(state, a.tokenId, nowMs);
  if (token) return token;
  if (!accountActive(state)) return { code: CLOSE.accessRevoked, reason: 'account disabled or deleted' };
  if (a.kind === 'client') {
    if (!actorActive(state, a.actorId)) return { code: CLOSE.accessRevoked, reason: 'actor disabled or deleted' };
    // A client moved to another actor is, for this socket (its token is the old actor's), gone.
    if (state.clients.get(a.clientId)?.actorId !== a.actorId) return { code: CLOSE.accessRevoked, reason: 'client deleted' };
  } else {
    if (!state.sites.has(a.siteId)) return { code: CLOSE.accessRevoked, reason: 'site deleted' };
    if (!state.gateways.has(a.gatewayId)) return { code: CLOSE.accessRevoked, reason: 'gateway deleted' };
  }
  return null;
}
