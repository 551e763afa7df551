import { randomBytes } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import { parseToken, secretHash } from '../src/tokens.ts';

type Queryable = Sql | TransactionSql;

export type TokenType = 'client' | 'site';

export interface NewToken {
  id: string;
  /** `<account_id>.<token_id>.<secret>` (docs/protocol.md#websocket-routes): shown once; only its salted hash is stored. */
  token: string;
  expiresAt: Date | null;
}

/**
 * Inserts a token for an actor (client token) or a site (site token) of the account, checking that
 * the owner exists there and is not deleted, and returns the token text.
 */
export async function createToken(sql: Queryable, input: { accountId: string; type: TokenType; ownerId: string; expiresAt?: Date | null }): Promise<NewToken> {
  const owner =
    input.type === 'client'
      ? await sql<{ id: string }[]>`select id from actors where id = ${input.ownerId} and account_id = ${input.accountId} and deleted_at is null`
      : await sql<{ id: string }[]>`select id from sites where id = ${input.ownerId} and account_id = ${input.accountId} and deleted_at is null`;
  if (owner.length === 0) {
    throw new TokenOwnerError(`no ${input.type === 'client' ? 'actor' : 'site'} ${input.ownerId} in account ${input.accountId} (or it is deleted)`);
  }
  const secret = randomBytes(32).toString('base64url');
  const salt = randomBytes(16).toString('hex');
  const expiresAt = input.expiresAt ?? null;
  const [row] = await sql<{ id: string }[]>`
    insert into tokens (account_id, type, actor_id, site_id, secret_salt, secret_hash, expires_at)
    values (${input.accountId}, ${input.type}, ${input.type === 'client' ? input.ownerId : null}, ${input.type === 'site' ? input.ownerId : null},
            ${salt}, ${await secretHash(salt, secret)}, ${expiresAt})
    returning id::text`;
  return { id: row!.id, token: `${input.accountId}.${row!.id}.${secret}`, expiresAt };
}

/** Whether a token text still opens a socket as far as the database says: row present, not deleted, not expired, hash matches. */
export async function tokenIsValid(sql: Queryable, token: string): Promise<boolean> {
  const parsed = parseToken(token);
  if (!parsed) return false;
  const rows = await sql<{ salt: string; hash: string }[]>`
    select secret_salt as salt, secret_hash as hash from tokens
    where id::text = ${parsed.tokenId} and account_id::text = ${parsed.accountId} and deleted_at is null and (expires_at is null or expires_at > now())`;
  return rows.length === 1 && (await secretHash(rows[0]!.salt, parsed.secret)) === rows[0]!.hash;
}

export class TokenOwnerError extends Error {
  override name = 'TokenOwnerError';
}
