/** The local run's environment (PROTOCOL section 6). */
export interface LocalConfig {
  /** The Worker's port (`wrangler dev`). */
  port: number;
  /** The embedded PostgreSQL's port, when DATABASE_URL is not set. */
  pgPort: number;
  /** The replicator's /healthz, /readyz and /metrics. */
  replicatorPort: number;
  /** Use this server instead of the embedded one. */
  databaseUrl: string | undefined;
  /** Shared by the replicator and the Worker; a random one per run when unset. */
  secret: string | undefined;
  slot: string;
  publication: string;
}

/** A configuration value is wrong, or the machine is not ready for it: the message says which and what to do. */
export class ConfigProblem extends Error {
  override name = 'ConfigProblem';
}

function port(env: Record<string, string | undefined>, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) problems.push(`${name}=${raw} is not a TCP port (1-65535)`);
  return n;
}

function identifier(env: Record<string, string | undefined>, name: string, problems: string[]): string {
  const value = env[name] || 'edgeplane';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value)) problems.push(`${name}=${value} is not a lower-case Postgres identifier`);
  return value;
}

export function parseLocalConfig(env: Record<string, string | undefined>): LocalConfig {
  const problems: string[] = [];
  const config: LocalConfig = {
    port: port(env, 'PORT', 8787, problems),
    pgPort: port(env, 'EDGEPLANE_PG_PORT', 54329, problems),
    replicatorPort: port(env, 'REPLICATOR_PORT', 9187, problems),
    databaseUrl: env.DATABASE_URL || undefined,
    secret: env.REPLICATOR_SECRET || undefined,
    slot: identifier(env, 'SLOT_NAME', problems),
    publication: identifier(env, 'PUBLICATION_NAME', problems),
  };
  if (config.databaseUrl && !/^postgres(ql)?:\/\/[^/]/.test(config.databaseUrl)) problems.push('DATABASE_URL must be a postgres:// connection string (or unset, for the embedded server)');
  if (config.secret !== undefined && config.secret.length < 16) problems.push('REPLICATOR_SECRET must be at least 16 characters (or unset, for a random one)');
  const ports = [config.port, config.replicatorPort, ...(config.databaseUrl ? [] : [config.pgPort])];
  if (new Set(ports).size !== ports.length) problems.push(`PORT, REPLICATOR_PORT and EDGEPLANE_PG_PORT must differ (${ports.join(', ')})`);
  if (problems.length > 0) throw new ConfigProblem(`invalid configuration:\n  ${problems.join('\n  ')}`);
  return config;
}
