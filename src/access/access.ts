import { evaluateConditions, type ConditionContext } from '../conditions.ts';
import type { ActorId, ClientId, PolicyId, ResourceId } from '../ids.ts';
import type { SiteRecord } from '../records.ts';
import { buildView, type ResourceView } from '../resource-view.ts';
import type { Version } from '../versions.ts';
import type { AccountState } from './account-state.ts';

/** A connected client as access decisions see it: who it is and where it connected from. */
export interface ClientContext {
  clientId: ClientId;
  actorId: ActorId;
  version: Version;
  remoteIp: string | null;
  country: string | null;
}

/** A policy that grants a resource now, and until when (epoch ms; null: no end). */
export interface Grant {
  policyId: PolicyId;
  until: number | null;
}

export function accountActive(state: AccountState): boolean {
  return state.account !== null && !state.account.disabled;
}

export function actorActive(state: AccountState, actorId: ActorId): boolean {
  const actor = state.actors.get(actorId);
  return actor !== undefined && !actor.disabled;
}

/** The account, the actor and the client all exist and are enabled. */
export function clientActive(state: AccountState, ctx: ClientContext): boolean {
  const client = state.clients.get(ctx.clientId);
  return accountActive(state) && actorActive(state, ctx.actorId) && client !== undefined && client.actorId === ctx.actorId;
}

export function conditionContext(state: AccountState, ctx: ClientContext, nowMs: number): ConditionContext {
  return {
    remoteIp: ctx.remoteIp,
    country: ctx.country,
    // Read only by a client_verified condition: most batches then need no client record.
    get verified() {
      return state.clients.get(ctx.clientId)?.verified ?? false;
    },
    nowMs,
  };
}

/** The sites a resource is connected to that are not deleted. */
export function sitesOf(state: AccountState, resourceId: ResourceId): SiteRecord[] {
  const out: SiteRecord[] = [];
  for (const siteId of state.sitesOfResource.get(resourceId)) {
    const site = state.sites.get(siteId);
    if (site) out.push(site);
  }
  return out;
}

/**
 * The policies that grant `actorId` the resource now (docs/protocol.md#access-rule): enabled, of a group
 * that exists and the actor belongs to, with conditions that are valid and hold.
 */
export function grantsFor(state: AccountState, actorId: ActorId, resourceId: ResourceId, cond: ConditionContext): Grant[] {
  const out: Grant[] = [];
  for (const policyId of state.policiesOfResource.get(resourceId)) {
    const policy = state.policies.get(policyId);
    if (!policy || policy.disabled || policy.conditions === null) continue;
    if (!state.groups.has(policy.groupId) || !state.actorsOfGroup.has(policy.groupId, actorId)) continue;
    const outcome = evaluateConditions(policy.conditions, cond);
    if (outcome.ok) out.push({ policyId, until: outcome.until });
  }
  return out;
}

/** The grant that lasts longest (no end beats any end). */
export function longestGrant(grants: readonly Grant[]): Grant | undefined {
  let best: Grant | undefined;
  for (const g of grants) {
    if (!best || (best.until !== null && (g.until === null || g.until > best.until))) best = g;
  }
  return best;
}

/**
 * Whether the client may see a resource right now (docs/protocol.md#access-rule): it has a grant, the
 * resource exists and is connected to a site, and the client, its actor and the account are active.
 * Version adaptation comes after, in buildView.
 */
export function mayAccess(state: AccountState, ctx: ClientContext, resourceId: ResourceId, nowMs: number): boolean {
  return accessGrants(state, ctx, resourceId, nowMs).length > 0;
}

/**
 * The grants through which the client may see a resource now; empty when it may not (see
 * mayAccess). `standing`: the caller knows the client, its actor and the account are active (a
 * connected socket whose verdict is null: workers/account/verdicts.ts), so their records are not read.
 */
export function accessGrants(state: AccountState, ctx: ClientContext, resourceId: ResourceId, nowMs: number, standing = false): Grant[] {
  if (!(standing || clientActive(state, ctx)) || !state.resources.has(resourceId) || sitesOf(state, resourceId).length === 0) return [];
  return grantsFor(state, ctx.actorId, resourceId, conditionContext(state, ctx, nowMs));
}

/** The view the client may see of a resource right now, or null. */
export function viewFor(state: AccountState, ctx: ClientContext, resourceId: ResourceId, nowMs: number): ResourceView | null {
  if (!mayAccess(state, ctx, resourceId, nowMs)) return null;
  return buildView(state.resources.get(resourceId)!, sitesOf(state, resourceId), ctx.version);
}

/** Every resource some policy of one of the actor's groups points at: the ones it might see. */
export function candidateResources(state: AccountState, actorId: ActorId): Set<ResourceId> {
  const out = new Set<ResourceId>();
  for (const groupId of state.groupsOfActor.get(actorId)) {
    for (const policyId of state.policiesOfGroup.get(groupId)) {
      const policy = state.policies.get(policyId);
      if (policy) out.add(policy.resourceId);
    }
  }
  return out;
}

/**
 * The next instant at which a time-window condition of any policy opens or closes: the earliest
 * boundary of the settled timed policies (past when no alarm has handled it yet: the alarm is
 * then due at once) and those of the unsettled ones after `nowMs`. Costs the unsettled policies
 * only (docs/architecture.md#the-alarm).
 */
export function nextTimeBoundary(state: AccountState, nowMs: number): number | null {
  let next = state.timeBoundaries.earliest();
  for (const policyId of state.unsettledTimed) {
    const at = timeBoundaryOf(state, policyId, nowMs);
    if (at !== null && (next === null || at < next)) next = at;
  }
  return next;
}

/** The next instant after `nowMs` at which the policy's time windows open or close; null for none (or a policy that grants nothing anyway). */
export function timeBoundaryOf(state: AccountState, policyId: PolicyId, nowMs: number): number | null {
  const policy = state.policies.get(policyId);
  if (!policy?.conditions || policy.disabled) return null;
  return evaluateConditions(policy.conditions, { remoteIp: null, country: null, verified: false, nowMs }).changesAt;
}
