/**
 * `npm run deploy [-- --config wrangler.toml] [-- more wrangler deploy flags]`: deploys the Worker,
 * its objects and the replicator's container to production (`wrangler deploy --env production`),
 * after refusing a configuration that cannot work (docs/protocol.md#deploying):
 *
 * - offline, from wrangler.toml's `[env.production]`: the Hyperdrive id is a real one (not the
 *   zeros of the local run's), EDGE_URL is an https URL that is not the example, the required
 *   secrets are declared, the container is there with a registry image, no var looks secret;
 * - with a Cloudflare login (`wrangler login` or CLOUDFLARE_API_TOKEN): every required secret is
 *   set on the Worker (`wrangler secret list --env production`).
 *
 * Each refusal names every missing item and exits with code 1; nothing is deployed.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import type { Unstable_Config } from 'wrangler';
import { ROOT } from './root.ts';

export const ENVIRONMENT = 'production';
/** What the Worker and the replicator cannot run without (docs/protocol.md#worker-configuration). */
export const REQUIRED_SECRETS = ['REPLICATOR_SECRET', 'REPLICATION_DATABASE_URL'] as const;
const PLACEHOLDER_HYPERDRIVE_ID = /^0+$/;
const EXAMPLE_HOST = /(^|\.)example\.(com|org|net|workers\.dev)$/;
const SECRET_LOOKING_NAME = /SECRET|PASSWORD|TOKEN|API_KEY|PRIVATE|DATABASE_URL/i;
const CREDENTIALS_IN_URL = /^[a-z][a-z0-9+.-]*:\/\/[^/@\s]*:[^/@\s]+@/i;

type Config = Pick<Unstable_Config, 'hyperdrive' | 'vars' | 'secrets' | 'containers' | 'durable_objects' | 'triggers'>;

/** What is wrong with the production configuration, offline: one line per item. */
export function configProblems(config: Config): string[] {
  const problems: string[] = [];
  const db = config.hyperdrive.find((h) => h.binding === 'DB');
  if (!db) problems.push('[[env.production.hyperdrive]] has no binding "DB"');
  else if (!db.id || PLACEHOLDER_HYPERDRIVE_ID.test(db.id))
    problems.push(
      'the Hyperdrive id of "DB" is the placeholder: run `npx wrangler hyperdrive create edgeplane-db --connection-string=...` and put its id in [[env.production.hyperdrive]]',
    );

  const vars = config.vars as Record<string, unknown>;
  const edgeUrl = vars.EDGE_URL;
  if (typeof edgeUrl !== 'string' || edgeUrl === '') problems.push("EDGE_URL is not set in [env.production.vars] (this Worker's URL, where the replicator sends changes)");
  else {
    let url: URL | undefined;
    try {
      url = new URL(edgeUrl);
    } catch {
      problems.push(`EDGE_URL is not a URL: ${edgeUrl}`);
    }
    if (url && url.protocol !== 'https:') problems.push(`EDGE_URL must be https: ${edgeUrl}`);
    else if (url && EXAMPLE_HOST.test(url.hostname))
      problems.push(`EDGE_URL is the example (${edgeUrl}): put this Worker's URL (workers.dev or a custom domain) in [env.production.vars]`);
  }
  for (const [name, value] of Object.entries(vars)) {
    if (SECRET_LOOKING_NAME.test(name)) problems.push(`[env.production.vars] has ${name}, which looks secret: remove it and use \`wrangler secret put ${name} --env production\``);
    else if (typeof value === 'string' && CREDENTIALS_IN_URL.test(value)) problems.push(`[env.production.vars] ${name} holds a URL with a password: make it a secret`);
  }

  const declared = config.secrets?.required ?? [];
  for (const name of REQUIRED_SECRETS) {
    if (!declared.includes(name)) problems.push(`${name} is not in [env.production.secrets] required`);
  }

  const bound = new Map(config.durable_objects.bindings.map((b) => [b.class_name, b.name]));
  const container = config.containers?.find((c) => c.class_name === 'ReplicatorContainer');
  if (!container) problems.push('[[env.production.containers]] has no ReplicatorContainer');
  else if (!/^[^/]+\.[^/]+\/.+:[^/]+$/.test(container.image ?? '') || /Dockerfile/i.test(container.image ?? ''))
    problems.push(`the replicator's image must be a registry reference with a tag (registry.cloudflare.com/edgeplane-replicator:TAG), got ${container.image}`);
  if (bound.get('ReplicatorContainer') !== 'REPLICATOR') problems.push('ReplicatorContainer is not bound as REPLICATOR in [[env.production.durable_objects.bindings]]');
  for (const cls of ['AccountDO', 'AccountDirectory']) {
    if (!bound.has(cls)) problems.push(`${cls} is not bound in [[env.production.durable_objects.bindings]]`);
  }
  if (!config.triggers.crons?.length) problems.push('[env.production.triggers] has no cron: nothing would keep the replicator running');
  return problems;
}

