// Everything the viewer fetches: the manifest, the grids, sprite sheets, row tiles and thumbnails.
// Every path comes from the export's own files, so each is checked to stay inside the export
// folder before it is requested; row ids are checked before they name a thumbnail.
import { LRU } from './lru.js';
import { Grid, RowTile, isRowId } from './tables.js';

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
    try {
      return await response.json();
    } catch {
      throw new Error(`${path}: not valid JSON`);
    }
  }

  async loadManifest() {
    const m = await this.fetchJson('manifest.json');
    performance.mark('viewer:manifest');
    if (!m || typeof m !== 'object') throw new Error('manifest.json is not a JSON object');
    if (m.version !== 1) throw new Error(`manifest.json has version ${m.version}; this viewer reads version 1`);
    // Levels up to 4096: a level's cell lookup is level x level integers.
    const levels = (Array.isArray(m.levels) ? m.levels : []).map(Number)
      .filter((L) => Number.isInteger(L) && L > 0 && L <= 4096).sort((a, b) => a - b);
    if (!levels.length) throw new Error('manifest.json lists no grid levels');
    const tiles = m.row_tiles || {};
    const n = Number(tiles.n);
    if (!Number.isInteger(n) || n < 1 || levels.some((L) => L % n) || typeof tiles.pattern !== 'string') {
      throw new Error('manifest.json: row_tiles needs a pattern and an n that divides every grid level');
    }
    // The file list is for archiving tools, not the map; with a million thumbnails it is most of the heap.
    delete m.files;
    // Optional parts may be missing from a hand-made or older export: the map still draws.
    if (!m.sprites || typeof m.sprites !== 'object') m.sprites = {};
    if (!m.thumbs || typeof m.thumbs.dir !== 'string') m.thumbs = { dir: 'images/256' };
    if (!Array.isArray(m.clusters)) m.clusters = [];
    if (!Array.isArray(m.categories)) m.categories = [];
    if (!m.grids || typeof m.grids !== 'object') throw new Error('manifest.json lists no grid files');
    for (const L of levels) this.url(m.grids[String(L)]);  // refuse bad paths before any request
    this.levels = levels;
    this.tilesN = n;
    this.manifest = m;
    return m;
  }

  // The side of a level's sprite tiles, from the manifest (the level switches by it before its grid loads).
  tileOf(level) {
    const sprites = this.manifest.sprites[String(level)];
    return sprites && Number(sprites.tile) > 0 ? Number(sprites.tile) : 0;
  }

  // The box [x0, y0, x1, y1] the rows occupy: the manifest's extent, else the coarsest grid's
  // non-empty cells once loaded, else the whole map.
  extent() {
    const e = this.manifest.extent;
    if (Array.isArray(e) && e.length === 4 && e.every(Number.isFinite) && e[0] <= e[2] && e[1] <= e[3]) return e;
    const g = this.grids.get(this.levels[0]);
    if (!g || !g.length) return [0, 0, 1, 1];
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (let k = 0; k < g.length; k++) {
      x0 = Math.min(x0, g.i[k]); y0 = Math.min(y0, g.j[k]); x1 = Math.max(x1, g.i[k] + 1); y1 = Math.max(y1, g.j[k] + 1);
    }
    return [x0 / g.level, y0 / g.level, x1 / g.level, y1 / g.level];
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
    if (!isRowId(id)) return null;
    const entry = this.thumbs.get(id);
    if (entry) return entry.ready ? entry.img : null;
    if (this.failed.has(id) || this.thumbRequests >= MAX_THUMB_REQUESTS) return null;
    this.thumbRequests += 1;
    return this.loadImage(this.thumbs, id, this.thumbPath(id), () => { this.thumbRequests -= 1; });
  }

  thumbPath(id) {
    return isRowId(id) ? `${this.manifest.thumbs.dir}/${id}.jpg` : null;
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
      .catch((err) => {
        if (released) return;  // evicted while loading: a later request starts afresh
        cache.delete(key);
        this.failed.add(key);
        // A missing sprite sheet is a broken export; a missing thumbnail is a row without one.
        if (cache === this.sheets) this.report(err.message.startsWith(path) ? err : new Error(`${path}: ${err.message}`));
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

  // Fetch a row tile (shared by drawing and the gallery; search and CSV read tiles in the worker).
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
