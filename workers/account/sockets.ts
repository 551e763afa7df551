import type { ActorId, ClientId, GatewayId, SiteId, TokenId } from '../../src/ids.ts';

/**
 * What a socket carries across hibernation (small; everything else is rebuilt from SQLite).
 * Namespaced, so that sockets without it are ignored.
 */
export interface ClientAttachment {
  kind: 'client';
  conn: number;
  clientId: ClientId;
  actorId: ActorId;
  tokenId: TokenId;
  version: string;
  remoteIp: string | null;
  country: string | null;
}

export interface GatewayAttachment {
  kind: 'gateway';
  conn: number;
  gatewayId: GatewayId;
  siteId: SiteId;
  tokenId: TokenId;
  version: string;
  remoteIp: string | null;
  country: string | null;
}

export type Attachment = ClientAttachment | GatewayAttachment;

interface Stored {
  edgeplane?: Attachment;
}

export const tags = {
  clients: 'kind:client',
  gateways: 'kind:gateway',
  client: (id: ClientId) => `client:${id}`,
  actor: (id: ActorId) => `actor:${id}`,
  gateway: (id: GatewayId) => `gateway:${id}`,
  site: (id: SiteId) => `site:${id}`,
  token: (id: TokenId) => `token:${id}`,
};

export function tagsOf(a: Attachment): string[] {
  return a.kind === 'client'
    ? [tags.clients, tags.client(a.clientId), tags.actor(a.actorId), tags.token(a.tokenId)]
    : [tags.gateways, tags.gateway(a.gatewayId), tags.site(a.siteId), tags.token(a.tokenId)];
}

const cache = new WeakMap<WebSocket, Attachment | null>();

export function attach(ws: WebSocket, a: Attachment): void {
  ws.serializeAttachment({ edgeplane: a } satisfies Stored);
  cache.set(ws, a);
}

export function attachmentOf(ws: WebSocket): Attachment | null {
  let a = cache.get(ws);
  if (a === undefined) {
    const stored = ws.deserializeAttachment() as Stored | null;
    a = stored?.edgeplane ? sameShape(stored.edgeplane) : null;
    cache.set(ws, a);
  }
  return a;
}

/**
 * The attachment rebuilt as a literal of the one shape `attach` is given. Used as read back by the
 * structured clone, the first fan-out over thousands of sockets (after a wake, and after their
 * connects) ran about twice as long as the next one (bench/RESULTS.md "Attachments of one shape").
 */
function sameShape(a: Attachment): Attachment {
  return a.kind === 'client'
    ? { kind: 'client', conn: a.conn, clientId: a.clientId, actorId: a.actorId, tokenId: a.tokenId, version: a.version, remoteIp: a.remoteIp, country: a.country }
    : { kind: 'gateway', conn: a.conn, gatewayId: a.gatewayId, siteId: a.siteId, tokenId: a.tokenId, version: a.version, remoteIp: a.remoteIp, country: a.country };
}

export function send(ws: WebSocket, text: string): void {
  try {
    ws.send(text);
  } catch {
    // The socket closed under us; its close handler cleans up.
  }
}

/** Close codes of docs/protocol.md#websocket-routes. */
export const CLOSE = {
  tokenGone: 4001,
  accessRevoked: 4003,
  /** A device that keeps sending create_flow beyond its rate limit (docs/protocol.md#limits). */
  policyViolation: 1008,
  restart: 1012,
} as const;

export function close(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // Already closed.
  }
}
