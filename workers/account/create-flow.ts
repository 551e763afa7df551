import { sitesOf } from '../../src/access/access.ts';
import { decideFlow, type FlowDecision, type OnlineGateway } from '../../src/flows/authorize.ts';
import { displace } from '../../src/flows/displace.ts';
import type { FlowRecord } from '../../src/flows/flow-index.ts';
import { frame, iso } from '../../src/frames.ts';
import { randomId, type ClientId, type GatewayId, type ResourceId } from '../../src/ids.ts';
import type { ClientFrame, ReplyPayload } from '../../src/messages.ts';
import { buildView } from '../../src/resource-view.ts';
import { parseVersion } from '../../src/versions.ts';
import { clientContext, ViewRenderer } from '../../src/access/client-views.ts';
import { newFlowCredentials } from './credentials.ts';
import type { AccountMemory, ObjectContext } from './object-context.ts';
import type { FlowHandoff, HandoffResult, RemoteFlows, RemoteGateway } from './remote-gateways.ts';
import { attachmentOf, send, tags, type ClientAttachment } from './sockets.ts';

type CreateFlow = Extract<ClientFrame, { event: 'create_flow' }>;

/**
 * Gateways with an open socket, one entry per gateway, with the live flows they would serve if
 * chosen: the pair's own flow there is replaced, so it does not count.
 */
function onlineGateways(object: ObjectContext, memory: AccountMemory, clientId: ClientId, resourceId: ResourceId, remote: readonly RemoteGateway[]): OnlineGateway[] {
  const seen = new Map<GatewayId, OnlineGateway>();
  const load = (id: GatewayId) => memory.flows.byGateway.get(id).size - memory.flows.ofPairOnGateway(clientId, resourceId, id).length;
  for (const ws of object.ctx.getWebSockets(tags.gateways)) {
    const a = attachmentOf(ws);
    if (a?.kind !== 'gateway' || seen.has(a.gatewayId) || !memory.state.gateways.has(a.gatewayId)) continue;
    const version = parseVersion(a.version);
    if (version) seen.set(a.gatewayId, { id: a.gatewayId, siteId: a.siteId, version, load: load(a.gatewayId) });
  }
  // Gateways of the account's other objects: the load counts the flows this object made there.
  for (const g of remote) {
    const version = parseVersion(g.version);
    if (!seen.has(g.id) && memory.state.gateways.has(g.id) && version) seen.set(g.id, { id: g.id, siteId: g.siteId, version, load: load(g.id) });
  }
  return [...seen.values()];
}

/**
 * `create_flow`, authorized in memory (issue 4): on success the flow is stored, replacing the
 * flows it displaces, the gateway gets `authorize_flow` and the client `flow_created`, both with
 * fresh credentials; the flow goes to Postgres later, from the outbox. A gateway on another object
 * of the account (docs/architecture.md#relays) gets the flow handed off to that object, which owns
 * it from then on; this object keeps a copy for the client's limits. Returns the flow this object
 * owns (and logs), if any.
 */
