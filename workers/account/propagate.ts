import type { Dirty } from '../../src/access/dirty.ts';
import { sitesOf } from '../../src/access/access.ts';
import { pairKey, type FlowRecord } from '../../src/flows/flow-index.ts';
import { noticesForPair, reviewFlow, type GatewayNotice } from '../../src/flows/review.ts';
import { frame, iso } from '../../src/frames.ts';
import type { FlowId, GatewayId, ResourceId } from '../../src/ids.ts';
import { buildView } from '../../src/resource-view.ts';
import { parseVersion } from '../../src/versions.ts';
import { diffClient, ViewRenderer } from '../../src/access/client-views.ts';
import type { AccountMemory, ObjectContext } from './object-context.ts';
import { attachmentOf, close, send, tags, type GatewayAttachment } from './sockets.ts';
import { socketVerdict } from './verdicts.ts';

/** Beyond this many targeted actors/clients/tokens, visiting every socket once is cheaper than a lookup per tag. */
const TARGETED_LOOKUP_LIMIT = 64;

interface Outbox {
  frames: Map<WebSocket, string[]>;
  closes: { ws: WebSocket; code: number; reason: string }[];
}

function queue(out: Outbox, ws: WebSocket, text: string): void {
  const list = out.frames.get(ws);
  if (list) list.push(text);
  else out.frames.set(ws, [text]);
}

/**
 * Pushes the consequences of a batch (or of the clock) to the sockets it can affect: closes the
 * devices that lost their right to be connected, sends each client the difference in its
 * resource views, and reviews the flows whose grant may have changed. Storage writes happen in
 * one transaction; frames go out after it. Returns whether it closed any socket.
 */
export function propagate(object: ObjectContext, memory: AccountMemory, dirty: Dirty, nowMs: number): boolean {
  if (dirty.empty) return false;
  const out: Outbox = { frames: new Map(), closes: [] };
  object.ctx.storage.transactionSync(() =>
    object.views.batch(() => {
      syncClients(object, memory, dirty, nowMs, out);
      syncGateways(object, memory, dirty, nowMs, out);
      reviewFlows(object, memory, dirty, nowMs, out);
    }),
  );
  for (const [ws, frames] of out.frames) for (const f of frames) send(ws, f);
  for (const c of out.closes) close(c.ws, c.code, c.reason);
  return out.closes.length > 0;
}

function clientSockets(object: ObjectContext, dirty: Dirty): WebSocket[] {
  const targeted = dirty.actors.size + dirty.pairs.size + dirty.clients.size + dirty.tokens.size;
  if (dirty.everything || dirty.resources.size > 0 || targeted > TARGETED_LOOKUP_LIMIT) return object.ctx.getWebSockets(tags.clients);
  const found = new Set<WebSocket>();
  const add = (tag: string) => {
    for (const ws of object.ctx.getWebSockets(tag)) found.add(ws);
  };
  for (const id of dirty.actors) add(tags.actor(id));
  for (const id of dirty.pairs.keys()) add(tags.actor(id));
  for (const id of dirty.clients) add(tags.client(id));
  for (const id of dirty.tokens) add(tags.token(id));
  return [...found];
}

/**
 * Whether a batch can change whether a connected client may stay: it touched the account, an
 * actor, a client or a token, or a token expired that the alarm has not closed yet. Otherwise
 * every socket's verdict is still the null it had (each change that could alter it, and the
 * alarm at each expiry, examined it), and the tables it reads need not be loaded after a wake.
 */
function verdictsMayChange(memory: AccountMemory, dirty: Dirty, nowMs: number): boolean {
  if (dirty.everything || dirty.actors.size > 0 || dirty.clients.size > 0 || dirty.tokens.size > 0) return true;
  const expiry = memory.state.earliestTokenExpiry();
  return expiry !== null && expiry <= nowMs;
}

function syncClients(object: ObjectContext, memory: AccountMemory, dirty: Dirty, nowMs: number, out: Outbox): void {
  const renderer = new ViewRenderer(memory.state);
  const verdicts = verdictsMayChange(memory, dirty, nowMs);
  for (const ws of clientSockets(object, dirty)) {
    const a = attachmentOf(ws);
    if (a?.kind !== 'client') continue;
    const verdict = verdicts ? socketVerdict(memory.state, a, nowMs) : null;
    if (verdict) {
      object.views.drop(a.conn);
      out.closes.push({ ws, ...verdict });
      continue;
    }
    if (!dirty.touches(a.actorId, a.clientId)) continue;
    // Its verdict is null (examined now, or unchangeable by this batch): it stands.
    for (const f of diffClient(memory.state, object.views, renderer, a, dirty.resourcesFor(a.actorId, a.clientId), nowMs, true)) queue(out, ws, f);
  }
}

