import type { ActorId, ClientId, GatewayId, ResourceId, SiteId, TokenId } from '../ids.ts';
import type { Cached } from '../records.ts';
import type { AccountState } from './account-state.ts';

/**
 * What a batch of changes may have affected. Marks are taken against the state just before a
 * record is removed and just after it is stored, so that a path actor -> group -> policy ->
 * resource that existed before the batch or exists after it is always caught by the change that
 * broke or completed it (docs/architecture.md#8-no-n1: recompute only what a batch can affect).
 */
export class Dirty {
  /** The account itself changed: every socket is re-examined. */
  everything = false;
  /** Resources whose view or reachability changed for everyone who may see them. */
  readonly resources = new Set<ResourceId>();
  /** Actors whose every resource must be recomputed. */
  readonly actors = new Set<ActorId>();
  /** Actor -> resources whose access may have changed for that actor only. */
  readonly pairs = new Map<ActorId, Set<ResourceId>>();
  readonly clients = new Set<ClientId>();
  readonly tokens = new Set<TokenId>();
  readonly gateways = new Set<GatewayId>();
  readonly sites = new Set<SiteId>();
  /** Resources whose address, type or ip_stack changed: their flows are rejected (issue 4). */
  readonly breaking = new Set<ResourceId>();
  /** Resources whose filters changed: gateways with live flows get `resource_updated` (docs/protocol.md#gateway-frames). */
  readonly reshaped = new Set<ResourceId>();

  get empty(): boolean {
    return (
      !this.everything &&
      this.resources.size === 0 &&
      this.actors.size === 0 &&
      this.pairs.size === 0 &&
      this.clients.size === 0 &&
      this.tokens.size === 0 &&
      this.gateways.size === 0 &&
      this.sites.size === 0
    );
  }

  pair(actorId: ActorId, resourceId: ResourceId): void {
    let set = this.pairs.get(actorId);
    if (!set) this.pairs.set(actorId, (set = new Set()));
    set.add(resourceId);
  }

  /** Whether anything of this actor's client may have changed. */
  touches(actorId: ActorId, clientId: ClientId): boolean {
    return this.everything || this.resources.size > 0 || this.actors.has(actorId) || this.clients.has(clientId) || this.pairs.has(actorId);
  }

  /** The resources to recompute for one client: 'all', or the ones marked for everyone and for its actor. */
  resourcesFor(actorId: ActorId, clientId: ClientId): 'all' | ReadonlySet<ResourceId> {
    if (this.everything || this.actors.has(actorId) || this.clients.has(clientId)) return 'all';
    const own = this.pairs.get(actorId);
    if (!own || own.size === 0) return this.resources;
    if (this.resources.size === 0) return own;
    return new Set([...this.resources, ...own]);
  }

  /** Notes how a stored record differs from the one it replaces, where flows care. */
  replaced(before: Cached, after: Cached): void {
    if (before.table !== 'resources' || after.table !== 'resources') return;
    const [a, b] = [before.record, after.record];
    if (a.address !== b.address || a.type !== b.type || a.ipStack !== b.ipStack) this.breaking.add(b.id);
    // A rename (or a new description) changes only what clients are shown; a gateway enforces the filters.
    else if (JSON.stringify(a.filters) !== JSON.stringify(b.filters)) this.reshaped.add(b.id);
  }

  /** Records what a cached record's presence can affect, reading the links from `state` as it is now. */
  mark(state: AccountState, cached: Cached): void {
    switch (cached.table) {
      case 'accounts':
        this.everything = true;
        return;
      case 'actors':
        this.actors.add(cached.record.id);
        return;
      case 'actor_groups': {
        const groupId = cached.record.id;
        for (const policyId of state.policiesOfGroup.get(groupId)) {
          const resourceId = state.policies.get(policyId)?.resourceId;
          if (resourceId) for (const actorId of state.actorsOfGroup.get(groupId)) this.pair(actorId, resourceId);
        }
        return;
      }
      case 'actor_group_memberships':
        for (const policyId of state.policiesOfGroup.get(cached.record.groupId)) {
          const resourceId = state.policies.get(policyId)?.resourceId;
          if (resourceId) this.pair(cached.record.actorId, resourceId);
        }
        return;
      case 'sites':
        this.sites.add(cached.record.id);
        for (const resourceId of state.resourcesOfSite.get(cached.record.id)) this.resources.add(resourceId);
        return;
      case 'gateways':
        this.gateways.add(cached.record.id);
        return;
      case 'resources':
        this.resources.add(cached.record.id);
        return;
      case 'resource_connections':
        this.resources.add(cached.record.resourceId);
        this.sites.add(cached.record.siteId);
        return;
      case 'policies':
        for (const actorId of state.actorsOfGroup.get(cached.record.groupId)) this.pair(actorId, cached.record.resourceId);
        return;
      case 'clients':
        this.clients.add(cached.record.id);
        return;
      case 'tokens':
        this.tokens.add(cached.record.id);
        return;
    }
  }
}
