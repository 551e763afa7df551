export type DeviceKind = 'client' | 'gateway';

/** What a device presents when it connects (docs/protocol.md#websocket-routes). */
export interface ConnectParams {
  token: string;
  externalId: string;
  name: string;
  publicKey: string;
  version: string;
}

/** The WebSocket URL of docs/protocol.md#websocket-routes for a device of the Worker at `base` (http(s) or ws(s)). */
export function deviceSocketUrl(base: string, kind: DeviceKind, p: ConnectParams): string {
  const u = new URL(`/v1/${kind}/websocket`, base.replace(/^http/, 'ws'));
  u.search = new URLSearchParams({ token: p.token, external_id: p.externalId, name: p.name, public_key: p.publicKey, version: p.version }).toString();
  return u.toString();
}
