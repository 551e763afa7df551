/**
 * Sets `key` in `map` as its newest entry (Map order is insertion order) and drops the oldest
 * entries beyond `max`: the per-isolate memories of the Worker, which no outsider can make grow.
 */
export function rememberBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value!);
}