export async function createFlow(
  object: ObjectContext,
  memory: AccountMemory,
  ws: WebSocket,
  a: ClientAttachment,
  request: CreateFlow,
  nowMs: number,
  maxPerClient: number,
  remote: RemoteFlows,
): Promise<FlowRecord | null> {
  const { state } = memory;
  const resourceId = request.payload.resource_id as FlowRecord['resourceId'];
  const reply = (payload: ReplyPayload) => {
    if (request.ref !== undefined) send(ws, frame({ event: 'reply', ref: request.ref, payload }));
  };
  const token = state.tokens.get(a.tokenId);
  const renderer = new ViewRenderer(state);
  const ctx = clientContext(a, renderer);
  const elsewhere = remote.gateways();
  const decision: FlowDecision = token
    ? decideFlow(state, ctx, token, resourceId, onlineGateways(object, memory, a.clientId, resourceId, elsewhere), request.payload.connected_gateway_ids as GatewayId[], nowMs)
    : { ok: false, reason: 'forbidden' };
  const fail = (decision: Extract<FlowDecision, { ok: false }>) => {
    const payload = { resource_id: resourceId, reason: decision.reason, ...(decision.violatedProperties ? { violated_properties: decision.violatedProperties } : {}) };
    send(ws, frame({ event: 'flow_creation_failed', payload }));
    reply({ status: 'error', reason: decision.reason });
    return null;
  };
  if (!decision.ok) return fail(decision);
  const flow: FlowRecord = {
    id: randomId<'flow'>(),
    clientId: a.clientId,
    gatewayId: decision.gatewayId,
    resourceId,
    policyId: decision.grant.policyId,
    tokenId: a.tokenId,
    expiresAt: decision.expiresAt,
    remoteIp: a.remoteIp,
    country: a.country,
    createdAt: nowMs,
  };
  const { replaced, evicted, notices } = displace(memory.flows, flow, maxPerClient);
  const gatewaySocket = object.ctx.getWebSockets(tags.gateway(decision.gatewayId))[0];
  const holderOf = (id: GatewayId) => elsewhere.find((g) => g.id === id)?.holder;
  const holder = gatewaySocket ? undefined : holderOf(decision.gatewayId)!;
  const gatewayVersion = parseVersion(gatewaySocket ? attachmentOf(gatewaySocket)?.version : elsewhere.find((g) => g.id === decision.gatewayId)?.version);
  const resource = state.resources.get(resourceId)!;
  const gatewayView = gatewayVersion && buildView(resource, sitesOf(state, resourceId), gatewayVersion);
  const clientRecord = state.clients.get(a.clientId)!;
  const gateway = state.gateways.get(decision.gatewayId)!;
  const credentials = newFlowCredentials();
  const logRow = JSON.stringify({
    id: flow.id,
    account_id: state.accountId,
    client_id: flow.clientId,
    gateway_id: flow.gatewayId,
    resource_id: flow.resourceId,
    policy_id: flow.policyId,
    token_id: flow.tokenId,
    expires_at: iso(flow.expiresAt),
  });
  object.ctx.storage.transactionSync(() => {
    for (const f of [...replaced, ...evicted]) object.flowStore.delete(f.id);
    object.flowStore.put(flow);
    // The owner logs it: the holder of its gateway.
    if (!holder) object.flowStore.enqueueLog(flow.id, logRow);
  });
  for (const f of [...replaced, ...evicted]) memory.flows.remove(f.id);
  memory.flows.put(flow);
  const handoffs = new Map<string, FlowHandoff>();
  const handoffTo = (h: string) => {
    let x = handoffs.get(h);
    if (!x) handoffs.set(h, (x = { flow: null, client: null, logRow: null, frames: [], drop: [] }));
    return x;
  };
  for (const f of [...replaced, ...evicted]) {
    const h = object.ctx.getWebSockets(tags.gateway(f.gatewayId)).length > 0 ? undefined : holderOf(f.gatewayId);
    if (h !== undefined) handoffTo(h).drop.push(f.id);
  }
  for (const n of notices) {
    const text =
      n.event === 'reject_access'
        ? frame({ event: 'reject_access', payload: { client_id: n.clientId, resource_id: n.resourceId } })
        : frame({ event: n.event, payload: { client_id: n.clientId, resource_id: n.resourceId, expires_at: iso(n.expiresAt) } });
    const sockets = object.ctx.getWebSockets(tags.gateway(n.gatewayId));
    for (const g of sockets) send(g, text);
    const h = sockets.length > 0 ? undefined : holderOf(n.gatewayId);
    if (h !== undefined) handoffTo(h).frames.push({ gatewayId: n.gatewayId, text });
  }
  const authorize = frame({
    event: 'authorize_flow',
    payload: {
      flow_id: flow.id,
      client: { id: a.clientId, public_key: clientRecord.publicKey, version: a.version },
      resource: gatewayView,
      expires_at: iso(flow.expiresAt),
      ...credentials,
    },
  });
  if (gatewaySocket) send(gatewaySocket, authorize);
  else {
    const own = handoffTo(holder!);
    own.flow = flow;
    own.client = clientRecord;
    own.logRow = logRow;
    own.frames.push({ gatewayId: decision.gatewayId, text: authorize });
  }
  // The gateway hears of the flow before the client does, as when both are on this object.
  const answers = await Promise.all([...handoffs].map(([h, x]) => remote.handOff(h, x).catch((): HandoffResult => ({ ok: false, reason: 'offline' }))));
  const refused = answers.find((r) => !r.ok);
  if (refused && !refused.ok) {
    memory.flows.remove(flow.id);
    object.ctx.storage.transactionSync(() => object.flowStore.delete(flow.id));
    if (refused.reason === 'offline') return fail({ ok: false, reason: 'offline' });
    // docs/protocol.md#limits: the owner's flow log is full, as when it is this object's.
    send(ws, frame({ event: 'error', payload: { reason: refused.detail } }));
    reply({ status: 'error', reason: 'flow_log_full' });
    return null;
  }
  send(
    ws,
    frame({
      event: 'flow_created',
      payload: {
        ...(request.ref !== undefined ? { ref: request.ref } : {}),
        resource_id: resourceId,
        gateway_id: decision.gatewayId,
        site_id: decision.siteId,
        gateway_public_key: gateway.publicKey,
        ...credentials,
      },
    }),
  );
  reply({ status: 'ok', flow_id: flow.id });
  return holder ? null : flow;
}
