import { existsSync } from 'node:fs';
import { lstat, mkdir, readlink, realpath, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensureOwnFolder, folderFor } from './own-folder.ts';
import { canEnter, execAs, LOCAL_USER, type ServerUser } from './pg-user.ts';

/**
 * Where a cluster's files really are. As root, initdb and the server run as the `postgres` user,
 * which cannot enter a checkout under a private folder (a clone in `mktemp -d`, or in root's home,
 * mode 0700). Then the cluster lives in a folder of its own under a parent every user may enter
 * (/var/tmp, kept across reboots), named after the requested path so that every start of that
 * checkout finds it again, and the requested path is a symbolic link to it
 * (docs/protocol.md#local-run).
 */
export interface Placement {
  /** The data folder the server uses. */
  dataDir: string;
  logFile: string;
  /** Set when the files live elsewhere: the requested path (a link to `dataDir`), and why when this start placed them there. */
  relocated?: { link: string; logLink: string; reason?: string };
}

/** Folders made here are named `edgeplane-pg-<hash>`, and only those are ever removed. */
const PREFIX = 'edgeplane-pg-';

function placesRoot(): string {
  return existsSync('/var/tmp') ? '/var/tmp' : tmpdir();
}

function beside(dataDir: string): string {
  return path.join(path.dirname(dataDir), `${path.basename(dataDir)}.log`);
}

export async function placeDataDir(requested: string, user: ServerUser | undefined, pgCtl: string): Promise<Placement> {
  const here = { dataDir: requested, logFile: beside(requested) };
  const link = await lstat(requested).catch(() => undefined);
  if (link?.isSymbolicLink()) {
    // Placed by an earlier start: follow it.
    const target = path.resolve(path.dirname(requested), await readlink(requested));
    return { dataDir: target, logFile: beside(target), relocated: { link: requested, logLink: beside(requested) } };
  }
  if (!user || link) return here;
  await mkdir(path.dirname(requested), { recursive: true });
  const parent = await realpath(path.dirname(requested));
  if (await canEnter(user, parent)) return here;

  const blocked = await firstClosed(user, parent);
  const home = await folderFor(placesRoot(), PREFIX, requested);
  await ensureOwnFolder(home, 0o755);
  const dataDir = path.join(home, path.basename(requested));
  // A cluster there without a link to it was left by a folder that was removed (`rm -rf .edgeplane`): start afresh.
  if (existsSync(dataDir)) {
    if (existsSync(path.join(dataDir, 'postmaster.pid'))) await execAs(user, pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w']);
    await rm(dataDir, { recursive: true, force: true });
  }
  const logFile = beside(dataDir);
  await rm(logFile, { force: true });
  await symlink(dataDir, requested);
  const logLink = beside(requested);
  await rm(logLink, { force: true });
  await symlink(logFile, logLink);
  return { dataDir, logFile, relocated: { link: requested, logLink, reason: `the '${LOCAL_USER}' user, which runs the server, cannot enter ${blocked}` } };
}

/** The outermost folder on the way to `dir` that `user` may not enter. */
async function firstClosed(user: ServerUser, dir: string): Promise<string> {
  const parts = dir.split(path.sep).filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const p = path.sep + parts.slice(0, i).join(path.sep);
    if (!(await canEnter(user, p))) return p;
  }
  return dir;
}
