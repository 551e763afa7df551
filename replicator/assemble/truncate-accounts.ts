import type { Sql } from 'postgres';

/**
 * The accounts a TRUNCATE of a domain table goes to: it removed the table's rows in every one. Also
 * the accounts change_logs has changes of, since their `accounts` row may be gone (truncated in the
 * same statement, or deleted) while their objects still hold state.
 */
export async function listAccountsForTruncate(sql: Sql): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id::text as id from accounts union select distinct account_id::text from change_logs`;
  return rows.map((r) => r.id);
}
