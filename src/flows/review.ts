import type { AccountState } from '../access/account-state.ts';
import { accountActive, actorActive, grantsFor, longestGrant } from '../access/access.ts';
import type { ConditionContext } from '../conditions.ts';
import type { ClientId, GatewayId, ResourceId } from '../ids.ts';
import { earliest } from './authorize.ts';
import type { FlowRecord } from './flow-index.ts';

export type FlowVerdict =
  | { kind: 'keep' }
  /** Still granted, with a different end or by another policy (the longest-lasting one). */
  | { kind: 'reauthorize'; flow: FlowRecord }
  /** Nothing grants it any more. */
  | { kind: 'revoke' }
  /** Its gateway (or the gateway's site) is gone: the gateway is closed, nothing to tell it. */
  | { kind: 'drop' };

/**
 * Re-checks one live flow against the current state (docs/architecture.md#7-diffs-not-re-sends, issue 4): the gateway and
 * its site, the client, actor, account and token, the resource and its connection to the
 * gateway's site, and finally the grants, with the connection context the flow was made in: the
 * flow takes the end of the longest-lasting one, as a new flow would.
 * `breaking` is set when the resource's address, type or ip_stack changed in this batch.
 */
export function reviewFlow(state: AccountState, flow: FlowRecord, nowMs: number, breaking: boolean): FlowVerdict {
  const gateway = state.gateways.get(flow.gatewayId);
  if (!gateway || !state.sites.has(gateway.siteId)) return { kind: 'drop' };
  const client = state.clients.get(flow.clientId);
  const token = state.tokens.get(flow.tokenId);
  if (!client || !accountActive(state) || !actorActive(state, client.actorId)) return { kind: 'revoke' };
  if (!token || (token.expiresAt !== null && token.expiresAt <= nowMs)) return { kind: 'revoke' };
  if (breaking || !state.resources.has(flow.resourceId) || !state.sitesOfResource.has(flow.resourceId, gateway.siteId)) return { kind: 'revoke' };
  const cond: ConditionContext = { remoteIp: flow.remoteIp, country: flow.country, verified: client.verified, nowMs };
  const grants = grantsFor(state, client.actorId, flow.resourceId, cond);
  // docs/protocol.md#access-rule: the flow lasts as long as the conforming policy that lasts longest
  // (capped by the token), like a new create_flow; on a tie it keeps its own policy.
  const longest = longestGrant(grants);
  if (!longest) return { kind: 'revoke' };
  const expiresAt = earliest(longest.until, token.expiresAt);
  if (expiresAt !== null && expiresAt <= nowMs) return { kind: 'revoke' };
  const own = grants.find((g) => g.policyId === flow.policyId);
  const policyId = own && earliest(own.until, token.expiresAt) === expiresAt ? own.policyId : longest.policyId;
  if (policyId === flow.policyId && expiresAt === flow.expiresAt) return { kind: 'keep' };
  return { kind: 'reauthorize', flow: { ...flow, policyId, expiresAt } };
}

export type GatewayNotice =
  | { gatewayId: GatewayId; event: 'reject_access'; clientId: ClientId; resourceId: ResourceId }
  | { gatewayId: GatewayId; event: 'access_authorization_expiry_updated'; clientId: ClientId; resourceId: ResourceId; expiresAt: number | null };

/**
 * What each gateway is told about one (client, resource) pair after its flows were reviewed: a
 * single `reject_access` once none is left, otherwise the latest expiry among the remaining ones
 * when anything about them changed.
 */
export function noticesForPair(before: readonly FlowRecord[], after: readonly FlowRecord[]): GatewayNotice[] {
  const out: GatewayNotice[] = [];
  const gateways = new Set(before.map((f) => f.gatewayId));
  for (const gatewayId of gateways) {
    const was = before.filter((f) => f.gatewayId === gatewayId);
    const now = after.filter((f) => f.gatewayId === gatewayId);
    const { clientId, resourceId } = was[0]!;
    if (now.length === 0) {
      out.push({ gatewayId, event: 'reject_access', clientId, resourceId });
      continue;
    }
    const changed = was.length !== now.length || was.some((f) => !now.some((n) => n.id === f.id && n.expiresAt === f.expiresAt && n.policyId === f.policyId));
    if (changed) out.push({ gatewayId, event: 'access_authorization_expiry_updated', clientId, resourceId, expiresAt: latest(now) });
  }
  return out;
}

function latest(flows: readonly FlowRecord[]): number | null {
  let out = 0;
  for (const f of flows) {
    if (f.expiresAt === null) return null;
    out = Math.max(out, f.expiresAt);
  }
  return out;
}
