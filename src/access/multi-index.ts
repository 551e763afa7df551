/** A one-to-many index (key -> set of values) whose empty sets are dropped. */
export class MultiIndex<K, V> {
  private readonly map = new Map<K, Set<V>>();
  private static readonly EMPTY: ReadonlySet<never> = new Set();

  add(key: K, value: V): void {
    let set = this.map.get(key);
    if (!set) this.map.set(key, (set = new Set()));
    set.add(value);
  }

  delete(key: K, value: V): void {
    const set = this.map.get(key);
    if (!set) return;
    set.delete(value);
    if (set.size === 0) this.map.delete(key);
  }

  get(key: K): ReadonlySet<V> {
    return this.map.get(key) ?? MultiIndex.EMPTY;
  }

  has(key: K, value: V): boolean {
    return this.map.get(key)?.has(value) ?? false;
  }

  entries(): IterableIterator<[K, ReadonlySet<V>]> {
    return this.map.entries();
  }

  clear(): void {
    this.map.clear();
  }
}
