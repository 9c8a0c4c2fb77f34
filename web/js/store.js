// Everything the viewer fetches: the manifest, the grids, sprite sheets, row tiles and thumbnails.
// Every path comes from the export's own files, so each is checked to stay inside the export
// folder before it is requested; row ids are checked before they name a thumbnail.
import { LRU } from './lru.js';

const ID_RE = /^[0-9a-f]{16}$/;
const MAX_SHEETS = 48;        // a 1024 px sheet decodes to 4 MB: at most ~200 MB of sheets
const MAX_THUMBS = 600;
const MAX_TILES = 12;
const MAX_THUMB_REQUESTS = 12; // in flight at once: the rest are asked for on later frames

export class Store {
  constructor(pageUrl, onChange) {
    this.base = new URL('./', pageUrl);
    this.onChange = onChange;
    this.manifest = null;
    this.grids = new Map();
    this.gridRequests = new Map();
    this.gridListeners = [];
    this.sheets = new LRU(MAX_SHEETS, (entry) => entry.release());
    this.thumbs = new LRU(MAX_THUMBS, (entry) => entry.release());
    this.tiles = new LRU(MAX_TILES);
    this.tileRequests = new Map();
    this.thumbRequests = 0;
    this.failed = new Set();
    this.errors = [];
  }

  // A manifest path -> an absolute URL inside the export folder, or an Error.
  url(path) {
    if (typeof path !== 'string' || path === '' || path.includes('\\')) {
      throw new Error(`refusing path ${JSON.stringify(path)}: not a relative path`);
    }
    const u = new URL(path, this.base);
    if (u.origin !== this.base.origin || !u.pathname.startsWith(this.base.pathname) || u.search || u.hash) {
      throw new Error(`refusing path ${JSON.stringify(path)}: outside the export folder`);
    }
    return u.href;
  }

