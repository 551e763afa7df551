import { z } from 'zod';
import { configSchema } from '../replicator/config.ts';

type Env = Record<string, string | undefined>;

/** The local run's environment (docs/protocol.md#local-run). */
export interface LocalConfig {
  /** The Worker's port (the local Worker, dev/worker.ts). */
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

/** `npm run worker`'s environment (dev/worker.ts, the local Worker). */
export interface WorkerConfig {
  port: number;
  /** The Hyperdrive binding's database; wrangler.toml's localConnectionString when unset. */
  databaseUrl: string | undefined;
  /** `.dev.vars`'s when unset. */
  secret: string | undefined;
  /** The objects' storage; `.wrangler/state` (where `wrangler dev` keeps it) when unset. */
  persistTo: string | undefined;
  /** A bundle already built (its entry file); built at start when unset. */
  bundle: string | undefined;
  inspectorPort: number | undefined;
  /** The Worker also served here without Miniflare's entry worker (dev/local-worker.ts), for the replicator. */
  directPort: number | undefined;
  rateLimits: 'off' | undefined;
  /** Worker variables on top of wrangler.toml's (a JSON object of strings), for benchmarks and tests. */
  vars: Record<string, string> | undefined;
}

/** A configuration value is wrong, or the machine is not ready for it: the message says which and what to do. */
export class ConfigProblem extends Error {
  override name = 'ConfigProblem';
}

// What the local run hands on to the replicator is checked by the replicator's own rules, so that
// a value `npm start` accepts is one the replicator accepts too.
const replicator = configSchema.shape;

const NOT_A_PORT = 'is not a TCP port (1-65535)';
/** Unlike REPLICATOR_PORT's own rule (0 there means any free port), the local run prints its URLs: every port is a real one. */
const tcpPort = (fallback: number) => z.coerce.number(NOT_A_PORT).int(NOT_A_PORT).min(1, NOT_A_PORT).max(65535, NOT_A_PORT).default(fallback);

/** Never echoed in a problem: a connection string may hold a password. */
const SECRET_VARIABLES = new Set(['DATABASE_URL', 'REPLICATOR_SECRET']);

/** Reads the variables of `shape` from `env`; every problem in one ConfigProblem, with a hint per variable. */
function parseEnv<S extends z.ZodRawShape>(shape: S, env: Env, hints: Partial<Record<keyof S, string>> = {}): z.infer<z.ZodObject<S>> {
  // Empty variables count as unset, as the replicator counts them.
  const present = Object.fromEntries(Object.keys(shape).flatMap((name) => (env[name] ? [[name, env[name]]] : [])));
  const parsed = z.object(shape).safeParse(present);
  if (parsed.success) return parsed.data;
  const problems = new Map<string, string>();
  for (const issue of parsed.error.issues) {
    const name = String(issue.path[0]);
    if (problems.has(name)) continue;
    const hint = hints[name as keyof S];
    problems.set(name, `${SECRET_VARIABLES.has(name) ? name : `${name}=${present[name]}`} ${issue.message}${hint ? ` (${hint})` : ''}`);
  }
  throw invalid([...problems.values()]);
}

function invalid(problems: string[]): ConfigProblem {
  return new ConfigProblem(`invalid configuration:\n  ${problems.join('\n  ')}`);
}

export function parseLocalConfig(env: Env): LocalConfig {
  const v = parseEnv(
    {
      PORT: tcpPort(8787),
      EDGEPLANE_PG_PORT: tcpPort(54329),
      REPLICATOR_PORT: tcpPort(9187),
      DATABASE_URL: replicator.DATABASE_URL.optional(),
      REPLICATOR_SECRET: replicator.REPLICATOR_SECRET.optional(),
      SLOT_NAME: replicator.SLOT_NAME,
      PUBLICATION_NAME: replicator.PUBLICATION_NAME,
    },
    env,
    { DATABASE_URL: 'or unset, for the embedded server', REPLICATOR_SECRET: 'or unset, for a random one' },
  );
  const ports = [v.PORT, v.REPLICATOR_PORT, ...(v.DATABASE_URL ? [] : [v.EDGEPLANE_PG_PORT])];
  if (new Set(ports).size !== ports.length) throw invalid([`PORT, REPLICATOR_PORT and EDGEPLANE_PG_PORT must differ (${ports.join(', ')})`]);
  return {
    port: v.PORT,
    pgPort: v.EDGEPLANE_PG_PORT,
    replicatorPort: v.REPLICATOR_PORT,
    databaseUrl: v.DATABASE_URL,
    secret: v.REPLICATOR_SECRET,
    slot: v.SLOT_NAME,
    publication: v.PUBLICATION_NAME,
  };
}

export function parseWorkerConfig(env: Env): WorkerConfig {
  const v = parseEnv(
    {
      PORT: tcpPort(8787),
      DATABASE_URL: replicator.DATABASE_URL.optional(),
      REPLICATOR_SECRET: replicator.REPLICATOR_SECRET.optional(),
      EDGEPLANE_WORKER_PERSIST: z.string().optional(),
      EDGEPLANE_WORKER_BUNDLE: z.string().optional(),
      EDGEPLANE_WORKER_INSPECTOR_PORT: z.coerce.number(NOT_A_PORT).int(NOT_A_PORT).min(1, NOT_A_PORT).max(65535, NOT_A_PORT).optional(),
      EDGEPLANE_WORKER_DIRECT_PORT: z.coerce.number(NOT_A_PORT).int(NOT_A_PORT).min(1, NOT_A_PORT).max(65535, NOT_A_PORT).optional(),
      RATE_LIMITS: z.literal('off', 'is "off" or unset').optional(),
      EDGEPLANE_WORKER_VARS: z
        .string()
        .transform((text, ctx) => {
          try {
            return JSON.parse(text) as unknown;
          } catch {
            ctx.addIssue({ code: 'custom', message: 'is not JSON' });
            return z.NEVER;
          }
        })
        .pipe(z.record(z.string(), z.string(), 'is not a JSON object of strings'))
        .optional(),
    },
    { ...env, DATABASE_URL: env.CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB || env.DATABASE_URL },
    { REPLICATOR_SECRET: 'the replicator requires as much' },
  );
  return {
    port: v.PORT,
    databaseUrl: v.DATABASE_URL,
    secret: v.REPLICATOR_SECRET,
    persistTo: v.EDGEPLANE_WORKER_PERSIST,
    bundle: v.EDGEPLANE_WORKER_BUNDLE,
    inspectorPort: v.EDGEPLANE_WORKER_INSPECTOR_PORT,
    directPort: v.EDGEPLANE_WORKER_DIRECT_PORT,
    rateLimits: v.RATE_LIMITS,
    vars: v.EDGEPLANE_WORKER_VARS,
  };
}
