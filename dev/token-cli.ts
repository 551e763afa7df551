/**
 * `npm run token -- client --account A --actor X` / `npm run token -- site --account A --site S`:
 * creates a token in DATABASE_URL (default: the database of .edgeplane/dev.json) and prints it.
 */
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { configSchema } from '../replicator/config.ts';
import { errorMessage } from '../src/errors.ts';
import { isUuid } from '../src/ids.ts';
import { readDevJson } from './local-files.ts';
import { createToken, TokenOwnerError, type TokenType } from './tokens.ts';

const USAGE = `usage:
  npm run token -- client --account ACCOUNT_ID --actor ACTOR_ID [--expires-in DURATION]
  npm run token -- site   --account ACCOUNT_ID --site SITE_ID   [--expires-in DURATION]

Creates a token and prints it (<account_id>.<token_id>.<secret>; only its salted hash is stored).
  --expires-in   e.g. 90s, 30m, 12h, 7d (default: no expiry)
  --database-url the database (default: DATABASE_URL, else the one in .edgeplane/dev.json)
`;

class Usage extends Error {}

const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

function parse(argv: string[]) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        account: { type: 'string' },
        actor: { type: 'string' },
        site: { type: 'string' },
        'expires-in': { type: 'string' },
        'database-url': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new Usage(errorMessage(err));
  }
  const { values: v, positionals } = parsed;
  if (v.help) throw new Usage('');
  const [kind, ...extra] = positionals;
  if (kind !== 'client' && kind !== 'site') throw new Usage(kind ? `unknown token kind ${kind}: client or site` : 'client or site is required');
  if (extra.length > 0) throw new Usage(`unexpected argument ${extra[0]}`);
  if (!v.account || !isUuid(v.account)) throw new Usage('--account must be an account id (uuid)');
  const owner = kind === 'client' ? v.actor : v.site;
  const ownerFlag = kind === 'client' ? '--actor' : '--site';
  if (!owner || !isUuid(owner)) throw new Usage(`${ownerFlag} must be ${kind === 'client' ? 'an actor' : 'a site'} id (uuid)`);
  if ((kind === 'client' && v.site) || (kind === 'site' && v.actor)) throw new Usage(`a ${kind} token takes ${ownerFlag}`);
  let expiresAt: Date | null = null;
  if (v['expires-in'] !== undefined) {
    const m = /^(\d+)([smhd])$/.exec(v['expires-in']);
    if (!m) throw new Usage('--expires-in must look like 90s, 30m, 12h or 7d');
    expiresAt = new Date(Date.now() + Number(m[1]) * UNITS[m[2]!]!);
  }
  if (v['database-url'] && !configSchema.shape.DATABASE_URL.safeParse(v['database-url']).success) throw new Usage('--database-url must be a postgres:// connection string');
  return { type: (kind === 'client' ? 'client' : 'site') as TokenType, accountId: v.account, ownerId: owner, expiresAt, databaseUrl: v['database-url'] };
}

async function main(): Promise<number> {
  let args;
  try {
    args = parse(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof Usage)) throw err;
    if (err.message) process.stderr.write(`npm run token: ${err.message}\n\n`);
    process.stderr.write(USAGE);
    return err.message ? 2 : 0;
  }
  let url = args.databaseUrl ?? process.env.DATABASE_URL;
  if (!url) {
    try {
      url = (await readDevJson()).databaseUrl;
    } catch (err) {
      process.stderr.write(`npm run token: DATABASE_URL is not set and ${errorMessage(err)}\n`);
      return 2;
    }
  }
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  try {
    const token = await createToken(sql, args);
    process.stderr.write(`created ${args.type} token ${token.id}${token.expiresAt ? `, expires ${token.expiresAt.toISOString()}` : ''}\n`);
    process.stdout.write(`${token.token}\n`);
    return 0;
  } catch (err) {
    if (err instanceof TokenOwnerError) {
      process.stderr.write(`npm run token: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`npm run token: ${errorMessage(err)}\n`);
    process.exit(1);
  },
);
