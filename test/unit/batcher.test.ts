import { describe, expect, it } from 'vitest';
import { Batcher } from '../../src/batcher.ts';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A batcher whose batches the test finishes by hand, recording each batch it was given. */
function manual(max = 100) {
  const batches: number[][] = [];
  const finish: Array<() => void> = [];
  const batcher = new Batcher<number, number>(
    (items) => {
      batches.push(items);
      return new Promise((resolve) =>
        finish.push(() => resolve(items.map((i) => (i < 0 ? { status: 'rejected', reason: new Error(`refused ${i}`) } : { status: 'fulfilled', value: i * 10 })))),
      );
    },
    { windowMs: 5, max },
  );
  return { batcher, batches, finish };
}

describe('Batcher (group commit of the connects’ device upserts)', () => {
  it('gathers what arrives within the window into one batch, then what arrives while it runs into the next', async () => {
    const { batcher, batches, finish } = manual();
    const first = [1, 2, 3].map((i) => batcher.add(i));
    await tick(20);
    expect(batches).toEqual([[1, 2, 3]]);
    const second = [4, 5].map((i) => batcher.add(i));
    await tick(20);
    // One batch at a time: 4 and 5 wait for the running one.
    expect(batches).toHaveLength(1);
    finish[0]!();
    expect(await Promise.all(first)).toEqual([10, 20, 30]);
    await tick();
    // They waited already: the next batch starts at once, without a window.
    expect(batches).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    finish[1]!();
    expect(await Promise.all(second)).toEqual([40, 50]);
  });

  it('starts a full batch at once and splits at max', async () => {
    const { batcher, batches, finish } = manual(2);
    const all = [1, 2, 3].map((i) => batcher.add(i));
    await tick();
    expect(batches).toEqual([[1, 2]]);
    finish[0]!();
    await tick(20);
    expect(batches).toEqual([[1, 2], [3]]);
    finish[1]!();
    expect(await Promise.all(all)).toEqual([10, 20, 30]);
  });

  it('fails only the items the batch refused, and every item when the batch throws', async () => {
    const { batcher, finish } = manual();
    const results = Promise.allSettled([1, -2, 3].map((i) => batcher.add(i)));
    await tick(20);
    finish[0]!();
    expect((await results).map((r) => (r.status === 'fulfilled' ? r.value : String(r.reason)))).toEqual([10, 'Error: refused -2', 30]);

    let calls = 0;
    const broken = new Batcher<number, number>(
      async () => {
        calls++;
        throw new Error('database down');
      },
      { windowMs: 1, max: 10 },
    );
    const failed = await Promise.allSettled([1, 2].map((i) => broken.add(i)));
    expect(failed.map((r) => r.status === 'rejected' && String(r.reason))).toEqual(['Error: database down', 'Error: database down']);
    // And it goes on: the next item gets a batch of its own.
    await expect(broken.add(3)).rejects.toThrow('database down');
    expect(calls).toBe(2);
  });
});
