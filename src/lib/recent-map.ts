/**
 * Sets `key` in a map bounded to `max` entries, kept in the order they were last set: when full, the entry set longest ago
 * is dropped first. For the per-process memories of the API (known keys, token buckets, users' empty buckets), whose size
 * a client could otherwise grow.
 */
export function setRecent<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  if (map.size >= max) map.delete(map.keys().next().value!);
  map.set(key, value);
}
