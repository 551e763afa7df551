import { type Context, Hono } from 'hono';
import { errorMessage } from '../../src/errors.ts';
import { clientAddress } from '../client-address.ts';
import { COUNTRY_HEADER, MAX_QUERY_BYTES, parseConnectParams, queryTooLong, REMOTE_IP_HEADER } from '../connect-params.ts';
import { ACCOUNT_WAIT_MS, isKnownAccount } from '../directory/directory.ts';
import { httpError } from '../http-errors.ts';
import { limitConnect } from '../rate-limits.ts';
import { type LeaseEnd, PlacementLeases } from '../account/relay-leases.ts';
import { REGION_HEADER } from '../account/relay-placement.ts';
import { connectRelay, followPlacement, leaseOf, RELAY_LEASE_HEADER, RELAY_LEASE_TTL_MS, reportPlaced } from '../account/relay-writer.ts';
import { log } from '../log.ts';

/** This isolate's placement leases (workers/account/relay-leases.ts). */
const leases = new PlacementLeases();
/** How many asks of other connects one connect waits for, at most, before it asks the writer itself. */
const MAX_LEASE_WAITS = 64;
/**
 * How long it waits for one: an ask the writer is slow to answer (its device waits for a new
 * token, or the object hydrates) must not hold the connects behind it.
 */
const LEASE_ASK_WAIT_MS = 100;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The Worker's work after the answer (waitUntil); a test's app.request has no execution context (Hono throws), and waits for it instead. */
async function afterAnswer(c: Context<{ Bindings: Env }>, work: Promise<void>): Promise<void> {
  try {
    c.executionCtx.waitUntil(work);
  } catch {
    await work;
  }
}

function reportEnd(c: Context<{ Bindings: Env }>, end: LeaseEnd | null): Promise<void> {
  if (!end) return Promise.resolve();
  return afterAnswer(
    c,
    reportPlaced(c.env, end.accountId, end.name, end.sockets, end.connects).catch((err: unknown) =>
      log.warn({ component: 'relay', account: end.accountId, relay: end.name, err: errorMessage(err) }, 'could not tell the writer how a placement lease ended'),
    ),
  );
}

/**
 * GET /v1/{client,gateway}/websocket (docs/protocol.md#websocket-routes; the path in
 * docs/architecture.md#a-device-connects): every attempt counts against its address's rate limit;
 * then the parameters and the token's shape; an account the edge does not know is refused here,
 * before any object exists for it; then the account's rate limit. The token itself is checked
 * against its salted hash in the account's object, which also holds the socket.
 */
export const websockets = new Hono<{ Bindings: Env }>().get('/v1/:kind{client|gateway}/websocket', async (c) => {
  const address = clientAddress(c.req.raw, c.env);
  await limitConnect(c.env, c.env.CONNECTS_PER_IP, address.ip, 'address');
  const url = new URL(c.req.url);
  if (queryTooLong(url)) throw httpError(414, { error: 'query string too long', detail: `at most ${MAX_QUERY_BYTES} bytes` });
  const parsed = parseConnectParams(url);
  if (!parsed.ok) throw httpError(400, { error: 'invalid parameters', detail: parsed.detail });
  if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') throw httpError(426, { error: 'expected a WebSocket upgrade' });
  const accountId = parsed.params.token.accountId;
  // An account the edge does not know costs no object and no query (at most a short wait, in case
  // it was committed a moment ago); the answer is an unknown token's.
  let known: boolean;
  try {
    known = await isKnownAccount(c.env, accountId, { waitMs: ACCOUNT_WAIT_MS });
  } catch (err) {
    throw httpError(503, { error: 'database unavailable, retry later', detail: errorMessage(err) }, { cause: err });
  }
  if (!known) throw httpError(401, { error: 'invalid token' });
  await limitConnect(c.env, c.env.CONNECTS_PER_ACCOUNT, accountId, 'account');
  const headers = new Headers(c.req.raw.headers);
  headers.delete(REMOTE_IP_HEADER);
  headers.delete(COUNTRY_HEADER);
  headers.delete(REGION_HEADER);
  headers.delete(RELAY_LEASE_HEADER);
  // The account's writer places the device on a relay of its continent (docs/architecture.md#relays).
  const continent = (c.req.raw.cf as { continent?: string } | undefined)?.continent;
  if (continent) headers.set(REGION_HEADER, continent);
  if (address.ip) headers.set(REMOTE_IP_HEADER, address.ip);
  if (address.country) headers.set(COUNTRY_HEADER, address.country);
  const region = continent ?? '';
  const client = c.req.param('kind') === 'client';
  let asked: ((leased: boolean) => void) | undefined;
  // A client goes straight to the relay a lease of this isolate names, without asking the writer;
  // a relay that fails ends the lease, and the connect asks the writer after all. While another
  // connect asks the writer, this one waits for that answer's lease (a bounded number of times).
  for (let waits = 0; client && asked === undefined; waits++) {
    const { lease, ended } = leases.take(accountId, region, Date.now());
    await reportEnd(c, ended);
    if (lease) {
      const { response, sockets } = await connectRelay(c.env, accountId, lease.name, new Request(c.req.url, { method: 'GET', headers }));
      const broken = response.status >= 500;
      await reportEnd(c, leases.answered(lease, sockets, broken));
      if (!broken) return response;
    }
    const turn = waits < MAX_LEASE_WAITS ? leases.ask(accountId, region, Date.now(), RELAY_LEASE_TTL_MS) : { done: () => {} };
    if ('done' in turn) asked = turn.done;
    else if (!(await Promise.race([turn.wait, sleep(LEASE_ASK_WAIT_MS).then(() => false)]))) asked = () => {};
  }
  if (client) headers.set(RELAY_LEASE_HEADER, '1');
  const stub = c.env.ACCOUNT.get(c.env.ACCOUNT.idFromName(accountId));
  const request = new Request(c.req.url, { method: 'GET', headers });
  let placed: Awaited<ReturnType<typeof followPlacement>>;
  try {
    const answer = await stub.fetch(new Request(request));
    // The lease first, so that the connects waiting for it go on while this one follows to the relay.
    const granted = leaseOf(accountId, answer);
    if (granted) await reportEnd(c, leases.grant(accountId, region, granted.relay, granted.connects, RELAY_LEASE_TTL_MS, Date.now()));
    asked?.(granted !== null);
    // A device the writer placed on a relay connects to the relay itself, not through the writer.
    placed = await followPlacement(c.env, accountId, request, answer);
  } finally {
    asked?.(false);
  }
  const { response, report } = placed;
  if (report)
    await afterAnswer(
      c,
      report().catch((err: unknown) => log.warn({ component: 'relay', account: accountId, err: errorMessage(err) }, 'could not tell the writer how a placed connect ended')),
    );
  return response;
});
