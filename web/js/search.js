// Text search over captions. Two passes, so results show at once and then complete:
// 1. immediately, the representatives' captions in every loaded grid (and in grids loaded later);
// 2. progressively, every row of every row tile, read by a worker (tiles-worker.js); a cell is
//    marked when any of its members matches. Progress is shown as "tiles searched / total".

export class Search {
  constructor(store, onUpdate) {
    this.store = store;
    this.onUpdate = onUpdate;
    this.query = '';
    this.rowHits = new Map();   // level -> Uint8Array(level * level), from the row pass
    this.tilesDone = 0;
    this.tilesTotal = 0;
    this.rowMatches = 0;
    this.done = true;
    this.worker = null;
    store.gridListeners.push((grid) => this.markGrid(grid));
  }

  get active() { return this.query !== ''; }

  matchesText(text) { return text.toLowerCase().includes(this.query); }

  set(raw) {
    const query = String(raw || '').trim().toLowerCase();
    if (query === this.query) return;
    if (this.worker) this.worker.terminate();  // a new query: the old scan stops where it is
    this.worker = null;
    this.query = query;
    this.rowHits = new Map();
    this.tilesDone = 0;
    this.rowMatches = 0;
    for (const grid of this.store.grids.values()) this.markGrid(grid);
    if (!query) {
      this.tilesTotal = 0;
      this.done = true;
      this.onUpdate();
      return;
    }
    for (const L of this.store.levels) this.rowHits.set(L, new Uint8Array(L * L));
    const n = this.store.tilesN;
    const urls = [];
    for (const key of this.store.tileKeys()) {
      try { urls.push(this.store.url(this.store.tilePath(key % n, Math.floor(key / n)))); } catch (err) { this.store.report(err); }
    }
    this.tilesTotal = urls.length;
    this.done = urls.length === 0;
    this.onUpdate();
    if (urls.length) this.scan(query, urls);
  }

  scan(query, urls) {
    const worker = new Worker(new URL('./tiles-worker.js', import.meta.url), { type: 'module' });
    this.worker = worker;
    worker.onmessage = (event) => {
      if (worker !== this.worker) return;
      const msg = event.data;
      if (msg.done) {
        this.done = true;
        worker.terminate();
        this.worker = null;
      } else {
        if (msg.error) this.store.report(new Error(msg.error));
        this.markRows(msg.x, msg.y);
        this.tilesDone += 1;
      }
      this.onUpdate();
    };
    worker.postMessage({ task: 'search', query, urls });
  }

  markGrid(grid) {
    if (!this.query) { grid.hits = null; return; }
    const hits = new Uint8Array(grid.length);
    for (let k = 0; k < grid.length; k++) if (grid.lower[k].includes(this.query)) hits[k] = 1;
    grid.hits = hits;
  }

  markRows(xs, ys) {
    this.rowMatches += xs.length;
    for (let r = 0; r < xs.length; r++) {
      for (const [L, hits] of this.rowHits) {
        const i = Math.max(0, Math.min(Math.floor(xs[r] * L), L - 1));
        const j = Math.max(0, Math.min(Math.floor(ys[r] * L), L - 1));
        hits[j * L + i] = 1;
      }
    }
  }

  // Whether cell k of `grid` holds a match (its representative, or any member once scanned).
  cellHit(grid, k) {
    if (grid.hits && grid.hits[k]) return true;
    const rows = this.rowHits.get(grid.level);
    return Boolean(rows && rows[grid.j[k] * grid.level + grid.i[k]]);
  }
}
