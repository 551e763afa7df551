import type { AccountState } from '../../src/access/account-state.ts';
import { accountActive, actorActive } from '../../src/access/access.ts';
import { initClient, ViewRenderer } from '../../src/access/client-views.ts';
import { frame, iso } from '../../src/frames.ts';
import type { ActorId, SiteId, TokenId } from '../../src/ids.ts';
import type { Cached, TokenRecord } from '../../src/records.ts';
import { checkToken, type ParsedToken } from '../../src/tokens.ts';
import { COUNTRY_HEADER, REMOTE_IP_HEADER, type DeviceKind } from '../connect-params.ts';
import type { AccountMemory, ObjectContext } from './object-context.ts';
import { attach, send, tagsOf, type Attachment, type ClientAttachment, type GatewayAttachment } from './sockets.ts';

export type Admission = { ok: true; token: TokenRecord } | { ok: false; error: string };

/**
 * Whether a device may connect with this token (docs/protocol.md#websocket-routes): the token exists, is of the
 * kind the route serves, matches its salted hash, has not expired; the account is active; a
 * client token's actor is active, a site token's site exists. Every refusal is a 401.
 */
export async function admit(state: AccountState, kind: DeviceKind, presented: ParsedToken, nowMs: number): Promise<Admission> {
  const token = state.tokens.get(presented.tokenId);
  const check = await checkToken(token, kind === 'client' ? 'client' : 'site', presented.secret, nowMs);
  if (check === 'unknown' || check === 'mismatch') return { ok: false, error: 'invalid token' };
  if (check === 'wrong_type') return { ok: false, error: `not a ${kind === 'client' ? 'client' : 'site'} token` };
  if (check === 'expired') return { ok: false, error: 'token expired' };
  if (!accountActive(state)) return { ok: false, error: 'account disabled or deleted' };
  const owner = token!.ownerId;
  if (kind === 'client' && !actorActive(state, owner as ActorId)) return { ok: false, error: 'actor disabled or deleted' };
  if (kind === 'gateway' && !state.sites.has(owner as SiteId)) return { ok: false, error: 'site deleted' };
  return { ok: true, token: token! };
}

/**
 * Stores the device when it was just written (`written`; an unchanged one is already cached),
 * accepts its socket (hibernatable, tagged, with its attachment) and sends its `init`. Returns the
 * device's end of the socket for the 101 response.
 */
export function acceptDevice(object: ObjectContext, memory: AccountMemory, device: Cached, written: boolean, tokenId: TokenId, request: Request, nowMs: number): WebSocket {
  const remoteIp = request.headers.get(REMOTE_IP_HEADER);
  const country = request.headers.get(COUNTRY_HEADER);
  const version = new URL(request.url).searchParams.get('version')!;
  const [deviceEnd, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
  let first = '';
  // Before the transaction: a number whose connect rolls back is spent all the same, never reused.
  const conn = object.meta.nextConnection();
  object.ctx.storage.transactionSync(() => {
    if (written) {
      memory.state.put(device);
      object.caches.put(device);
    }
    let a: Attachment;
    if (device.table === 'clients') {
      const client: ClientAttachment = { kind: 'client', conn, clientId: device.record.id, actorId: device.record.actorId, tokenId, version, remoteIp, country };
      a = client;
      object.ctx.acceptWebSocket(server, tagsOf(a));
      attach(server, a);
      first = object.views.batch(() => initClient(memory.state, object.views, new ViewRenderer(memory.state), client, nowMs));
    } else if (device.table === 'gateways') {
      a = { kind: 'gateway', conn, gatewayId: device.record.id, siteId: device.record.siteId, tokenId, version, remoteIp, country };
      object.ctx.acceptWebSocket(server, tagsOf(a));
      attach(server, a);
      first = gatewayInit(memory, a);
    }
  });
  send(server, first);
  return deviceEnd;
}

/** The gateway's live authorizations, so that a reconnecting gateway keeps serving them. */
function gatewayInit(memory: AccountMemory, a: GatewayAttachment): string {
  const flows = memory.flows.ofGateway(a.gatewayId).map((f) => ({
    flow_id: f.id,
    client_id: f.clientId,
    resource_id: f.resourceId,
    expires_at: iso(f.expiresAt),
  }));
  return frame({ event: 'init', payload: { gateway_id: a.gatewayId, site_id: a.siteId, flows } });
}
