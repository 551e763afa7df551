import { rateLimitsOn } from './edge-env.ts';
import { httpError } from './http-errors.ts';

/** The window of wrangler.toml's `[[ratelimits]]` for connects, in seconds: what a refused device is told to wait. */
export const CONNECT_WINDOW_SECONDS = 10;

/**
 * Counts one connect against a limiter of wrangler.toml's `[[ratelimits]]` (docs/protocol.md#rate-limits)
 * and throws 429 past its limit. `key` null: nothing to count by (a local run without an address).
 */
export async function limitConnect(env: Env, limiter: RateLimit, key: string | null, per: 'address' | 'account'): Promise<void> {
  if (key === null || !rateLimitsOn(env)) return;
  const { success } = await limiter.limit({ key });
  if (!success) {
    throw httpError(
      429,
      { error: 'too many connects', detail: `from this ${per === 'address' ? 'address' : 'account'}; retry in ${CONNECT_WINDOW_SECONDS} s` },
      { headers: { 'retry-after': String(CONNECT_WINDOW_SECONDS) } },
    );
  }
}
