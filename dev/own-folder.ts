import { chmod, lstat, mkdir } from 'node:fs/promises';

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
