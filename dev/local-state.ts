import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Sql } from 'postgres';
import { LOCAL_DIR, readJson, WORKER_DIR, WORKER_STATE_JSON, writeJson } from './local-files.ts';

/** Which server and database this is: its system identifier and name (the URL's host and path when the identifier is not readable). */
export async function databaseIdentity(sql: Sql, url: string): Promise<string> {
  const [db] = await sql<{ name: string }[]>`select current_database() as name`;
  try {
    const [row] = await sql<{ id: string }[]>`select system_identifier::text as id from pg_control_system()`;
    return `${row!.id}/${db!.name}`;
  } catch {
    return `${new URL(url).host}/${db!.name}`;
  }
}

export async function slotExists(sql: Sql, slot: string): Promise<boolean> {
  const rows = await sql`select 1 from pg_replication_slots where slot_name = ${slot} and database = current_database()`;
  return rows.length > 0;
}

interface WorkerState {
  database: string;
  slot: string;
}

/**
 * The objects' local storage holds positions in one slot's stream of one database. When that
 * stream does not carry on (the slot is new: dropped on the last clean stop, or a different
 * database), the storage is removed, and each object loads its account from Postgres on first use
 * (a consistent snapshot, docs/architecture.md#4-consistent-hydration). Returns why it was removed, or null when kept.
 */
export async function prepareWorkerState(database: string, slot: string, slotExisted: boolean): Promise<string | null> {
  const previous = await readJson<WorkerState>(WORKER_STATE_JSON);
  let reason: string | null = null;
  if (!previous) reason = 'no record of the database it came from';
  else if (previous.database !== database) reason = 'it came from another database';
  else if (previous.slot !== slot) reason = `it followed slot ${previous.slot}, not ${slot}`;
  else if (!slotExisted) reason = `slot ${slot} is new, so the stream it followed does not carry on`;
  const had = existsSync(WORKER_DIR);
  if (reason) await rm(WORKER_DIR, { recursive: true, force: true });
  await writeJson(WORKER_STATE_JSON, { database, slot } satisfies WorkerState, 0o644);
  return had ? reason : null;
}

/** Drops the slot once no replicator holds it (waits a few seconds for a stopping one). Returns whether it was dropped. */
export async function dropSlot(sql: Sql, slot: string, waitMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const [row] = await sql<{ active: boolean }[]>`select active from pg_replication_slots where slot_name = ${slot} and database = current_database()`;
    if (!row) return false;
    if (!row.active) {
      await sql`select pg_drop_replication_slot(${slot})`;
      return true;
    }
    if (Date.now() > deadline) throw new Error(`slot ${slot} is still in use by another process; left in place`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const PROCESSES_JSON = path.join(LOCAL_DIR, 'processes.json');

interface Recorded {
  name: string;
  /** Also the process group: children run in groups of their own. */
  pid: number;
  /** A piece of its command line, so that a pid reused by another program is left alone. */
  marker: string;
}

function commandOf(pid: number): string | undefined {
  try {
    return execFileSync('ps', ['-o', 'command=', '-p', String(pid)], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Remembers the children of this run, so that a run killed with SIGKILL does not leave them to the next one. */
export async function recordProcesses(list: Recorded[]): Promise<void> {
  await writeJson(PROCESSES_JSON, list, 0o644);
}

/** Stops what a killed earlier run left running (its replicator and wrangler dev); returns their names. */
export async function stopLeftovers(): Promise<string[]> {
  const list = (await readJson<Recorded[]>(PROCESSES_JSON)) ?? [];
  const stopped: string[] = [];
  for (const p of list) {
    if (!commandOf(p.pid)?.includes(p.marker)) continue;
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      try {
        process.kill(-p.pid, signal);
      } catch {
        break;
      }
      const deadline = Date.now() + 5000;
      while (commandOf(p.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (!commandOf(p.pid)) break;
    }
    stopped.push(`${p.name} (pid ${p.pid})`);
  }
  await rm(PROCESSES_JSON, { force: true });
  return stopped;
}
