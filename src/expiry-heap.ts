/**
 * Keys ordered by an instant (epoch ms): an indexed binary min-heap, so that the next expiry is
 * read in O(1), an entry is added, moved or removed in O(log n), and the entries due by a time
 * are listed in time proportional to how many they are (docs/architecture.md#11-bounded: an
 * alarm's cost follows what expires, not what is stored).
 */
export class ExpiryHeap<K> {
  private readonly keys: K[] = [];
  private readonly ats: number[] = [];
  private readonly slots = new Map<K, number>();

  get size(): number {
    return this.keys.length;
  }

  /** The earliest instant held, or null when empty. */
  earliest(): number | null {
    return this.ats.length === 0 ? null : this.ats[0]!;
  }

  at(key: K): number | undefined {
    const i = this.slots.get(key);
    return i === undefined ? undefined : this.ats[i];
  }

  /** Adds `key` at `at`, or moves it there. */
  set(key: K, at: number): void {
    const i = this.slots.get(key);
    if (i === undefined) {
      this.keys.push(key);
      this.ats.push(at);
      this.slots.set(key, this.keys.length - 1);
      this.up(this.keys.length - 1);
      return;
    }
    const before = this.ats[i]!;
    this.ats[i] = at;
    if (at < before) this.up(i);
    else this.down(i);
  }

  delete(key: K): void {
    const i = this.slots.get(key);
    if (i === undefined) return;
    const last = this.keys.length - 1;
    if (i !== last) this.swap(i, last);
    this.keys.pop();
    this.ats.pop();
    this.slots.delete(key);
    if (i < this.keys.length) {
      this.up(i);
      this.down(i);
    }
  }

  /**
   * The keys due by `nowMs` (at <= nowMs), in no particular order. Visits only due entries and
   * their direct children: a subtree whose root is not due holds nothing due.
   */
  due(nowMs: number): K[] {
    const out: K[] = [];
    const stack = this.keys.length > 0 ? [0] : [];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (this.ats[i]! > nowMs) continue;
      out.push(this.keys[i]!);
      const l = 2 * i + 1;
      if (l < this.keys.length) stack.push(l);
      if (l + 1 < this.keys.length) stack.push(l + 1);
    }
    return out;
  }

  private up(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.ats[parent]! <= this.ats[i]!) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const n = this.keys.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let least = i;
      if (l < n && this.ats[l]! < this.ats[least]!) least = l;
      if (r < n && this.ats[r]! < this.ats[least]!) least = r;
      if (least === i) return;
      this.swap(i, least);
      i = least;
    }
  }

  private swap(a: number, b: number): void {
    const [ka, kb] = [this.keys[a]!, this.keys[b]!];
    [this.keys[a], this.keys[b]] = [kb, ka];
    [this.ats[a], this.ats[b]] = [this.ats[b]!, this.ats[a]!];
    this.slots.set(ka, b);
    this.slots.set(kb, a);
  }
}
