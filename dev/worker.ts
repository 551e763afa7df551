/**
 * `npm run worker`: `wrangler dev` with the Worker and its objects, configured by environment
 * (PROTOCOL section 6): PORT (default 8787), REPLICATOR_SECRET (overrides wrangler.toml's dev
 * value), and the database of the Hyperdrive binding from DATABASE_URL (or wrangler's own
 * CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB). Further arguments go to `wrangler dev`.
 */
import { spawn } from 'node:child_process';
import { ROOT } from './root.ts';
import { wranglerDevCommand } from './worker-process.ts';

const env = process.env;
const problems: string[] = [];
const port = env.PORT ? Number(env.PORT) : 8787;
if (!Number.isInteger(port) || port < 1 || port > 65535) problems.push(`PORT=${env.PORT} is not a TCP port (1-65535)`);
const databaseUrl = env.CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB || env.DATABASE_URL || undefined;
if (databaseUrl && !/^postgres(ql)?:\/\/[^/]/.test(databaseUrl)) problems.push('DATABASE_URL must be a postgres:// connection string');
const secret = env.REPLICATOR_SECRET || undefined;
if (secret !== undefined && secret.length < 16) problems.push('REPLICATOR_SECRET must be at least 16 characters (the replicator requires as much)');
if (problems.length > 0) {
  console.error(`npm run worker: invalid configuration:\n  ${problems.join('\n  ')}`);
  process.exit(2);
}
if (!databaseUrl) console.error("npm run worker: DATABASE_URL is not set; the Hyperdrive binding uses wrangler.toml's localConnectionString (the embedded server of `npm start`).");
if (!secret) console.error("npm run worker: REPLICATOR_SECRET is not set; using wrangler.toml's development value (the replicator must use the same).");

const { command, args, env: childEnv } = wranglerDevCommand({ port, databaseUrl, secret, extraArgs: process.argv.slice(2) });
const child = spawn(command, args, { cwd: ROOT, env: childEnv, stdio: 'inherit' });
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, () => child.kill(s));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 15 : 1)));