  async fetchJson(path) {
    const response = await fetch(this.url(path));
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async loadManifest() {
    const m = await this.fetchJson('manifest.json');
    performance.mark('viewer:manifest');
    if (m.version !== 1) throw new Error(`manifest.json has version ${m.version}; this viewer reads version 1`);
    const levels = (m.levels || []).map(Number).filter((L) => Number.isInteger(L) && L > 0).sort((a, b) => a - b);
    if (!levels.length) throw new Error('manifest.json lists no grid levels');
    const n = Number(m.row_tiles && m.row_tiles.n);
    if (!Number.isInteger(n) || n < 1 || levels.some((L) => L % n)) {
      throw new Error('manifest.json: row_tiles.n must divide every grid level');
    }
    for (const L of levels) this.url(m.grids[String(L)]);  // refuse bad paths before any request
    // The file list is for archiving tools, not the map; with a million thumbnails it is most of the heap.
    delete m.files;
    this.levels = levels;
    this.tilesN = n;
    this.manifest = m;
    return m;
  }

  // The grid of a level if loaded; otherwise starts loading it and returns null.
  grid(level) {
    const g = this.grids.get(level);
    if (g) return g;
    if (!this.gridRequests.has(level)) {
      const request = this.fetchJson(this.manifest.grids[String(level)])
        .then((json) => {
          performance.mark(`viewer:grid-${level}-fetched`);
          const grid = new Grid(level, json, this.manifest.sprites[String(level)]);
          performance.mark(`viewer:grid-${level}-built`);
          this.grids.set(level, grid);
          for (const listener of this.gridListeners) listener(grid);
          this.onChange();
          return grid;
        })
        .catch((err) => { this.report(err); });
      this.gridRequests.set(level, request);
    }
    return null;
  }

  whenGrid(level) {
    this.grid(level);
    return this.gridRequests.get(level);
  }

  report(err) {
    this.errors.push(String(err.message || err));
    this.onChange();
  }

  // A sprite sheet ready to draw, or null (and it is requested).
  sheet(level, n) {
    const key = `${level}/${n}`;
    const entry = this.sheets.get(key);
    if (entry) return entry.ready ? entry.img : null;
    if (this.failed.has(key)) return null;
    const paths = this.manifest.sprites[String(level)].sheets;
    if (!(n >= 0 && n < paths.length)) return null;
    return this.loadImage(this.sheets, key, paths[n]);
  }

  thumb(id) {
    if (!ID_RE.test(id)) return null;
    const entry = this.thumbs.get(id);
    if (entry) return entry.ready ? entry.img : null;
    if (this.failed.has(id) || this.thumbRequests >= MAX_THUMB_REQUESTS) return null;
    this.thumbRequests += 1;
    return this.loadImage(this.thumbs, id, this.thumbPath(id), () => { this.thumbRequests -= 1; });
  }

  thumbPath(id) {
    return ID_RE.test(id) ? `${this.manifest.thumbs.dir}/${id}.jpg` : null;
  }

  thumbUrl(id) {
    const path = this.thumbPath(id);
    if (!path) return null;
    try { return this.url(path); } catch { return null; }
  }

  // Images are fetched and decoded off the main thread (createImageBitmap), so a frame never
  // stalls decoding a sprite sheet, and an evicted bitmap's memory is freed at once (close()).
  loadImage(cache, key, path, done = () => {}) {
    let href;
    try { href = this.url(path); } catch (err) { this.failed.add(key); this.report(err); done(); return null; }
    const controller = new AbortController();
    let released = false;
    const entry = {
      img: null,
      ready: false,
      release: () => {
        released = true;
        controller.abort();
        if (entry.img) entry.img.close();
      },
    };
    cache.set(key, entry);
    fetch(href, { signal: controller.signal })
      .then((response) => {
        if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
        return response.blob();
      })
      .then((blob) => createImageBitmap(blob))
      .then((bitmap) => {
        if (released) { bitmap.close(); return; }
        entry.img = bitmap;
        entry.ready = true;
        this.onChange();
      })
      .catch(() => {
        if (released) return;  // evicted while loading: a later request starts afresh
        cache.delete(key);
        this.failed.add(key);
        this.onChange();
      })
      .finally(done);
    return null;
  }

  tilePath(tx, ty) {
    return this.manifest.row_tiles.pattern.replace('{tx}', String(tx)).replace('{ty}', String(ty));
  }

  // Row tiles that exist: those under a non-empty cell of the coarsest grid (every cell lies in
  // exactly one tile), so no request is made for a tile that was never written.
  tileKeys() {
    const g = this.grids.get(this.levels[0]);
    if (!g) return [];
    const f = g.level / this.tilesN;
    const keys = new Set();
    for (let k = 0; k < g.length; k++) keys.add(Math.floor(g.j[k] / f) * this.tilesN + Math.floor(g.i[k] / f));
    return [...keys].sort((a, b) => a - b);
  }

  tileExists(tx, ty) {
    const g = this.grids.get(this.levels[0]);
    if (!g) return false;
    const f = g.level / this.tilesN;
    for (let j = ty * f; j < (ty + 1) * f; j++) {
      for (let i = tx * f; i < (tx + 1) * f; i++) if (g.at(i, j) >= 0) return true;
    }
    return false;
  }

  // A loaded row tile for drawing, or null (and it is requested).
  tile(tx, ty) {
    const key = ty * this.tilesN + tx;
    const t = this.tiles.get(key);
    if (t) return t;
    if (!this.tileRequests.has(key) && !this.failed.has(`tile/${key}`)) this.fetchTile(tx, ty);
    return null;
  }

  // Fetch a row tile (shared by drawing, the gallery, search and CSV export).
  fetchTile(tx, ty) {
    const key = ty * this.tilesN + tx;
    const cached = this.tiles.peek(key);
    if (cached) return Promise.resolve(cached);
    if (this.tileRequests.has(key)) return this.tileRequests.get(key);
    const request = this.fetchJson(this.tilePath(tx, ty))
      .then((json) => {
        const t = new RowTile(json);
        this.tiles.set(key, t);
        this.onChange();
        return t;
      })
      .catch((err) => { this.failed.add(`tile/${key}`); this.report(err); return null; })
      .finally(() => { this.tileRequests.delete(key); });
    this.tileRequests.set(key, request);
    return request;
  }
}

function columnIndex(columns, names) {
  const index = {};
  for (const name of names) {
    index[name] = columns.indexOf(name);
    if (index[name] < 0) throw new Error(`missing column ${name}`);
  }
  return index;
}

const text = (v) => (v === null || v === undefined ? '' : String(v));

// One level's cells in typed arrays plus a dense (i, j) -> cell lookup, so drawing and hit
// testing only touch the cells on screen.
export class Grid {
  constructor(level, json, sprites) {
    const c = columnIndex(json.columns, ['i', 'j', 'count', 'id', 'caption', 'domain', 'category', 'cluster', 'sprite']);
    const cells = json.cells.filter((r) => Number.isInteger(r[c.i]) && Number.isInteger(r[c.j])
      && r[c.i] >= 0 && r[c.j] >= 0 && r[c.i] < level && r[c.j] < level);
    const n = cells.length;
    this.level = level;
    this.length = n;
    this.i = new Int32Array(n);
    this.j = new Int32Array(n);
    this.count = new Int32Array(n);
    this.sprite = new Int32Array(n);
    this.cluster = new Int32Array(n);
    this.id = new Array(n);
    this.caption = new Array(n);
    this.domain = new Array(n);
    this.category = new Array(n);
    this.lower = new Array(n);
    this.index = new Int32Array(level * level).fill(-1);
    let max = 1;
    for (let k = 0; k < n; k++) {
      const r = cells[k];
      this.i[k] = r[c.i];
      this.j[k] = r[c.j];
      this.count[k] = Math.max(0, Number(r[c.count]) || 0);
      this.sprite[k] = Number.isInteger(r[c.sprite]) ? r[c.sprite] : -1;
      this.cluster[k] = Number.isInteger(r[c.cluster]) ? r[c.cluster] : -1;
      this.id[k] = text(r[c.id]);
      this.caption[k] = text(r[c.caption]);
      this.lower[k] = this.caption[k].toLowerCase();
      this.domain[k] = text(r[c.domain]);
      this.category[k] = text(r[c.category]);
      this.index[r[c.j] * level + r[c.i]] = k;
      if (this.count[k] > max) max = this.count[k];
    }
    // Density on a log scale: a few huge cells should not wash out the rest of the map.
    this.heat = new Float32Array(n);
    const logMax = Math.log1p(max);
    for (let k = 0; k < n; k++) this.heat[k] = Math.log1p(this.count[k]) / logMax;
    this.tile = sprites ? sprites.tile : 0;
    this.columns = sprites ? sprites.columns : 1;
    this.hits = null;  // filled by search: 1 where the cell matches
  }

