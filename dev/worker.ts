/**
 * `npm run worker`: `wrangler dev` with the Worker and its objects, configured by environment
 * (docs/protocol.md#local-run): PORT (default 8787), REPLICATOR_SECRET (else `.dev.vars`'s, which
 * `npm start` writes; one of them is required), and the database of the Hyperdrive binding from DATABASE_URL (or wrangler's own
 * CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_DB). Further arguments go to `wrangler dev`.
 */
import { spawn } from 'node:child_process';
import { ConfigProblem, parseWorkerConfig, type WorkerConfig } from './local-config.ts';
import { devVarsSecret } from './local-files.ts';
import { ROOT } from './root.ts';
import { wranglerDevCommand } from './worker-process.ts';

let config: WorkerConfig;
try {
  config = parseWorkerConfig(process.env);
} catch (err) {
  if (!(err instanceof ConfigProblem)) throw err;
  console.error(`npm run worker: ${err.message}`);
  process.exit(2);
}
const { port, databaseUrl, secret } = config;
if (!databaseUrl) console.error("npm run worker: DATABASE_URL is not set; the Hyperdrive binding uses wrangler.toml's localConnectionString (the embedded server of `npm start`).");
// wrangler dev reads .dev.vars itself; without it there is no secret at all.
if (!secret && !(await devVarsSecret())) {
  console.error("npm run worker: REPLICATOR_SECRET is not set and .dev.vars has none (`npm start` writes one); set it to the replicator's secret.");
  process.exit(2);
}

const { command, args, env: childEnv } = wranglerDevCommand({ port, databaseUrl, secret, extraArgs: process.argv.slice(2) });
const child = spawn(command, args, { cwd: ROOT, env: childEnv, stdio: 'inherit' });
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, () => child.kill(s));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 + 15 : 1)));
