import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { z } from 'zod';
import type { HTTPException } from 'hono/http-exception';
import { accountRowAfter, changeBatchSchema, epochSchema, firstForeignChange } from '../../src/change.ts';
import { errorMessage } from '../../src/errors.ts';
import { asId, type AccountId } from '../../src/ids.ts';
import { parseSignatureHeader, SIGNATURE_HEADER, verifySignature } from '../../src/signature.ts';
import { recordAccount } from '../directory/directory.ts';
import { httpError } from '../http-errors.ts';
import { checkedSecretProblems } from '../secrets.ts';

/**
 * POST /v1/accounts/:id/changes (docs/protocol.md#changes-route): the signature first, then the body, validated
 * once; only a well-formed batch of this account's changes reaches the account's object, and the
 * answer comes after the object stored it.
 */
export const changes = new Hono<{ Bindings: Env }>();

type RouteContext = Context<{ Bindings: Env }>;

/**
 * The largest request body the changes and rehydrate routes read (docs/protocol.md#limits): eight
 * times the replicator's largest batch (FORWARD_BATCH_BYTES, 1 MiB; oversized rows travel as
 * key-only stubs), and a quarter of what an object call may carry.
 */
export const MAX_CHANGES_BODY_BYTES = 8 * 1024 * 1024;

const SIGNATURE_DETAIL = `expected ${SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256>`;

/**
 * Before a byte of the body is read: a secret a deployed Worker must not use refuses everything
 * (503, docs/protocol.md#worker-health-and-errors); the signature header must be there, well-formed
 * and fresh (401); then the body is read up to MAX_CHANGES_BODY_BYTES (413).
 */
const signatureFirst: MiddlewareHandler<{ Bindings: Env }> = async (c, next) => {
  const problems = checkedSecretProblems(c.env);
  if (problems.length > 0) throw httpError(503, { error: 'replicator secret not fit to accept changes', detail: problems });
  const header = parseSignatureHeader(c.req.header(SIGNATURE_HEADER), Math.floor(Date.now() / 1000));
  if (typeof header === 'string') throw httpError(401, { error: `signature ${header}`, detail: SIGNATURE_DETAIL });
  await next();
};

const limitedBody = bodyLimit({
  maxSize: MAX_CHANGES_BODY_BYTES,
  onError: () => {
    throw httpError(413, { error: 'request body too large', detail: `at most ${MAX_CHANGES_BODY_BYTES} bytes` });
  },
});

/** The replicator's HMAC over the raw body (docs/protocol.md#changes-route); a 401 unless it holds. */
async function checkSignature(c: RouteContext, body: string): Promise<void> {
  const check = await verifySignature(c.env.REPLICATOR_SECRET!, c.req.header(SIGNATURE_HEADER), body, Math.floor(Date.now() / 1000));
  if (check !== 'ok') throw httpError(401, { error: `signature ${check}`, detail: SIGNATURE_DETAIL });
}

function accountIdParam(c: RouteContext): AccountId {
  const accountId = asId<'account'>(c.req.param('id'));
  if (!accountId) throw httpError(400, { error: 'invalid account id', detail: c.req.param('id') });
  return accountId;
}

function unavailable(err: unknown): HTTPException {
  return httpError(503, { error: `account object unavailable: ${errorMessage(err)}` }, { cause: err });
}

/**
 * The directory learns whether the account exists (docs/protocol.md#account-directory): what the
 * object holds after a batch, or a live account row a batch brings before its object applies it.
 * Before the answer: if this fails the replicator retries the batch (stale by then, so only this repeats).
 */
async function tellDirectory(c: RouteContext, accountId: AccountId, exists: boolean, always: boolean): Promise<void> {
  try {
    await recordAccount(c.env, accountId, exists, always);
  } catch (err) {
    throw httpError(503, { error: `account directory unavailable: ${errorMessage(err)}` }, { cause: err });
  }
}

changes.post('/v1/accounts/:id/changes', signatureFirst, limitedBody, async (c) => {
  const body = await c.req.text();
  await checkSignature(c, body);
  const accountId = accountIdParam(c);
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    throw httpError(400, { error: 'malformed JSON', detail: errorMessage(err) });
  }
  const parsed = changeBatchSchema.safeParse(raw);
  if (!parsed.success) {
    throw httpError(400, { error: 'invalid change batch', detail: parsed.error.issues.slice(0, 20).map((i) => ({ path: i.path.join('.'), message: i.message })) });
  }
  // The trust boundary: the object takes every change it is given as its own.
  const foreign = firstForeignChange(accountId, parsed.data.changes);
  if (foreign) throw httpError(400, { error: 'change of another account', detail: { index: foreign.index, account_id: foreign.accountId } });
  // A batch that brings the account's row makes it known before its object applies it: a device of
  // an account whose object cannot hydrate yet is told to retry (503), not that its token is unknown.
  if (accountRowAfter(parsed.data.changes) === true) await tellDirectory(c, accountId, true, false);
  const stub = c.env.ACCOUNT.get(c.env.ACCOUNT.idFromName(accountId));
  let result;
  try {
    result = await stub.applyChanges(accountId, parsed.data.changes, parsed.data.epoch ?? null);
  } catch (err) {
    throw unavailable(err);
  }
  if (!result.ok) throw httpError(result.status, { error: result.error });
  await tellDirectory(
    c,
    accountId,
    result.accountExists,
    parsed.data.changes.some((change) => change.table === 'accounts'),
  );
  return c.json({ applied: result.applied, skipped: result.skipped, position: result.position });
});

const rehydrateBodySchema = z.object({ epoch: epochSchema.optional() });

/**
 * POST /v1/accounts/:id/rehydrate, signed like changes (body `{}`, or `{"epoch": E}` from the
 * replicator): the object reloads its account from Postgres and starts over from no position. The
 * recovery after changes were lost for good, and the first step of a new epoch.
 */
changes.post('/v1/accounts/:id/rehydrate', signatureFirst, limitedBody, async (c) => {
  const body = await c.req.text();
  await checkSignature(c, body);
  const accountId = accountIdParam(c);
  let raw: unknown = {};
  try {
    if (body.trim() !== '') raw = JSON.parse(body);
  } catch (err) {
    throw httpError(400, { error: 'malformed JSON', detail: errorMessage(err) });
  }
  const parsed = rehydrateBodySchema.safeParse(raw);
  if (!parsed.success)
    throw httpError(400, { error: 'invalid rehydrate body', detail: parsed.error.issues.slice(0, 5).map((i) => ({ path: i.path.join('.'), message: i.message })) });
  let result;
  try {
    result = await c.env.ACCOUNT.get(c.env.ACCOUNT.idFromName(accountId)).rehydrate(accountId, parsed.data.epoch ?? null);
  } catch (err) {
    throw unavailable(err);
  }
  if (!result.ok) throw httpError(result.status, { error: result.error });
  await tellDirectory(c, accountId, result.accountExists, true);
  return c.json({ rehydrated: true, position: result.position });
});
