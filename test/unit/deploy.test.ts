import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configProblems, missingSecrets, readProductionConfig, REQUIRED_SECRETS } from '../../dev/deploy.ts';
import { ROOT } from '../../dev/root.ts';

// `npm run deploy` refuses what cannot work (docs/protocol.md#deploying), with no Cloudflare account.
const repoConfig = path.join(ROOT, 'wrangler.toml');
const scratch = mkdtempSync(path.join(tmpdir(), 'edgeplane-deploy-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The repository's wrangler.toml with its production section edited, written to a scratch folder. */
function configWith(edit: (production: string) => string): string {
  const text = readFileSync(repoConfig, 'utf8').replace('main = "workers/index.ts"', `main = ${JSON.stringify(path.join(ROOT, 'workers/index.ts'))}`);
  const at = text.indexOf('[env.production]');
  const file = path.join(scratch, `wrangler-${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(file, text.slice(0, at) + edit(text.slice(at)));
  return file;
}

const ready = (production: string) =>
  production
    .replace('id = "00000000000000000000000000000000"', 'id = "0123456789abcdef0123456789abcdef"')
    .replace('https://edgeplane.example.workers.dev', 'https://edgeplane.acme.workers.dev');

function deploy(configPath: string): Promise<{ code: number | null; stderr: string }> {
  // No account: no token, and a home without a wrangler login.
  const { CLOUDFLARE_API_TOKEN: _, CLOUDFLARE_ACCOUNT_ID: __, ...env } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', 'dev/deploy.ts', '--config', configPath], {
    cwd: ROOT,
    env: { ...env, HOME: scratch, XDG_CONFIG_HOME: path.join(scratch, '.config'), CI: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
}

describe('npm run deploy', () => {
  it("refuses the repository's own production section: the Hyperdrive id and EDGE_URL are placeholders", () => {
    expect(configProblems(readProductionConfig(repoConfig))).toEqual([
      expect.stringMatching(/^the Hyperdrive id of "DB" is the placeholder/),
      expect.stringMatching(/^EDGE_URL is the example/),
    ]);
  });

  it('accepts a filled-in production section', () => {
    expect(configProblems(readProductionConfig(configWith(ready)))).toEqual([]);
  });

  it('names each missing or unfit item', () => {
    const broken = configWith((p) =>
      ready(p)
        .replace('EDGE_URL = "https://edgeplane.acme.workers.dev"', 'EDGE_URL = "http://edgeplane.acme.workers.dev"\nAPI_TOKEN = "oops"\nDSN = "postgres://repl:hunter2@db/app"')
        .replace('required = ["REPLICATOR_SECRET", "REPLICATION_DATABASE_URL"]', 'required = ["REPLICATOR_SECRET"]')
        .replace('crons = ["* * * * *"]', 'crons = []'),
    );
    expect(configProblems(readProductionConfig(broken))).toEqual([
      'EDGE_URL must be https: http://edgeplane.acme.workers.dev',
      expect.stringMatching(/^\[env\.production\.vars\] has API_TOKEN, which looks secret/),
      '[env.production.vars] DSN holds a URL with a password: make it a secret',
      'REPLICATION_DATABASE_URL is not in [env.production.secrets] required',
      expect.stringMatching(/^\[env\.production\.triggers\] has no cron/),
    ]);
  });

  it('names each secret the Worker does not have', () => {
    expect(missingSecrets(REQUIRED_SECRETS, ['REPLICATOR_SECRET', 'OTHER'])).toEqual([
      'REPLICATION_DATABASE_URL is not set: `npx wrangler secret put REPLICATION_DATABASE_URL --env production`',
    ]);
    expect(missingSecrets(REQUIRED_SECRETS, [...REQUIRED_SECRETS])).toEqual([]);
  });

  it('exits 1 with every offline problem, before asking Cloudflare anything', async () => {
    const { code, stderr } = await deploy(repoConfig);
    expect(code).toBe(1);
    expect(stderr).toContain('npm run deploy: not deploying to production:');
    expect(stderr).toContain('the Hyperdrive id of "DB" is the placeholder');
    expect(stderr).toContain('EDGE_URL is the example');
    expect(stderr).not.toContain('logged in');
  }, 60_000);

  it('exits 1 without a Cloudflare login, since the secrets cannot be checked', async () => {
    const { code, stderr } = await deploy(configWith(ready));
    expect(code).toBe(1);
    expect(stderr).toContain('not logged in to Cloudflare, so the secrets cannot be checked');
  }, 60_000);

  it("exits 1 with wrangler's own message for a configuration wrangler refuses", async () => {
    const { code, stderr } = await deploy(configWith((p) => ready(p).replace(':0.1.0"', '"')));
    expect(code).toBe(1);
    expect(stderr).toContain('npm run deploy: not deploying to production:');
    expect(stderr).toContain('it needs to include at least a tag');
  }, 60_000);
});