function syncGateways(object: ObjectContext, memory: AccountMemory, dirty: Dirty, nowMs: number, out: Outbox): void {
  if (!dirty.everything && dirty.gateways.size === 0 && dirty.sites.size === 0 && dirty.tokens.size === 0) return;
  for (const ws of object.ctx.getWebSockets(tags.gateways)) {
    const a = attachmentOf(ws);
    if (a?.kind !== 'gateway') continue;
    const verdict = socketVerdict(memory.state, a, nowMs);
    if (verdict) out.closes.push({ ws, ...verdict });
  }
}

/** The flows a batch may have affected, grouped by (client, resource) pair with all of the pair's flows. */
function affectedPairs(memory: AccountMemory, dirty: Dirty): Map<string, FlowRecord[]> {
  const { state, flows } = memory;
  const ids = new Set<FlowId>();
  const addAll = (set: Iterable<FlowId>) => {
    for (const id of set) ids.add(id);
  };
  if (dirty.everything) addAll(flows.flows.keys());
  else {
    for (const t of dirty.tokens) addAll(flows.byToken.get(t));
    for (const r of dirty.resources) addAll(flows.byResource.get(r));
    for (const a of dirty.actors) for (const c of state.clientsOfActor.get(a)) addAll(flows.byClient.get(c));
    for (const [a, resources] of dirty.pairs) {
      for (const c of state.clientsOfActor.get(a)) for (const r of resources) addAll(flows.byPair.get(pairKey(c, r)));
    }
    for (const c of dirty.clients) addAll(flows.byClient.get(c));
    for (const g of dirty.gateways) addAll(flows.byGateway.get(g));
    for (const s of dirty.sites) for (const g of state.gatewaysOfSite.get(s)) addAll(flows.byGateway.get(g));
  }
  const pairs = new Map<string, FlowRecord[]>();
  for (const id of ids) {
    const f = flows.flows.get(id);
    if (!f) continue;
    const key = pairKey(f.clientId, f.resourceId);
    if (!pairs.has(key))
      pairs.set(
        key,
        [...flows.byPair.get(key)].map((x) => flows.flows.get(x)!),
      );
  }
  return pairs;
}

function reviewFlows(object: ObjectContext, memory: AccountMemory, dirty: Dirty, nowMs: number, out: Outbox): void {
  const { state, flows } = memory;
  if (flows.flows.size === 0) return;
  for (const before of affectedPairs(memory, dirty).values()) {
    const kept: FlowRecord[] = [];
    const reviewed: FlowRecord[] = [];
    for (const f of before) {
      const verdict = reviewFlow(state, f, nowMs, dirty.breaking.has(f.resourceId));
      if (verdict.kind === 'drop' || verdict.kind === 'revoke') {
        flows.remove(f.id);
        object.flowStore.delete(f.id);
        if (verdict.kind === 'revoke') reviewed.push(f);
      } else {
        reviewed.push(f);
        const next = verdict.kind === 'reauthorize' ? verdict.flow : f;
        if (verdict.kind === 'reauthorize') {
          flows.put(next);
          object.flowStore.put(next);
        }
        kept.push(next);
      }
    }
    for (const n of noticesForPair(reviewed, kept)) {
      const text = noticeFrame(n);
      for (const ws of object.ctx.getWebSockets(tags.gateway(n.gatewayId))) queue(out, ws, text);
    }
  }
  notifyReshaped(object, memory, dirty, out);
}

function noticeFrame(n: GatewayNotice): string {
  return n.event === 'reject_access'
    ? frame({ event: 'reject_access', payload: { client_id: n.clientId, resource_id: n.resourceId } })
    : frame({ event: n.event, payload: { client_id: n.clientId, resource_id: n.resourceId, expires_at: iso(n.expiresAt) } });
}

/** A resource's filters changed: each gateway with live flows for it gets the new view once (docs/protocol.md#gateway-frames). */
function notifyReshaped(object: ObjectContext, memory: AccountMemory, dirty: Dirty, out: Outbox): void {
  const { state, flows } = memory;
  for (const resourceId of dirty.reshaped) {
    const resource = state.resources.get(resourceId);
    if (!resource) continue;
    const gateways = new Set<GatewayId>();
    for (const id of flows.byResource.get(resourceId)) gateways.add(flows.flows.get(id)!.gatewayId);
    for (const gatewayId of gateways) {
      for (const ws of object.ctx.getWebSockets(tags.gateway(gatewayId))) {
        const a = attachmentOf(ws) as GatewayAttachment | null;
        const version = parseVersion(a?.version);
        const view = version && buildView(resource, sitesOf(state, resourceId as ResourceId), version);
        if (view) queue(out, ws, frame({ event: 'resource_updated', payload: view }));
      }
    }
  }
}
