import type { FlowLogEntry } from './flow-store.ts';
import { database, DatabaseError } from './database.ts';

/** Appends outbox entries to Postgres `flows`; replays after a failure insert nothing twice. */
export async function appendFlowLog(binding: Hyperdrive, entries: readonly FlowLogEntry[]): Promise<void> {
  const sql = database(binding);
  try {
    await sql`
      insert into flows (id, account_id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at)
      select id, account_id, client_id, gateway_id, resource_id, policy_id, token_id, expires_at
      from jsonb_to_recordset(${`[${entries.map((e) => e.json).join(',')}]`}::text::jsonb) as x(
        id uuid, account_id uuid, client_id uuid, gateway_id uuid, resource_id uuid, policy_id uuid, token_id uuid, expires_at timestamptz)
      on conflict (id) do nothing`;
  } catch (err) {
    throw new DatabaseError(`appending ${entries.length} flows`, { cause: err });
  }
}
