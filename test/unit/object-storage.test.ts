import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { objectsDir, placeObjectStorage, removeObjectStorage, type MemoryPlace } from '../../dev/object-storage.ts';

let base: string;
let memory: MemoryPlace;
let requested: string;

beforeEach(async () => {
  base = await mkdtemp(path.join(tmpdir(), 'edgeplane-test-objects-'));
  memory = { root: path.join(base, 'shm'), minFree: 0 };
  await mkdir(memory.root);
  requested = objectsDir(path.join(base, 'checkout', '.edgeplane', 'worker'));
});
afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

const placed = () => readdirSync(memory.root);

describe("the local run's object storage", () => {
  it('lives in the memory filesystem behind a link at the requested path, and a later start finds the same files', async () => {
    const first = await placeObjectStorage(requested, memory);
    expect(first.inMemory).toBe(path.join(memory.root, placed()[0]!));
    expect(placed()).toHaveLength(1);
    expect(lstatSync(requested).isSymbolicLink()).toBe(true);
    expect(lstatSync(first.inMemory!).mode & 0o777).toBe(0o700);
    await writeFile(path.join(requested, 'account.sqlite'), 'rows');

    const again = await placeObjectStorage(requested, memory);
    expect(again).toEqual(first);
    expect(await readFile(path.join(first.inMemory!, 'account.sqlite'), 'utf8')).toBe('rows');
  });

  it('after a reboot (the memory folder gone) starts empty at the same place', async () => {
    const first = await placeObjectStorage(requested, memory);
    await rm(first.inMemory!, { recursive: true });
    const again = await placeObjectStorage(requested, memory);
    expect(again.inMemory).toBe(first.inMemory);
    expect(readdirSync(requested)).toEqual([]);
  });

  it('starts afresh when the link was removed (the storage emptied), dropping what the memory folder held', async () => {
    const first = await placeObjectStorage(requested, memory);
    await writeFile(path.join(requested, 'account.sqlite'), 'stale');
    await rm(path.dirname(path.dirname(requested)), { recursive: true });
    const again = await placeObjectStorage(requested, memory);
    expect(again.inMemory).toBe(first.inMemory);
    expect(readdirSync(requested)).toEqual([]);
  });

  it('replaces storage a disk-only start left (it is a cache of Postgres)', async () => {
    await mkdir(requested, { recursive: true });
    await writeFile(path.join(requested, 'account.sqlite'), 'from disk');
    const storage = await placeObjectStorage(requested, memory);
    expect(storage.inMemory).toBeDefined();
    expect(readdirSync(requested)).toEqual([]);
  });

  it('stays on disk, saying why, without a memory filesystem with room to spare; a link left by an earlier start goes', async () => {
    await placeObjectStorage(requested, memory);
    const full = await placeObjectStorage(requested, { ...memory, minFree: Number.MAX_SAFE_INTEGER });
    expect(full.inMemory).toBeUndefined();
    expect(full.onDisk).toMatch(/MB free, under/);
    expect(existsSync(requested)).toBe(false);
    expect(placed()).toEqual([]);

    const none = await placeObjectStorage(requested, { root: path.join(base, 'no-such-fs'), minFree: 0 });
    expect(none).toEqual({ dir: requested, onDisk: `no memory filesystem at ${path.join(base, 'no-such-fs')}` });
  });

  it('refuses a memory folder of its name that is not private to this user', async () => {
    const first = await placeObjectStorage(requested, memory);
    await removeObjectStorage(requested);
    expect(placed()).toEqual([]);
    await mkdir(first.inMemory!);
    await chmod(first.inMemory!, 0o777);
    // An unlinked folder is removed and made again, so only a link to an open one is refused.
    await mkdir(path.dirname(requested), { recursive: true });
    await symlink(first.inMemory!, requested);
    await expect(placeObjectStorage(requested, memory)).rejects.toThrow(/is not a folder of this user open to others no further than 700/);
  });
});
