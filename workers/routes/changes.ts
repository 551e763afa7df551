import { Hono, type Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { accountIdOf, changeBatchSchema } from '../../src/change.ts';
import { errorMessage } from '../../src/errors.ts';
import { asId } from '../../src/ids.ts';
import { SIGNATURE_HEADER, verifySignature } from '../../src/signature.ts';

/**
 * POST /v1/accounts/:id/changes (PROTOCOL section 2): the signature first, then the body, validated
 * once; only a well-formed batch of this account's changes reaches the account's object, and the
 * answer comes after the object stored it.
 */
export const changes = new Hono<{ Bindings: Env }>();

/** The replicator's HMAC over the raw body (PROTOCOL section 2): null when it holds, else the 401. */
async function refuse(c: Context<{ Bindings: Env }>, body: string): Promise<Response | null> {
  const check = await verifySignature(c.env.REPLICATOR_SECRET, c.req.header(SIGNATURE_HEADER), body, Math.floor(Date.now() / 1000));
  if (check === 'ok') return null;
  return c.json({ error: `signature ${check}`, detail: `expected ${SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256>` }, 401);
}

function unavailable(err: unknown): HTTPException {
  return new HTTPException(503, { message: `account object unavailable: ${errorMessage(err)}`, cause: err });
}

changes.post('/v1/accounts/:id/changes', async (c) => {
  const body = await c.req.text();
  const refused = await refuse(c, body);
  if (refused) return refused;
  const accountId = asId<'account'>(c.req.param('id'));
  if (!accountId) return c.json({ error: 'invalid account id', detail: c.req.param('id') }, 400);
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    return c.json({ error: 'malformed JSON', detail: errorMessage(err) }, 400);
  }
  const parsed = changeBatchSchema.safeParse(raw);
  if (!parsed.success) {
    return c.json({ error: 'invalid change batch', detail: parsed.error.issues.slice(0, 20).map((i) => ({ path: i.path.join('.'), message: i.message })) }, 400);
  }
  for (const [i, change] of parsed.data.changes.entries()) {
    if (change.op === 'truncate') continue;
    const owner = accountIdOf(change.table, (change.data ?? change.old)!);
    if (owner !== accountId) return c.json({ error: 'change of another account', detail: { index: i, account_id: owner ?? null } }, 400);
  }
  const stub = c.env.ACCOUNT.get(c.env.ACCOUNT.idFromName(accountId));
  let result;
  try {
    result = await stub.applyChanges(accountId, parsed.data.changes);
  } catch (err) {
    throw unavailable(err);
  }
  if (!result.ok) return c.json({ error: result.error }, result.status);
  return c.json({ applied: result.applied, skipped: result.skipped, position: result.position });
});

/**
 * POST /v1/accounts/:id/rehydrate, signed like changes (any body, e.g. `{}`): the object reloads its
 * account from Postgres. The recovery after changes were lost for good (an invalidated slot).
 */
changes.post('/v1/accounts/:id/rehydrate', async (c) => {
  const refused = await refuse(c, await c.req.text());
  if (refused) return refused;
  const accountId = asId<'account'>(c.req.param('id'));
  if (!accountId) return c.json({ error: 'invalid account id', detail: c.req.param('id') }, 400);
  let result;
  try {
    result = await c.env.ACCOUNT.get(c.env.ACCOUNT.idFromName(accountId)).rehydrate(accountId);
  } catch (err) {
    throw unavailable(err);
  }
  if (!result.ok) return c.json({ error: result.error }, result.status);
  return c.json({ rehydrated: true, position: result.position });
});
