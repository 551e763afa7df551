import { statfsSync } from 'node:fs';
import { lstat, mkdir, readlink, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { ensureOwnFolder, folderFor } from './own-folder.ts';

/** The objects' SQLite files under a `--persist-to` folder. */
export function objectsDir(persistTo: string): string {
  // As `wrangler dev --persist-to` lays it out.
  return path.join(persistTo, 'v3', 'do');
}

export interface ObjectStorage {
  /** The folder to hand the runtime (the requested path). */
  dir: string;
  /** Set when the files live in memory: the folder the link points to. */
  inMemory?: string;
  /** Why they stay on disk, when a memory filesystem was looked for and not used. */
  onDisk?: string;
}

export interface MemoryPlace {
  root: string;
  /** Free bytes the memory filesystem must have; a smaller one (a container's 64 MB /dev/shm) is not used. */
  minFree: number;
}

export const MEMORY_PLACE: MemoryPlace = { root: '/dev/shm', minFree: 1 << 30 };

/** Folders made here are named `edgeplane-objects-<hash>`, and only those are ever removed. */
const PREFIX = 'edgeplane-objects-';

/**
 * Where the local run's Durable Objects keep their SQLite files. Local workerd commits every
 * storage transaction with an `fsync` on the one thread that runs the Worker and all its objects
 * (strace: ~1 ms each on this machine's disk, 11% of that thread at 500 batches/s, every isolate
 * and socket waiting meanwhile); a deployed object's commit is confirmed by replication and does not
 * stop its thread on a disk. So on a machine with a memory filesystem (Linux's /dev/shm, with room
 * to spare) the files live there, in a folder named after the requested path, and the requested path
 * links to it (docs/protocol.md#local-run).
 *
 * A reboot loses them as `prepareWorkerState` empties them after every clean stop: an object with
 * no state loads its account from a consistent snapshot, and the changes that snapshot saw are
 * skipped by xid (docs/architecture.md#hydration). Only flows not yet appended to Postgres `flows`
 * (at most the last 10 s, workers/account/flow-log.ts) would go with them, and a reboot closes
 * their sockets anyway.
 */
export async function placeObjectStorage(requested: string, place: MemoryPlace = MEMORY_PLACE): Promise<ObjectStorage> {
  const dir = path.resolve(requested);
  const why = roomIn(place);
  if (why) {
    // A link left by a start that had the room: the files start afresh on disk.
    if ((await lstat(dir).catch(() => undefined))?.isSymbolicLink()) await removeObjectStorage(dir);
    return { dir, onDisk: why };
  }
  await mkdir(path.dirname(dir), { recursive: true });
  const target = await folderFor(place.root, PREFIX, dir);
  const here = await lstat(dir).catch(() => undefined);
  if (here?.isSymbolicLink() && path.resolve(path.dirname(dir), await readlink(dir)) === target) {
    // Placed by an earlier start; after a reboot the folder is gone and starts empty.
    await ensureOwnFolder(target, 0o700);
    return { dir, inMemory: target };
  }
  // No link to it: whatever is there was left behind when its link was removed (the storage was
  // emptied), and the files on disk are a cache of Postgres too.
  await rm(target, { recursive: true, force: true });
  await ensureOwnFolder(target, 0o700);
  await rm(dir, { recursive: true, force: true });
  await symlink(target, dir);
  return { dir, inMemory: target };
}

/** Removes the storage and, when it lives in memory, the folder it links to. */
export async function removeObjectStorage(requested: string): Promise<void> {
  const dir = path.resolve(requested);
  const here = await lstat(dir).catch(() => undefined);
  if (here?.isSymbolicLink()) {
    const target = path.resolve(path.dirname(dir), await readlink(dir));
    if (path.basename(target).startsWith(PREFIX)) await rm(target, { recursive: true, force: true });
  }
  await rm(dir, { recursive: true, force: true });
}

function roomIn(place: MemoryPlace): string | null {
  let free: number;
  try {
    const st = statfsSync(place.root);
    free = st.bavail * st.bsize;
  } catch {
    return `no memory filesystem at ${place.root}`;
  }
  if (free < place.minFree) return `${place.root} has ${Math.floor(free / 2 ** 20)} MB free, under ${Math.floor(place.minFree / 2 ** 20)} MB`;
  return null;
}
