import { z } from 'zod';
import { ConfigError } from './errors.ts';

const postgresUrl = z.string().refine((s) => /^postgres(ql)?:\/\//.test(s), { message: 'expected a postgres:// connection string' });
const httpUrl = z.url({ protocol: /^https?$/, message: 'expected an http(s):// URL' });
const int = (min: number, fallback: number) => z.coerce.number().int().min(min).default(fallback);
/**
 * The largest row JSON sent whole, counted as `String.length` (UTF-16 units, up to 3 UTF-8 bytes
 * each). A change carries its old and new row, and the writer logs each change whole as one SQLite
 * value for its relays (workers/account/relay-store.ts), whose limit is 2 MB: 2 x 262,144 x 3 bytes
 * and the change's frame stay under it. Larger rows go key-only (docs/protocol.md#change-format).
 */
export const MAX_ROW_CHARS = 256 << 10;

const identifier = (fallback: string) =>
  z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, { message: 'expected a lower-case Postgres identifier' })
    .default(fallback);

/** The replicator's environment (docs/protocol.md#local-run), each variable with what it does. */
export const configSchema = z.object({
  DATABASE_URL: postgresUrl.describe('Postgres to replicate from, connected directly (not through a pooler)'),
  EDGE_URL: httpUrl.describe("The Worker's base URL; changes go to POST {EDGE_URL}/v1/accounts/:id/changes"),
  REPLICATOR_SECRET: z.string().min(16, { message: 'must be at least 16 characters' }).describe('Shared HMAC secret with the Worker'),
  REPLICATOR_PORT: int(0, 9187).describe('Port of /healthz, /readyz and /metrics'),
  SLOT_NAME: identifier('edgeplane').describe('Durable logical replication slot'),
  PUBLICATION_NAME: identifier('edgeplane').describe('Publication of the domain tables'),
  MAX_UNACKED: int(1, 20_000).describe('Changes received and not yet in change_logs before reading the stream pauses (it resumes at half)'),
  SPILL_THRESHOLD: int(1, 10_000).describe(
    'Changes of open transactions held in memory; past it the largest open transaction goes to a temporary file (os.tmpdir()), read back in chunks at its commit',
  ),
  SPILL_THRESHOLD_BYTES: int(1024, 8 << 20).describe('The same bound in bytes of pgoutput messages'),
  CHANGE_LOG_BATCH_SIZE: int(1, 2000).describe('Most rows in one COPY into change_logs'),
  CHANGE_LOG_WRITERS: int(1, 2).describe('change_logs batches written at once, each on its own connection'),
  CHANGE_LOG_RETENTION_DAYS: z.coerce
    .number()
    .positive()
    .default(30)
    .describe('change_logs rows older than this go once delivered; an account behind for longer re-hydrates (fractions allowed)'),
  CHANGE_LOG_RETENTION_INTERVAL_MS: int(1000, 3_600_000).describe('How often retention runs'),
  FORWARD_BATCH_SIZE: int(1, 500).describe('Most changes in one request to an account'),
  FORWARD_BATCH_BYTES: int(1024, 1 << 20).describe('Most bytes of changes in one request (a single larger change goes alone)'),
  FORWARD_MAX_ROW_BYTES: int(1024, MAX_ROW_CHARS)
    .pipe(z.number().max(MAX_ROW_CHARS, { message: `must be at most ${MAX_ROW_CHARS}: a change (its old and new row) must fit one value of an object's SQLite` }))
    .describe('A row larger than this is sent as its key only and the object drops its record (fail closed); change_logs keeps it whole'),
  FORWARD_QUEUE_MAX: int(1, 10_000).describe('An account with more changes than this waiting in memory is fed from change_logs instead'),
  FORWARD_QUEUE_BYTES: int(1 << 20, 64 << 20).describe('Bytes of changes waiting in memory for all accounts together; past it the largest queue is fed from change_logs'),
  FORWARD_LINGER_MS: int(0, 2).describe('How long a partial batch waits for more changes'),
  FORWARD_CONCURRENCY: int(1, 32).describe('Accounts with a request in flight at once'),
  FORWARD_TIMEOUT_MS: int(100, 10_000).describe('A request without an answer after this is retried'),
  RETRY_BASE_MS: int(1, 100).describe('First retry delay; doubles per attempt'),
  RETRY_MAX_MS: int(1, 30_000).describe('Longest retry delay'),
  PERMANENT_RETRY_MS: int(100, 60_000).describe('Retry delay for an account whose object refuses its batches (a 4xx other than 408, 409, 429)'),
  CATCHUP_PAGE_SIZE: int(1, 2000).describe('Changes read from change_logs at a time for an account that is behind'),
  CATCHUP_CONCURRENCY: int(1, 4).describe('Accounts caught up from change_logs at once'),
  CURSOR_FLUSH_MS: int(10, 1000).describe('How often delivery cursors are saved (they may trail deliveries; replays are skipped)'),
  STATUS_INTERVAL_MS: int(100, 10_000).describe('Standby status updates at least this often'),
  REPLICATION_TIMEOUT_MS: int(0, 0).describe('Reconnect when the server sends nothing for this long; 0: twice wal_sender_timeout'),
  STALL_ALERT_MS: int(1000, 120_000).describe('/healthz reports a change not in change_logs after this long: stalled when writes stopped, lagging when they move'),
  DRAIN_TIMEOUT_MS: int(0, 20_000).describe('On SIGTERM, how long to wait for in-flight batches'),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
});

export type Config = z.infer<typeof configSchema>;

export function loadConfig(env: Record<string, string | undefined>): Config {
  // Empty variables count as unset, so that `FOO= npm run replicator` falls back to the default.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = configSchema.safeParse(present);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? '');
    const description = configSchema.shape[name as keyof typeof configSchema.shape]?.description;
    const what = issue.code === 'invalid_type' && present[name] === undefined ? 'is required' : issue.message;
    return `${name} ${what}${description ? ` (${description})` : ''}`;
  });
  throw new ConfigError(problems);
}
