/**
 * How this Worker runs (docs/protocol.md#worker-configuration). A local run (`npm start`, `npm run
 * worker`, the tests, the benchmarks) says so with `EDGEPLANE_ENV = "local"`; without it the
 * Worker is a deployed one and takes the secure choice everywhere.
 */
export function isLocalRun(env: Env): boolean {
  return env.EDGEPLANE_ENV === 'local';
}

/** Connect rate limits apply unless a local run turns them off (`RATE_LIMITS = "off"`, for benchmarks that need it). */
export function rateLimitsOn(env: Env): boolean {
  return !(isLocalRun(env) && env.RATE_LIMITS === 'off');
}
