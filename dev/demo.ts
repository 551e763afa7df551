import type { Sql } from 'postgres';
import { DEMO_JSON, readJson, writeJson } from './local-files.ts';
import { databaseIsEmpty, DEMO_SLUG, seedDemo, type Demo } from './seed.ts';
import { createToken, tokenIsValid } from './tokens.ts';

export interface DemoOutcome {
  demo: Demo | null;
  notes: string[];
}

/**
 * The demo account of the local run: seeded when the database has no account; otherwise the one
 * recorded in `.edgeplane/demo.json` (the database keeps only the tokens' hashes), with new tokens
 * when the recorded ones were revoked.
 */
export async function ensureDemo(sql: Sql): Promise<DemoOutcome> {
  if (await databaseIsEmpty(sql)) {
    const demo = await seedDemo(sql);
    await writeJson(DEMO_JSON, demo);
    return { demo, notes: [`Seeded the demo account (${demo.accountId}): an actor in a group, a site, three resources with policies, a client and a site token.`] };
  }
  const saved = await readJson<Demo>(DEMO_JSON);
  const [account] = saved
    ? await sql<{ id: string }[]>`select id::text from accounts where id::text = ${saved.accountId} and deleted_at is null and disabled_at is null`
    : await sql<{ id: string }[]>`select id::text from accounts where slug = ${DEMO_SLUG} and deleted_at is null and disabled_at is null`;
  if (!account) {
    return { demo: null, notes: ['The database already has accounts and no active demo account: dev.json has no demo (create tokens with `npm run token`).'] };
  }
  if (saved && (await tokenIsValid(sql, saved.clientToken)) && (await tokenIsValid(sql, saved.siteToken))) return { demo: saved, notes: [] };
  const [actor] = await sql<{ id: string }[]>`
    select id::text from actors where account_id = ${account.id} and deleted_at is null and disabled_at is null order by inserted_at limit 1`;
  const [site] = await sql<{ id: string }[]>`select id::text from sites where account_id = ${account.id} and deleted_at is null order by inserted_at limit 1`;
  if (!actor || !site) return { demo: null, notes: ['The demo account has no active actor or site any more: dev.json has no demo.'] };
  const client = await createToken(sql, { accountId: account.id, type: 'client', ownerId: actor.id });
  const gateway = await createToken(sql, { accountId: account.id, type: 'site', ownerId: site.id });
  const demo: Demo = {
    ...(saved ?? { groupId: '', resources: [] }),
    accountId: account.id,
    actorId: actor.id,
    siteId: site.id,
    clientToken: client.token,
    siteToken: gateway.token,
  };
  await writeJson(DEMO_JSON, demo);
  return { demo, notes: ['The recorded demo tokens were revoked or missing: created new ones (.edgeplane/demo.json).'] };
}
