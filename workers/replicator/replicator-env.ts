import { secretProblems } from '../secrets.ts';
import { PASSED_THROUGH, REPLICATOR_PORT } from './replicator-shape.ts';

export interface ReplicatorSettings {
  /** The container's environment. */
  envVars: Record<string, string>;
  /** Why the container must not be started; empty when it may. */
  problems: string[];
}

function text(value: unknown): string | undefined {
  if (typeof value === 'string') return value === '' ? undefined : value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return undefined;
}

function urlProblem(name: string, value: string | undefined, protocols: string[], hint: string): string | undefined {
  if (value === undefined) return `${name} is not set (${hint})`;
  try {
    const url = new URL(value);
    if (!protocols.includes(url.protocol)) return `${name} must be a ${protocols.map((p) => `${p}//`).join(' or ')} URL`;
  } catch {
    return `${name} is not a URL`;
  }
  return undefined;
}

/**
 * The replicator's environment in its container, from the Worker's (docs/protocol.md#replicator-container):
 * DATABASE_URL from the secret REPLICATION_DATABASE_URL (a direct connection: Hyperdrive does not
 * carry replication), EDGE_URL (this Worker's public URL), REPLICATOR_SECRET (the Worker's own, so
 * both sides always agree), and the passed-through tunables. A replicator without one of the
 * required three would only exit with code 2, so `problems` names each, and the container stays off.
 */
export function replicatorSettings(env: Env): ReplicatorSettings {
  const source = env as unknown as Record<string, unknown>;
  const databaseUrl = text(source.REPLICATION_DATABASE_URL);
  const edgeUrl = text(source.EDGE_URL);
  const problems = [
    urlProblem('REPLICATION_DATABASE_URL', databaseUrl, ['postgres:', 'postgresql:'], 'wrangler secret put REPLICATION_DATABASE_URL --env production'),
    urlProblem('EDGE_URL', edgeUrl, ['https:'], "[env.production.vars] in wrangler.toml: this Worker's URL"),
    ...secretProblems(env),
  ].filter((p): p is string => p !== undefined);
  const envVars: Record<string, string> = { REPLICATOR_PORT: String(REPLICATOR_PORT) };
  for (const name of PASSED_THROUGH) {
    const value = text(source[name]);
    if (value !== undefined) envVars[name] = value;
  }
  if (databaseUrl !== undefined) envVars.DATABASE_URL = databaseUrl;
  if (edgeUrl !== undefined) envVars.EDGE_URL = edgeUrl;
  if (env.REPLICATOR_SECRET) envVars.REPLICATOR_SECRET = env.REPLICATOR_SECRET;
  return { envVars, problems };
}
