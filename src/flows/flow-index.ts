import { MultiIndex } from '../access/multi-index.ts';
import { ExpiryHeap } from '../expiry-heap.ts';
import type { ClientId, FlowId, GatewayId, PolicyId, ResourceId, TokenId } from '../ids.ts';

/** An authorization the object gave a gateway for one client and resource. */
export interface FlowRecord {
  id: FlowId;
  clientId: ClientId;
  gatewayId: GatewayId;
  resourceId: ResourceId;
  policyId: PolicyId;
  tokenId: TokenId;
  /** Epoch ms; null: no end. */
  expiresAt: number | null;
  /** The client's connection context when authorized, for re-checking conditions after it left. */
  remoteIp: string | null;
  country: string | null;
  /** When the client asked for it (epoch ms): the oldest of a client's flows goes first at its cap. */
  createdAt: number;
}

export const pairKey = (clientId: ClientId, resourceId: ResourceId) => `${clientId}|${resourceId}`;

/** Live flows and the indexes that find the ones a change can affect. */
export class FlowIndex {
  readonly flows = new Map<FlowId, FlowRecord>();
  readonly byPair = new MultiIndex<string, FlowId>();
  readonly byClient = new MultiIndex<ClientId, FlowId>();
  readonly byGateway = new MultiIndex<GatewayId, FlowId>();
  readonly byResource = new MultiIndex<ResourceId, FlowId>();
  readonly byToken = new MultiIndex<TokenId, FlowId>();
  /** Flows that end, by their end (docs/architecture.md#11-bounded: the alarm reads the next one in O(1)). */
  readonly expiries = new ExpiryHeap<FlowId>();

  put(f: FlowRecord): void {
    this.remove(f.id);
    this.flows.set(f.id, f);
    this.byPair.add(pairKey(f.clientId, f.resourceId), f.id);
    this.byClient.add(f.clientId, f.id);
    this.byGateway.add(f.gatewayId, f.id);
    this.byResource.add(f.resourceId, f.id);
    this.byToken.add(f.tokenId, f.id);
    if (f.expiresAt !== null) this.expiries.set(f.id, f.expiresAt);
  }

  remove(id: FlowId): void {
    const f = this.flows.get(id);
    if (!f) return;
    this.flows.delete(id);
    this.byPair.delete(pairKey(f.clientId, f.resourceId), id);
    this.byClient.delete(f.clientId, id);
    this.byGateway.delete(f.gatewayId, id);
    this.byResource.delete(f.resourceId, id);
    this.byToken.delete(f.tokenId, id);
    this.expiries.delete(id);
  }

  ofGateway(gatewayId: GatewayId): FlowRecord[] {
    return [...this.byGateway.get(gatewayId)].map((id) => this.flows.get(id)!);
  }

  ofPair(clientId: ClientId, resourceId: ResourceId): FlowRecord[] {
    return [...this.byPair.get(pairKey(clientId, resourceId))].map((id) => this.flows.get(id)!);
  }

  /**
   * The pair's live flows on one gateway: at most one, since a new flow replaces it
   * (docs/protocol.md#client-frames), unless the object stored several before that rule.
   */
  ofPairOnGateway(clientId: ClientId, resourceId: ResourceId, gatewayId: GatewayId): FlowRecord[] {
    return this.ofPair(clientId, resourceId).filter((f) => f.gatewayId === gatewayId);
  }

  /** The client's least recently created flow not in `except` (a scan of the client's flows, which its cap bounds). */
  oldestOfClient(clientId: ClientId, except: ReadonlySet<FlowId> = new Set()): FlowRecord | undefined {
    let oldest: FlowRecord | undefined;
    for (const id of this.byClient.get(clientId)) {
      const f = this.flows.get(id)!;
      if (!except.has(id) && (!oldest || f.createdAt < oldest.createdAt)) oldest = f;
    }
    return oldest;
  }

  /** The earliest expiry among live flows, for the alarm. */
  nextExpiry(): number | null {
    return this.expiries.earliest();
  }

  /** The flows ended by `nowMs`. */
  expiredBy(nowMs: number): FlowRecord[] {
    return this.expiries.due(nowMs).map((id) => this.flows.get(id)!);
  }
}
