import { MultiIndex } from '../access/multi-index.ts';
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
}

export const pairKey = (clientId: ClientId, resourceId: ResourceId) => `${clientId}|${resourceId}`;

/** Live flows and the indexes that find the ones a change can affect. */
export class FlowIndex {
  readonly flows = new Map<FlowId, FlowRecord>();
  readonly byPair = new MultiIndex<string, FlowId>();
  readonly byClient = new MultiIndex<ClientId, FlowId>();
  readonly byGateway = new MultiIndex<GatewayId, FlowId>();
  readonly byResource = new MultiIndex<ResourceId, FlowId>();

  put(f: FlowRecord): void {
    this.remove(f.id);
    this.flows.set(f.id, f);
    this.byPair.add(pairKey(f.clientId, f.resourceId), f.id);
    this.byClient.add(f.clientId, f.id);
    this.byGateway.add(f.gatewayId, f.id);
    this.byResource.add(f.resourceId, f.id);
  }

  remove(id: FlowId): void {
    const f = this.flows.get(id);
    if (!f) return;
    this.flows.delete(id);
    this.byPair.delete(pairKey(f.clientId, f.resourceId), id);
    this.byClient.delete(f.clientId, id);
    this.byGateway.delete(f.gatewayId, id);
    this.byResource.delete(f.resourceId, id);
  }

  ofGateway(gatewayId: GatewayId): FlowRecord[] {
    return [...this.byGateway.get(gatewayId)].map((id) => this.flows.get(id)!);
  }

  /** The earliest expiry among live flows, for the alarm. */
  nextExpiry(): number | null {
    let next: number | null = null;
    for (const f of this.flows.values()) if (f.expiresAt !== null && (next === null || f.expiresAt < next)) next = f.expiresAt;
    return next;
  }
}
