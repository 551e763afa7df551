export type DeviceKind = 'client' | 'gateway';

/** What a device presents when it connects (PROTOCOL section 3). */
export interface ConnectParams {
  token: string;
  externalId: string;
  name: string;
  publicKey: string;
  version: string;
}

/** The WebSocket URL of PROTOCOL section 3 for a device of the Worker at `base` (http(s) or ws(s)). */
export function deviceSocketUrl(base: string, kind: DeviceKind, p: ConnectParams): string {
  const u = new URL(`/v1/${kind}/websocket`, base.replace(/^http/, 'ws'));
  u.search = new URLSearchParams({ token: p.token, external_id: p.externalId, name: p.name, public_key: p.publicKey, version: p.version }).toString();
  return u.toString();
}
