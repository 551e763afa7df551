import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, realpath } from 'node:fs/promises';
import path from 'node:path';

/**
 * A folder of ours under a parent every user may write to (/var/tmp, /dev/shm): made by this
 * user, not a link, and open to others no further than `mode` (another user could otherwise have
 * made it first, to read or swap what we put there). Made with `mode`, and left with it.
 */
export async function ensureOwnFolder(dir: string, mode: number): Promise<void> {
  await mkdir(dir, { mode }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const st = await lstat(dir);
  if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o777 & ~mode) !== 0) {
    throw new Error(`${dir} exists but is not a folder of this user open to others no further than ${mode.toString(8)} (a link, another owner, or more open); remove it`);
  }
  await chmod(dir, mode);
}

/**
 * The folder under `root` that stands for `requested` (whose parent must exist): `prefix` and a
 * hash of its real path, so that every start from the same folder finds the same one.
 */
export async function folderFor(root: string, prefix: string, requested: string): Promise<string> {
  const real = path.join(await realpath(path.dirname(requested)), path.basename(requested));
  return path.join(root, `${prefix}${createHash('sha256').update(real).digest('hex').slice(0, 16)}`);
}
