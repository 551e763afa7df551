import type { AccountId, ActorId, ClientId, GatewayId, GroupId, PolicyId, ResourceId, SiteId, TokenId } from '../ids.ts';
import type { AccountRecord, ActorRecord, Cached, ClientRecord, GatewayRecord, GroupRecord, PolicyRecord, ResourceRecord, SiteRecord, TokenRecord } from '../records.ts';
import { DOMAIN_TABLES, type TableName } from '../tables.ts';
import { deviceKey } from '../devices.ts';
import { ExpiryHeap } from '../expiry-heap.ts';
import { MultiIndex } from './multi-index.ts';

/** Where a state rebuilt after a wake reads its tables from (the object's SQLite caches). */
export interface TableSource {
  /** Every record of one table. */
  records(table: TableName): Cached[];
  /** The earliest `expires_at` of the stored tokens. */
  earliestTokenExpiry(): number | null;
}

/**
 * One account's access state in memory: the cached records and the indexes that answer "who is
 * affected" in time proportional to the answer. Pure data; the object persists the same records.
 */
export class AccountState {
  #account: AccountRecord | null = null;
  readonly #actors = new Map<ActorId, ActorRecord>();
  readonly #groups = new Map<GroupId, GroupRecord>();
  readonly #groupsOfActor = new MultiIndex<ActorId, GroupId>();
  readonly #actorsOfGroup = new MultiIndex<GroupId, ActorId>();
  readonly #sites = new Map<SiteId, SiteRecord>();
  readonly #gateways = new Map<GatewayId, GatewayRecord>();
  readonly #gatewaysOfSite = new MultiIndex<SiteId, GatewayId>();
  readonly #gatewaysByKey = new Map<string, GatewayId>();
  readonly #resources = new Map<ResourceId, ResourceRecord>();
  readonly #sitesOfResource = new MultiIndex<ResourceId, SiteId>();
  readonly #resourcesOfSite = new MultiIndex<SiteId, ResourceId>();
  readonly #policies = new Map<PolicyId, PolicyRecord>();
  readonly #policiesOfResource = new MultiIndex<ResourceId, PolicyId>();
  readonly #policiesOfGroup = new MultiIndex<GroupId, PolicyId>();
  readonly #clients = new Map<ClientId, ClientRecord>();
  readonly #clientsOfActor = new MultiIndex<ActorId, ClientId>();
  readonly #clientsByKey = new Map<string, ClientId>();
  readonly #tokens = new Map<TokenId, TokenRecord>();
  readonly #tokenExpiries = new ExpiryHeap<TokenId>();
  readonly #timedPolicies = new Set<PolicyId>();
  readonly #timeBoundaries = new ExpiryHeap<PolicyId>();
  readonly #unsettledTimed = new Set<PolicyId>();
  /** Tables still only in storage (docs/architecture.md#after-a-wake): read in whole when first touched. */
  readonly #unloaded: Set<TableName>;
  /** While tokens are unloaded: the earliest expiry storage holds (tokens change only once loaded). */
  #storedEarliestExpiry: { at: number | null } | undefined;

  /** `source`: the tables are in storage and read from it table by table, as each is first needed. */
  constructor(
    readonly accountId: AccountId,
    private readonly source?: TableSource,
  ) {
    this.#unloaded = new Set(source ? DOMAIN_TABLES : []);
  }

