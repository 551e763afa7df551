import { Hono } from 'hono';
import { COUNTRY_HEADER, parseConnectParams, REMOTE_IP_HEADER } from '../connect-params.ts';
import { errorMessage } from '../../src/errors.ts';
import { isKnownAccount } from '../directory/directory.ts';
import { httpError } from '../http-errors.ts';

/**
 * GET /v1/{client,gateway}/websocket (docs/protocol.md#websocket-routes): parameters and the token's shape are
 * checked here; the token itself, against its salted hash, in the account's object, which also
 * holds the socket.
 */
export const websockets = new Hono<{ Bindings: Env }>().get('/v1/:kind{client|gateway}/websocket', async (c) => {
  const parsed = parseConnectParams(new URL(c.req.url));
  if (!parsed.ok) throw httpError(400, { error: 'invalid parameters', detail: parsed.detail });
  if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') throw httpError(426, { error: 'expected a WebSocket upgrade' });
  const headers = new Headers(c.req.raw.headers);
  headers.delete(REMOTE_IP_HEADER);
  headers.delete(COUNTRY_HEADER);
  const ip = c.req.header('cf-connecting-ip') ?? c.req.header('x-real-ip');
  const country = (c.req.raw.cf as { country?: string } | undefined)?.country ?? c.req.header('cf-ipcountry');
  if (ip) headers.set(REMOTE_IP_HEADER, ip);
  if (country && country !== 'XX') headers.set(COUNTRY_HEADER, country);
  const accountId = parsed.params.token.accountId;
  // An account the edge does not know costs no object and no query; the answer is an unknown token's.
  let known: boolean;
  try {
    known = await isKnownAccount(c.env, accountId);
  } catch (err) {
    throw httpError(503, { error: 'database unavailable, retry later', detail: errorMessage(err) }, { cause: err });
  }
  if (!known) throw httpError(401, { error: 'invalid token' });
  const stub = c.env.ACCOUNT.get(c.env.ACCOUNT.idFromName(accountId));
  return stub.fetch(new Request(c.req.url, { method: 'GET', headers }));
});
