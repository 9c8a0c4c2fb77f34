// A least-recently-used cache: decoded images and row tiles are kept only while recently on screen,
// so memory follows what the user looks at, not the size of the collection.
export class LRU {
  constructor(capacity, onEvict = null) {
    this.capacity = capacity;
    this.onEvict = onEvict;
    this.map = new Map();
  }

  get size() { return this.map.size; }

  has(key) { return this.map.has(key); }

  // Map keeps insertion order: re-inserting on read moves the key to the "recent" end.
  get(key) {
    if (!this.map.has(key)) return undefined;
    const value = this.map.get(key);
    this.map.delete(key);
    this.map.set(key, value);
    return value;
  }

  peek(key) { return this.map.get(key); }

  set(key, value) {
    if (this.map.has(key)) this.map.delete(key);
    this.map.set(key, value);
    while (this.map.size > this.capacity) {
      const [oldKey, oldValue] = this.map.entries().next().value;
      this.map.delete(oldKey);
      if (this.onEvict) this.onEvict(oldValue, oldKey);
    }
  }

  delete(key) { this.map.delete(key); }
}
