import { isLocalRun } from './edge-env.ts';

export interface ClientAddress {
  ip: string | null;
  /** ISO country code; null when unknown (`XX` or none). */
  country: string | null;
}

/**
 * Where a device connects from (docs/protocol.md#websocket-routes). A deployed Worker believes only
 * what Cloudflare sets: `cf-connecting-ip` and `request.cf.country` (or `cf-ipcountry`); a device
 * cannot forge those through Cloudflare's edge. Local runs also take `x-real-ip`, which the dev
 * CLIs and proxies send.
 */
export function clientAddress(request: Request, env: Env): ClientAddress {
  const h = request.headers;
  const ip = h.get('cf-connecting-ip') ?? (isLocalRun(env) ? h.get('x-real-ip') : null);
  const country = (request.cf as { country?: string } | undefined)?.country ?? h.get('cf-ipcountry');
  return { ip: ip || null, country: country && country !== 'XX' ? country : null };
}