/** The required secrets that `wrangler secret list` did not list. */
export function missingSecrets(required: readonly string[], listed: readonly string[]): string[] {
  return required.filter((name) => !listed.includes(name)).map((name) => `${name} is not set: \`npx wrangler secret put ${name} --env ${ENVIRONMENT}\``);
}

export function readProductionConfig(configPath: string): Unstable_Config {
  const require = createRequire(import.meta.url);
  const wrangler = require('wrangler') as typeof import('wrangler');
  return wrangler.unstable_readConfig({ config: configPath, env: ENVIRONMENT }, { hideWarnings: true });
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function wrangler(args: string[], inherit = false): Run {
  const bin = path.join(path.dirname(createRequire(import.meta.url).resolve('wrangler/package.json')), 'bin/wrangler.js');
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    // Never an interactive login prompt: the refusal says how to log in instead.
    stdio: inherit ? 'inherit' : ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false' },
  });
  return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
}

/** The secrets set on the deployed Worker, or the reason they cannot be listed. */
function listedSecrets(configPath: string): { names: string[] } | { problem: string } {
  const whoami = wrangler(['whoami', '--config', configPath]);
  if (whoami.status !== 0 || /not authenticated/i.test(whoami.stdout + whoami.stderr))
    return { problem: 'not logged in to Cloudflare, so the secrets cannot be checked: run `npx wrangler login` or set CLOUDFLARE_API_TOKEN (and CLOUDFLARE_ACCOUNT_ID)' };
  const list = wrangler(['secret', 'list', '--env', ENVIRONMENT, '--config', configPath, '--format', 'json']);
  if (list.status !== 0) {
    const lines = stripVTControlCharacters(list.stderr).split('\n');
    const why = lines.find((l) => l.includes('ERROR'))?.replace(/^.*?ERROR\]\s*/, '') ?? lines.filter((l) => l.trim()).pop() ?? '';
    return {
      problem: `could not list the Worker's secrets (${why.trim() || `exit code ${list.status}`}); a Worker that does not exist yet gets them with \`npx wrangler secret put NAME --env ${ENVIRONMENT}\``,
    };
  }
  const names = (JSON.parse(list.stdout) as Array<{ name: string }>).map((s) => s.name);
  return { names };
}

function refuse(problems: string[]): never {
  console.error(`npm run deploy: not deploying to ${ENVIRONMENT}:`);
  for (const p of problems) console.error(`  - ${p}`);
  console.error('See README.md#deploy.');
  process.exit(1);
}

export function parseArgs(argv: string[]): { configPath: string; wranglerArgs: string[] } {
  let configPath = path.join(ROOT, 'wrangler.toml');
  const wranglerArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--config' || arg === '-c') configPath = path.resolve(argv[++i] ?? '');
    else if (arg.startsWith('--config=')) configPath = path.resolve(arg.slice('--config='.length));
    else if (arg === '--env' || arg === '-e' || arg.startsWith('--env=')) refuse([`${arg}: npm run deploy deploys --env ${ENVIRONMENT} only`]);
    else wranglerArgs.push(arg);
  }
  return { configPath, wranglerArgs };
}

function main(): void {
  const { configPath, wranglerArgs } = parseArgs(process.argv.slice(2));
  let config: Unstable_Config;
  try {
    config = readProductionConfig(configPath);
  } catch (err) {
    refuse([`${path.relative(process.cwd(), configPath) || configPath}: ${err instanceof Error ? err.message : String(err)}`]);
  }
  const problems = configProblems(config);
  if (problems.length > 0) refuse(problems);
  const listed = listedSecrets(configPath);
  if ('problem' in listed) refuse([listed.problem]);
  const missing = missingSecrets(config.secrets?.required ?? REQUIRED_SECRETS, listed.names);
  if (missing.length > 0) refuse(missing);
  const deploy = wrangler(['deploy', '--env', ENVIRONMENT, '--config', configPath, ...wranglerArgs], true);
  process.exit(deploy.status ?? 1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) main();
