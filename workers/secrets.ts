import { isLocalRun } from './edge-env.ts';
import { log } from './log.ts';

/** A deployed Worker's REPLICATOR_SECRET must be at least this long (UTF-8 bytes). */
export const MIN_SECRET_BYTES = 32;

/**
 * Values that are public: written in this repository (old wrangler.toml, tests, benchmarks) or in
 * its documents. A deployed Worker that has one of them accepts changes from anyone.
 */
const DEVELOPMENT_SECRETS = new Set([
  'edgeplane-local-development-secret',
  'edgeplane-test-replicator-secret-0123456789abcdef',
  'bench-secret-0123456789',
  'replace-me-with-32-random-bytes-or-more',
]);

/**
 * What is wrong with the Worker's REPLICATOR_SECRET (docs/protocol.md#worker-health-and-errors):
 * nothing, or why the changes and rehydrate routes refuse to run. A local run only needs one.
 */
export function secretProblems(env: Env): string[] {
  const secret = env.REPLICATOR_SECRET;
  if (!secret) return ['REPLICATOR_SECRET is not set (wrangler secret put REPLICATOR_SECRET; local runs: .dev.vars or --var)'];
  if (isLocalRun(env)) return [];
  const problems: string[] = [];
  if (new TextEncoder().encode(secret).length < MIN_SECRET_BYTES) problems.push(`REPLICATOR_SECRET is shorter than ${MIN_SECRET_BYTES} bytes`);
  if (DEVELOPMENT_SECRETS.has(secret)) problems.push('REPLICATOR_SECRET is a development value that anyone can read');
  return problems;
}

const reported = new Set<string>();

/** secretProblems, logged once per isolate (for each distinct set of problems). */
export function checkedSecretProblems(env: Env): string[] {
  const problems = secretProblems(env);
  const key = problems.join('\n');
  if (problems.length > 0 && !reported.has(key)) {
    reported.add(key);
    log.error({ component: 'worker', problems }, 'refusing to accept changes: the replicator secret is not fit for a deployed Worker');
  }
  return problems;
}
