import { describe, expect, it } from 'vitest';
import { ExpiryHeap } from '../../src/expiry-heap.ts';
import { seededRandom } from '../support/seeded-random.ts';

/** Counts the entries the heap reads from its own array of instants while `fn` runs. */
function reads(heap: ExpiryHeap<number>, fn: () => void): number {
  const inner = heap as unknown as { ats: number[] };
  const plain = inner.ats;
  let n = 0;
  inner.ats = new Proxy(plain, {
    get(target, p, receiver) {
      if (typeof p === 'string' && /^\d+$/.test(p)) n++;
      return Reflect.get(target, p, receiver);
    },
  });
  try {
    fn();
  } finally {
    inner.ats = plain;
  }
  return n;
}

describe('ExpiryHeap (docs/architecture.md#11-bounded)', () => {
  it('agrees with a plain map over random sets, moves and deletes: earliest, due and at', () => {
    const seed = 20261201;
    const random = seededRandom(seed);
    const heap = new ExpiryHeap<number>();
    const model = new Map<number, number>();
    for (let step = 0; step < 20_000; step++) {
      const key = Math.floor(random() * 500);
      const r = random();
      if (r < 0.6) {
        const at = Math.floor(random() * 1_000);
        heap.set(key, at);
        model.set(key, at);
      } else {
        heap.delete(key);
        model.delete(key);
      }
      expect(heap.size, `seed ${seed} step ${step}`).toBe(model.size);
      const min = model.size === 0 ? null : Math.min(...model.values());
      expect(heap.earliest(), `seed ${seed} step ${step}`).toBe(min);
      if (step % 97 === 0) {
        const now = Math.floor(random() * 1_000);
        const due = [...model].filter(([, at]) => at <= now).map(([k]) => k);
        expect(new Set(heap.due(now)), `seed ${seed} step ${step}`).toEqual(new Set(due));
        expect(heap.due(now)).toHaveLength(due.length);
        expect(heap.at(key)).toBe(model.get(key));
      }
    }
  });

  it('lists what is due by looking at the due entries and their children only', () => {
    const heap = new ExpiryHeap<number>();
    for (let i = 0; i < 100_000; i++) heap.set(i, 1_000 + i);
    // Five entries are due: at most 2 * 5 + 1 entries are read, not 100,000.
    let due: number[] = [];
    expect(reads(heap, () => (due = heap.due(1_004)))).toBeLessThanOrEqual(11);
    expect(due.sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4]);
    expect(reads(heap, () => (due = heap.due(999)))).toBe(1);
    expect(due).toEqual([]);
    // Reading the earliest is one read; a move or a delete reads O(log n) entries.
    expect(reads(heap, () => heap.earliest())).toBe(1);
    const levels = Math.ceil(Math.log2(heap.size + 1)); // 17
    expect(reads(heap, () => heap.set(50_000, 0))).toBeLessThanOrEqual(6 * levels);
    expect(heap.earliest()).toBe(0);
    expect(reads(heap, () => heap.delete(50_000))).toBeLessThanOrEqual(6 * levels + 6);
    expect(heap.earliest()).toBe(1_000);
  });

  it('keeps equal instants, and an empty heap has no earliest', () => {
    const heap = new ExpiryHeap<string>();
    expect(heap.earliest()).toBeNull();
    expect(heap.due(Number.MAX_SAFE_INTEGER)).toEqual([]);
    heap.set('a', 5);
    heap.set('b', 5);
    heap.set('c', 7);
    expect(new Set(heap.due(5))).toEqual(new Set(['a', 'b']));
    heap.set('a', 9);
    expect(heap.due(5)).toEqual(['b']);
    heap.delete('b');
    heap.delete('missing');
    expect(heap.earliest()).toBe(7);
    heap.delete('c');
    heap.delete('a');
    expect(heap.size).toBe(0);
    expect(heap.earliest()).toBeNull();
  });
});
