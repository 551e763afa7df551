import type { Sql } from 'postgres';

/**
 * The accounts a TRUNCATE of a domain table goes to: it removed the table's rows in every one. Also
 * the accounts with a delivery cursor (every account change_logs has a row of), since their
 * `accounts` row may be gone (truncated in the same statement, or deleted) while their objects
 * still hold state.
 */
export async function listAccountsForTruncate(sql: Sql): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id::text as id from accounts union select account_id::text from delivery_cursors`;
  return rows.map((r) => r.id);
}
