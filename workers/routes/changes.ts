import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { accountIdOf, changeBatchSchema } from '../../src/change.ts';
import { asId } from '../../src/ids.ts';
import { SIGNATURE_HEADER, verifySignature } from '../../src/signature.ts';

/**
 * POST /v1/accounts/:id/changes (PROTOCOL section 2): the signature first, then the body, validated
 * once; only a well-formed batch of this account's changes reaches the account's object, and the
 * answer comes after the object stored it.
 */
export const changes = new Hono<{ Bindings: Env }>().post('/v1/accounts/:id/changes', async (c) => {
  const body = await c.req.text();
  const check = await verifySignature(c.env.REPLICATOR_SECRET, c.req.header(SIGNATURE_HEADER), body, Math.floor(Date.now() / 1000));
  if (check !== 'ok') return c.json({ error: `signature ${check}`, detail: `expected ${SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256>` }, 401);
  const accountId = asId<'account'>(c.req.param('id'));
  if (!accountId) return c.json({ error: 'invalid account id', detail: c.req.param('id') }, 400);
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    return c.json({ error: 'malformed JSON', detail: err instanceof Error ? err.message : String(err) }, 400);
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
    throw new HTTPException(503, { message: `account object unavailable: ${err instanceof Error ? err.message : String(err)}`, cause: err });
  }
  if (!result.ok) return c.json({ error: result.error }, result.status);
  return c.json({ applied: result.applied, skipped: result.skipped, position: result.position });
});