  /**
   * Reads a table in before its first use. Its records in storage are those memory would hold: a
   * table changes (in memory, then in storage) only through this state, which loads it first.
   * Read whole before any is inserted, so that a failed read leaves the table unloaded.
   */
  private need(table: TableName): void {
    if (!this.#unloaded.has(table)) return;
    const records = this.source!.records(table);
    this.#unloaded.delete(table);
    for (const cached of records) this.insert(cached);
  }

  /** Whether a table is in memory (for tests). */
  loaded(table: TableName): boolean {
    return !this.#unloaded.has(table);
  }

  get account(): AccountRecord | null {
    this.need('accounts');
    return this.#account;
  }
  get actors(): Map<ActorId, ActorRecord> {
    this.need('actors');
    return this.#actors;
  }
  get groups(): Map<GroupId, GroupRecord> {
    this.need('actor_groups');
    return this.#groups;
  }
  get groupsOfActor(): MultiIndex<ActorId, GroupId> {
    this.need('actor_group_memberships');
    return this.#groupsOfActor;
  }
  get actorsOfGroup(): MultiIndex<GroupId, ActorId> {
    this.need('actor_group_memberships');
    return this.#actorsOfGroup;
  }
  get sites(): Map<SiteId, SiteRecord> {
    this.need('sites');
    return this.#sites;
  }
  get gateways(): Map<GatewayId, GatewayRecord> {
    this.need('gateways');
    return this.#gateways;
  }
  get gatewaysOfSite(): MultiIndex<SiteId, GatewayId> {
    this.need('gateways');
    return this.#gatewaysOfSite;
  }
  /** By deviceKey(site, external id): what a connecting gateway is upserted by. */
  get gatewaysByKey(): Map<string, GatewayId> {
    this.need('gateways');
    return this.#gatewaysByKey;
  }
  get resources(): Map<ResourceId, ResourceRecord> {
    this.need('resources');
    return this.#resources;
  }
  get sitesOfResource(): MultiIndex<ResourceId, SiteId> {
    this.need('resource_connections');
    return this.#sitesOfResource;
  }
  get resourcesOfSite(): MultiIndex<SiteId, ResourceId> {
    this.need('resource_connections');
    return this.#resourcesOfSite;
  }
  get policies(): Map<PolicyId, PolicyRecord> {
    this.need('policies');
    return this.#policies;
  }
  get policiesOfResource(): MultiIndex<ResourceId, PolicyId> {
    this.need('policies');
    return this.#policiesOfResource;
  }
  get policiesOfGroup(): MultiIndex<GroupId, PolicyId> {
    this.need('policies');
    return this.#policiesOfGroup;
  }
  get clients(): Map<ClientId, ClientRecord> {
    this.need('clients');
    return this.#clients;
  }
  get clientsOfActor(): MultiIndex<ActorId, ClientId> {
    this.need('clients');
    return this.#clientsOfActor;
  }
  /** By deviceKey(actor, external id): what a connecting client is upserted by. */
  get clientsByKey(): Map<string, ClientId> {
    this.need('clients');
    return this.#clientsByKey;
  }
  get tokens(): Map<TokenId, TokenRecord> {
    this.need('tokens');
    return this.#tokens;
  }
  /** Tokens that expire, by expiry (docs/architecture.md#11-bounded: the alarm reads the next one in O(1)). */
  get tokenExpiries(): ExpiryHeap<TokenId> {
    this.need('tokens');
    return this.#tokenExpiries;
  }
  /** Policies with a time-window condition: the only ones whose outcome changes without a change arriving. */
  get timedPolicies(): Set<PolicyId> {
    this.need('policies');
    return this.#timedPolicies;
  }
  /**
   * Timed policies by the next instant their outcome may change, as of the alarm that last settled
   * them (src/alarm.ts `settleTimedPolicies`): an alarm looks only at those whose instant came.
   */
  get timeBoundaries(): ExpiryHeap<PolicyId> {
    this.need('policies');
    return this.#timeBoundaries;
  }
  /** Timed policies stored since the last alarm (or since memory was rebuilt): their next boundary is not known yet. */
  get unsettledTimed(): Set<PolicyId> {
    this.need('policies');
    return this.#unsettledTimed;
  }

  /** The earliest expiry of any token, read from storage while the tokens themselves are not needed. */
  earliestTokenExpiry(): number | null {
    if (!this.#unloaded.has('tokens')) return this.#tokenExpiries.earliest();
    this.#storedEarliestExpiry ??= { at: this.source!.earliestTokenExpiry() };
    return this.#storedEarliestExpiry.at;
  }

  /** The record currently cached under the same key as `cached`, if any. */
  existing(cached: Cached): Cached | undefined {
    switch (cached.table) {
      case 'accounts':
        return this.account ? { table: 'accounts', record: this.account } : undefined;
      case 'actors':
        return wrap('actors', this.actors.get(cached.record.id));
      case 'actor_groups':
        return wrap('actor_groups', this.groups.get(cached.record.id));
      case 'actor_group_memberships':
        return this.actorsOfGroup.has(cached.record.groupId, cached.record.actorId) ? cached : undefined;
      case 'sites':
        return wrap('sites', this.sites.get(cached.record.id));
      case 'gateways':
        return wrap('gateways', this.gateways.get(cached.record.id));
      case 'resources':
        return wrap('resources', this.resources.get(cached.record.id));
      case 'resource_connections':
        return this.sitesOfResource.has(cached.record.resourceId, cached.record.siteId) ? cached : undefined;
      case 'policies':
        return wrap('policies', this.policies.get(cached.record.id));
      case 'clients':
        return wrap('clients', this.clients.get(cached.record.id));
      case 'tokens':
        return wrap('tokens', this.tokens.get(cached.record.id));
    }
  }

  /** Stores a record, replacing the one under the same key and keeping every index in step. */
  put(cached: Cached): void {
    const before = this.existing(cached);
    if (before) this.remove(before);
    this.insert(cached);
  }

  /**
   * Stores a record whose key holds none yet, without looking: for a table read back whole
   * (its keys are unique), where the look-up was a fifth of a woken object's load.
   */
  insert(cached: Cached): void {
    switch (cached.table) {
      case 'accounts':
        if (cached.record.id === this.accountId) this.#account = cached.record;
        return;
      case 'actors':
        this.actors.set(cached.record.id, cached.record);
        return;
      case 'actor_groups':
        this.groups.set(cached.record.id, cached.record);
        return;
      case 'actor_group_memberships':
        this.groupsOfActor.add(cached.record.actorId, cached.record.groupId);
        this.actorsOfGroup.add(cached.record.groupId, cached.record.actorId);
        return;
      case 'sites':
        this.sites.set(cached.record.id, cached.record);
        return;
      case 'gateways':
        this.gateways.set(cached.record.id, cached.record);
        this.gatewaysOfSite.add(cached.record.siteId, cached.record.id);
        this.gatewaysByKey.set(deviceKey(cached.record.siteId, cached.record.externalId), cached.record.id);
        return;
      case 'resources':
        this.resources.set(cached.record.id, cached.record);
        return;
      case 'resource_connections':
        this.sitesOfResource.add(cached.record.resourceId, cached.record.siteId);
        this.resourcesOfSite.add(cached.record.siteId, cached.record.resourceId);
        return;
      case 'policies': {
        const p = cached.record;
        this.policies.set(p.id, p);
        this.policiesOfResource.add(p.resourceId, p.id);
        this.policiesOfGroup.add(p.groupId, p.id);
        if (p.conditions?.some((c) => c.property === 'current_utc_datetime')) {
          this.timedPolicies.add(p.id);
          this.unsettledTimed.add(p.id);
        }
        return;
      }
      case 'clients':
        this.clients.set(cached.record.id, cached.record);
        this.clientsOfActor.add(cached.record.actorId, cached.record.id);
        this.clientsByKey.set(deviceKey(cached.record.actorId, cached.record.externalId), cached.record.id);
        return;
      case 'tokens':
        this.tokens.set(cached.record.id, cached.record);
        if (cached.record.expiresAt !== null) this.tokenExpiries.set(cached.record.id, cached.record.expiresAt);
        return;
    }
  }

  /** Removes the record under `cached`'s key (its other fields are ignored). */
  remove(cached: Cached): void {
    const current = this.existing(cached);
    if (!current) return;
    switch (current.table) {
      case 'accounts':
        this.#account = null;
        return;
      case 'actors':
        this.actors.delete(current.record.id);
        return;
      case 'actor_groups':
        this.groups.delete(current.record.id);
        return;
      case 'actor_group_memberships':
        this.groupsOfActor.delete(current.record.actorId, current.record.groupId);
        this.actorsOfGroup.delete(current.record.groupId, current.record.actorId);
        return;
      case 'sites':
        this.sites.delete(current.record.id);
        return;
      case 'gateways':
        this.gateways.delete(current.record.id);
        this.gatewaysOfSite.delete(current.record.siteId, current.record.id);
        deleteIf(this.gatewaysByKey, deviceKey(current.record.siteId, current.record.externalId), current.record.id);
        return;
      case 'resources':
        this.resources.delete(current.record.id);
        return;
      case 'resource_connections':
        this.sitesOfResource.delete(current.record.resourceId, current.record.siteId);
        this.resourcesOfSite.delete(current.record.siteId, current.record.resourceId);
        return;
      case 'policies':
        this.policies.delete(current.record.id);
        this.policiesOfResource.delete(current.record.resourceId, current.record.id);
        this.policiesOfGroup.delete(current.record.groupId, current.record.id);
        this.timedPolicies.delete(current.record.id);
        this.timeBoundaries.delete(current.record.id);
        this.unsettledTimed.delete(current.record.id);
        return;
      case 'clients':
        this.clients.delete(current.record.id);
        this.clientsOfActor.delete(current.record.actorId, current.record.id);
        deleteIf(this.clientsByKey, deviceKey(current.record.actorId, current.record.externalId), current.record.id);
        return;
      case 'tokens':
        this.tokens.delete(current.record.id);
        this.tokenExpiries.delete(current.record.id);
        return;
    }
  }

  /** Every cached record of a table (for TRUNCATE and for persisting). */
  all(table: TableName): Cached[] {
    switch (table) {
      case 'accounts':
        return this.account ? [{ table, record: this.account }] : [];
      case 'actors':
        return [...this.actors.values()].map((record) => ({ table, record }));
      case 'actor_groups':
        return [...this.groups.values()].map((record) => ({ table, record }));
      case 'actor_group_memberships': {
        const out: Cached[] = [];
        for (const [actorId, groups] of this.groupsOfActor.entries()) for (const groupId of groups) out.push({ table, record: { actorId, groupId } });
        return out;
      }
      case 'sites':
        return [...this.sites.values()].map((record) => ({ table, record }));
      case 'gateways':
        return [...this.gateways.values()].map((record) => ({ table, record }));
      case 'resources':
        return [...this.resources.values()].map((record) => ({ table, record }));
      case 'resource_connections': {
        const out: Cached[] = [];
        for (const [resourceId, sites] of this.sitesOfResource.entries()) for (const siteId of sites) out.push({ table, record: { resourceId, siteId } });
        return out;
      }
      case 'policies':
        return [...this.policies.values()].map((record) => ({ table, record }));
      case 'clients':
        return [...this.clients.values()].map((record) => ({ table, record }));
      case 'tokens':
        return [...this.tokens.values()].map((record) => ({ table, record }));
    }
  }
}

/** Drops the key only if it still names this record (another record may have taken the key since). */
function deleteIf<V>(map: Map<string, V>, key: string, value: V): void {
  if (map.get(key) === value) map.delete(key);
}

function wrap<T extends Cached['table']>(table: T, record: Extract<Cached, { table: T }>['record'] | undefined): Cached | undefined {
  return record ? ({ table, record } as Cached) : undefined;
}
