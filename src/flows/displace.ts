import { pairKey, type FlowIndex, type FlowRecord } from './flow-index.ts';
import { noticesForPair, type GatewayNotice } from './review.ts';

export interface Displacement {
  /** The pair's live flow on the new flow's gateway: the gateway's new `authorize_flow` stands for it. */
  replaced: FlowRecord[];
  /** The client's least recently created flows, beyond its cap: revoked. */
  evicted: FlowRecord[];
  /** What the evicted flows' gateways are told (`reject_access` once none of the pair is left there). */
  notices: GatewayNotice[];
}

/**
 * The flows a new one displaces (docs/protocol.md#client-frames), computed before anything
 * changes: the pair's live flow on the chosen gateway is replaced (one live flow per client,
 * resource and gateway; the gateway hears only the new `authorize_flow`, since the pair stays
 * authorized), and while the client would hold more than `maxPerClient` flows, its least recently
 * created ones are evicted, as a revocation would remove them.
 */
export function displace(flows: FlowIndex, flow: FlowRecord, maxPerClient: number): Displacement {
  const replaced = flows.ofPairOnGateway(flow.clientId, flow.resourceId, flow.gatewayId);
  const gone = new Set(replaced.map((f) => f.id));
  const evicted: FlowRecord[] = [];
  let live = flows.byClient.get(flow.clientId).size - gone.size;
  while (live >= maxPerClient) {
    const oldest = flows.oldestOfClient(flow.clientId, gone);
    if (!oldest) break;
    gone.add(oldest.id);
    evicted.push(oldest);
    live--;
  }
  const notices: GatewayNotice[] = [];
  const pairs = new Set(evicted.map((f) => pairKey(f.clientId, f.resourceId)));
  for (const key of pairs) {
    const before = [...flows.byPair.get(key)].map((id) => flows.flows.get(id)!).filter((f) => !replaced.includes(f));
    notices.push(
      ...noticesForPair(
        before,
        before.filter((f) => !gone.has(f.id)),
      ),
    );
  }
  return { replaced, evicted, notices };
}
