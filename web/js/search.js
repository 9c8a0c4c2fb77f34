// Text search over captions. Two passes, so results show at once and then complete:
// 1. immediately, the representatives' captions in every loaded grid (and in grids loaded later);
// 2. progressively, every row of every row tile, fetched a few at a time; a cell is marked when
//    any of its members matches. Progress is shown as "tiles searched / total".
const PARALLEL_TILES = 2;

export class Search {
  constructor(store, onUpdate) {
    this.store = store;
    this.onUpdate = onUpdate;
    this.query = '';
    this.generation = 0;
    this.rowHits = new Map();   // level -> Uint8Array(level * level), from the row pass
    this.tilesDone = 0;
    this.tilesTotal = 0;
    this.rowMatches = 0;
    this.done = true;
    store.gridListeners.push((grid) => this.markGrid(grid));
  }

  get active() { return this.query !== ''; }

  matchesText(text) { return text.toLowerCase().includes(this.query); }

  set(raw) {
    const query = String(raw || '').trim().toLowerCase();
    if (query === this.query) return;
    this.generation += 1;
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
    const keys = this.store.tileKeys();
    this.tilesTotal = keys.length;
    this.done = keys.length === 0;
    this.onUpdate();
    this.scan(keys, this.generation);
  }

  markGrid(grid) {
    if (!this.query) { grid.hits = null; return; }
    const hits = new Uint8Array(grid.length);
    for (let k = 0; k < grid.length; k++) if (grid.lower[k].includes(this.query)) hits[k] = 1;
    grid.hits = hits;
  }

  async scan(keys, generation) {
    const n = this.store.tilesN;
    let next = 0;
    const worker = async () => {
      while (next < keys.length && generation === this.generation) {
        const key = keys[next++];
        const tile = await this.store.fetchTile(key % n, Math.floor(key / n));
        if (generation !== this.generation) return;
        if (tile) this.markRows(tile);
        this.tilesDone += 1;
        this.onUpdate();
      }
    };
    await Promise.all(Array.from({ length: PARALLEL_TILES }, worker));
    if (generation === this.generation) {
      this.done = true;
      this.onUpdate();
    }
  }

  markRows(tile) {
    for (const row of tile.rows) {
      if (!row.caption.toLowerCase().includes(this.query)) continue;
      this.rowMatches += 1;
      for (const [L, hits] of this.rowHits) {
        const i = Math.min(Math.floor(row.x * L), L - 1);
        const j = Math.min(Math.floor(row.y * L), L - 1);
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
