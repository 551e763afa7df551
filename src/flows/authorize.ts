import type { AccountState } from '../access/account-state.ts';
import { clientActive, conditionContext, grantsFor, longestGrant, sitesOf, type ClientContext, type Grant } from '../access/access.ts';
import { evaluateConditions } from '../conditions.ts';
import type { GatewayId, ResourceId, SiteId } from '../ids.ts';
import type { FlowFailureReason } from '../messages.ts';
import type { TokenRecord } from '../records.ts';
import { adaptResource, gatewayCompatible, type Version } from '../versions.ts';

/** A gateway with an open socket. */
export interface OnlineGateway {
  id: GatewayId;
  siteId: SiteId;
  version: Version;
  /** Live flows it serves, to spread new ones. */
  load: number;
}

export type FlowDecision =
  | { ok: true; gatewayId: GatewayId; siteId: SiteId; grant: Grant; expiresAt: number | null }
  | { ok: false; reason: FlowFailureReason; violatedProperties?: string[] };

/** min over the ends that exist; null when none does. */
export function earliest(...ends: (number | null)[]): number | null {
  let out: number | null = null;
  for (const e of ends) if (e !== null && (out === null || e < out)) out = e;
  return out;
}

/**
 * The in-memory authorization of `create_flow` (no database): the resource must be one the client
 * may see (else not_found); a policy must grant it now with the client's connection context (else
 * forbidden, naming the condition properties that failed); an online, version-compatible gateway
 * of a site connected to the resource must be there (else offline), preferring the ones the client
 * already talks to and otherwise the least loaded. The flow ends at the earlier of the grant's end
 * and the token's expiry.
 */
export function decideFlow(
  state: AccountState,
  ctx: ClientContext,
  token: TokenRecord,
  resourceId: ResourceId,
  online: readonly OnlineGateway[],
  preferred: readonly GatewayId[],
  nowMs: number,
): FlowDecision {
  const resource = state.resources.get(resourceId);
  if (!resource || !clientActive(state, ctx) || adaptResource(resource, ctx.version) === null) return { ok: false, reason: 'not_found' };
  const sites = new Set(sitesOf(state, resourceId).map((s) => s.id));
  if (sites.size === 0) return { ok: false, reason: 'not_found' };
  const cond = conditionContext(state, ctx, nowMs);
  const grant = longestGrant(grantsFor(state, ctx.actorId, resourceId, cond));
  if (!grant) {
    const violated = violatedProperties(state, ctx, resourceId, nowMs);
    return violated === null ? { ok: false, reason: 'not_found' } : { ok: false, reason: 'forbidden', violatedProperties: violated };
  }
  const candidates = online.filter((g) => sites.has(g.siteId) && gatewayCompatible(g.version, ctx.version, resource));
  if (candidates.length === 0) return { ok: false, reason: 'offline' };
  const preferredSet = new Set(preferred);
  const pool = candidates.some((g) => preferredSet.has(g.id)) ? candidates.filter((g) => preferredSet.has(g.id)) : candidates;
  const leastLoad = Math.min(...pool.map((g) => g.load));
  const least = pool.filter((g) => g.load === leastLoad);
  const chosen = least[Math.floor(Math.random() * least.length)]!;
  return { ok: true, gatewayId: chosen.id, siteId: chosen.siteId, grant, expiresAt: earliest(grant.until, token.expiresAt) };
}

/**
 * The condition properties that kept the actor's policies for the resource from granting it, or
 * null when no usable policy of its groups points at the resource at all (the client may not
 * know the resource: not_found rather than forbidden).
 */
function violatedProperties(state: AccountState, ctx: ClientContext, resourceId: ResourceId, nowMs: number): string[] | null {
  const cond = conditionContext(state, ctx, nowMs);
  const violated = new Set<string>();
  let any = false;
  for (const policyId of state.policiesOfResource.get(resourceId)) {
    const p = state.policies.get(policyId);
    if (!p || p.disabled || p.conditions === null || !state.groups.has(p.groupId) || !state.actorsOfGroup.has(p.groupId, ctx.actorId)) continue;
    any = true;
    for (const c of p.conditions) if (!evaluateConditions([c], cond).ok) violated.add(c.property);
  }
  return any ? [...violated].sort() : null;
}