  at(i, j) {
    if (i < 0 || j < 0 || i >= this.level || j >= this.level) return -1;
    return this.index[j * this.level + i];
  }

  // [sheet, sx, sy] of a cell's sprite, or null when it has none.
  spriteOf(k) {
    const s = this.sprite[k];
    if (s < 0 || !this.tile) return null;
    const per = this.columns * this.columns;
    const p = s % per;
    return [Math.floor(s / per), (p % this.columns) * this.tile, Math.floor(p / this.columns) * this.tile];
  }
}

// One row tile, with its rows grouped by finest-level cell for drawing single thumbnails.
export class RowTile {
  constructor(json) {
    const c = columnIndex(json.columns, ['id', 'x', 'y', 'caption', 'url', 'domain', 'category', 'cluster']);
    this.rows = json.rows.filter((r) => Number.isFinite(r[c.x]) && Number.isFinite(r[c.y])).map((r) => ({
      id: text(r[c.id]), x: r[c.x], y: r[c.y], caption: text(r[c.caption]), url: text(r[c.url]),
      domain: text(r[c.domain]), category: text(r[c.category]),
      cluster: Number.isInteger(r[c.cluster]) ? r[c.cluster] : -1,
    }));
    this.byLevel = new Map();
  }

  // Rows of the tile inside cell (i, j) of `level`, ordered top to bottom, then left to right.
  members(level, i, j) {
    let byCell = this.byLevel.get(level);
    if (!byCell) {
      byCell = new Map();
      for (const row of this.rows) {
        const key = cellOf(row.y, level) * level + cellOf(row.x, level);
        if (!byCell.has(key)) byCell.set(key, []);
        byCell.get(key).push(row);
      }
      for (const list of byCell.values()) list.sort((a, b) => a.y - b.y || a.x - b.x);
      this.byLevel.set(level, byCell);
    }
    return byCell.get(j * level + i) || [];
  }
}

export function cellOf(v, level) {
  return Math.max(0, Math.min(Math.floor(v * level), level - 1));
}

export function isRowId(id) { return ID_RE.test(id); }
