import type { AccountId, TokenId } from './ids.ts';
import { asId } from './ids.ts';
import type { TokenRecord } from './records.ts';

/** docs/protocol.md#websocket-routes: `<account_id>.<token_id>.<secret>`. */
export interface ParsedToken {
  accountId: AccountId;
  tokenId: TokenId;
  secret: string;
}

export function parseToken(text: string): ParsedToken | null {
  const first = text.indexOf('.');
  const second = text.indexOf('.', first + 1);
  if (first < 0 || second < 0) return null;
  const accountId = asId<'account'>(text.slice(0, first));
  const tokenId = asId<'token'>(text.slice(first + 1, second));
  const secret = text.slice(second + 1);
  if (!accountId || !tokenId || secret.length === 0) return null;
  return { accountId, tokenId, secret };
}

const encoder = new TextEncoder();

/** Lower-case hex SHA-256 of `salt || secret` (docs/protocol.md#schema's `secret_hash`). */
export async function secretHash(salt: string, secret: string): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', encoder.encode(salt + secret));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Compares two strings in time that depends only on their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) diff |= (a.charCodeAt(i) || 0) ^ (b.charCodeAt(i) || 0);
  return diff === 0;
}

export type TokenCheck = 'ok' | 'unknown' | 'wrong_type' | 'mismatch' | 'expired';

/** Checks a presented secret against a cached token: type, salted hash (constant time), expiry. */
export async function checkToken(token: TokenRecord | undefined, type: TokenRecord['type'], secret: string, nowMs: number): Promise<TokenCheck> {
  if (!token) return 'unknown';
  const hash = await secretHash(token.salt, secret);
  if (!constantTimeEqual(hash, token.hash)) return 'mismatch';
  if (token.type !== type) return 'wrong_type';
  if (token.expiresAt !== null && token.expiresAt <= nowMs) return 'expired';
  return 'ok';
}
