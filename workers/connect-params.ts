import { z } from 'zod';
import { parseToken, type ParsedToken } from '../src/tokens.ts';
import { parseVersion } from '../src/versions.ts';

export type DeviceKind = 'client' | 'gateway';

const field = (max: number) =>
  z
    .string()
    .trim()
    .min(1, { message: 'is required' })
    .max(max, { message: `must be at most ${max} characters` });

/** The longest query string a connect may have, in bytes as sent (docs/protocol.md#limits): room for every parameter at its cap, percent-encoded. */
export const MAX_QUERY_BYTES = 16 * 1024;

/** Caps of docs/protocol.md#limits, in characters; the schema's CHECK limits where it has them. */
export const PARAM_LIMITS = { token: 512, external_id: 255, name: 255, public_key: 256, version: 255 } as const;

/** docs/protocol.md#websocket-routes: the query of `GET /v1/{client,gateway}/websocket`. */
const paramsSchema = z.object({
  token: z
    .string({ message: 'is required' })
    .max(PARAM_LIMITS.token, { message: `must be at most ${PARAM_LIMITS.token} characters` })
    .transform((s, ctx): ParsedToken => {
      const t = parseToken(s);
      if (!t) ctx.addIssue({ code: 'custom', message: 'must be <account_id>.<token_id>.<secret>' });
      return t as ParsedToken;
    }),
  external_id: field(PARAM_LIMITS.external_id),
  name: field(PARAM_LIMITS.name),
  public_key: field(PARAM_LIMITS.public_key),
  version: z
    .string({ message: 'is required' })
    .max(PARAM_LIMITS.version, { message: `must be at most ${PARAM_LIMITS.version} characters` })
    .refine((v) => parseVersion(v) !== null, { message: 'must be a semantic version like 1.4.2' }),
});

export type ConnectParams = z.infer<typeof paramsSchema>;

export type ParamsResult = { ok: true; params: ConnectParams } | { ok: false; detail: Record<string, string> };

/** Whether the query string is over MAX_QUERY_BYTES (checked before it is parsed). */
export function queryTooLong(url: URL): boolean {
  return url.search.length > MAX_QUERY_BYTES;
}

export function parseConnectParams(url: URL): ParamsResult {
  const raw: Record<string, string> = {};
  for (const key of ['token', 'external_id', 'name', 'public_key', 'version']) {
    const v = url.searchParams.get(key);
    if (v !== null) raw[key] = v;
  }
  const parsed = paramsSchema.safeParse(raw);
  if (parsed.success) return { ok: true, params: parsed.data };
  const detail: Record<string, string> = {};
  for (const issue of parsed.error.issues) {
    const key = String(issue.path[0] ?? 'query');
    detail[key] ??= raw[key] === undefined ? 'is required' : issue.message;
  }
  return { ok: false, detail };
}

/** Headers through which the Worker tells the object where a device connects from. */
export const REMOTE_IP_HEADER = 'x-edgeplane-remote-ip';
export const COUNTRY_HEADER = 'x-edgeplane-country';
