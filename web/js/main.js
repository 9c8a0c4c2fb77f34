// The viewer: loads manifest.json from its own folder, then draws the map and wires the controls.
// window.__viewer exposes the live state (level, what was drawn, search progress) for checks;
// window.__viewer.renderer.drawnRects() lists the images of the last frame where they were drawn.
import { Camera } from './camera.js';
import { attachInput } from './input.js';
import { Panels, fmt } from './panels.js';
import { Renderer, memberRect } from './render.js';
import { Search } from './search.js';
import { Store } from './store.js';
import { cellOf } from './tables.js';

class Viewer {
  constructor() {
    this.canvas = document.getElementById('map');
    this.camera = new Camera();
    this.store = new Store(window.location.href, () => this.requestDraw());
    this.panels = new Panels(this);
    this.search = new Search(this.store, () => { this.panels.searchStatus(this.search); this.requestDraw(); });
    this.renderer = new Renderer(this.canvas, this.camera, this.store, this);
    this.filters = { cluster: null, category: null };
    this.hover = null;
    this.selection = null;
    this.pending = false;
    this.started = false;
    this.errorsShown = 0;
    this.state = { ready: false, error: null, frames: 0, firstPaintMs: null, spritesPaintMs: null, exports: 0 };
  }

  async start() {
    performance.mark('viewer:start');
    document.getElementById('boot').remove();  // the script runs: not opened as a file
    try {
      const manifest = await this.store.loadManifest();
      // First paint needs only the coarsest grid and its few sheets: ask for them before
      // setting up the page, so the requests overlap with that work.
      const first = this.store.levels[0];
      const gridReady = this.store.whenGrid(first);
      const sheets = manifest.sprites[String(first)]?.sheets || [];
      if (sheets.length <= 8) sheets.forEach((_, n) => this.store.sheet(first, n));
      this.panels.setTitle(manifest.title);
      this.panels.setLabelsNote(manifest.labels && manifest.labels.note);
      this.panels.fillFilters(manifest, (filters) => { this.filters = filters; this.requestDraw(); });
      document.getElementById('search').addEventListener('input', debounce((e) => this.search.set(e.target.value), 200));
      this.panels.attachMapControls(() => this.fit(), (on) => { this.renderer.heat = on; this.requestDraw(); });
      this.resize();
      this.fit();
      const fitted = this.cameraKey();
      new ResizeObserver(() => this.resize()).observe(this.canvas);
      attachInput(this);
      this.started = true;
      await gridReady;
      if (!this.store.grids.has(first)) throw new Error(this.store.errors[this.store.errors.length - 1]);
      // Without an extent in the manifest the first fit was to the whole map: fit the grid's cells
      // now, unless the user has moved meanwhile.
      if (!Array.isArray(manifest.extent) && this.cameraKey() === fitted) this.fit();
      this.state.ready = true;
      this.requestDraw();
    } catch (err) {
      const hint = window.location.protocol === 'file:'
        ? ' Open the export folder through a local web server (python -m http.server) instead of as a file.' : '';
      this.state.error = String(err.message || err);
      this.panels.showError(`Cannot show this export: ${this.state.error}.${hint}`);
    }
  }

  // The first view, and "reset view": the box the rows occupy, with a margin. Images are drawn in
  // the middle of their cells, so the box is widened to whole cells of the level the view will
  // show; that level depends on the scale, which the wider box lowers, hence a few rounds.
  fit() {
    const levels = this.store.levels;
    const finest = levels[levels.length - 1];
    const [w, h] = [this.canvas.clientWidth, this.canvas.clientHeight];
    const rows = this.store.extent();
    let box = rows;
    for (let round = 0; round < 4; round++) {
      this.camera.fit(w, h, finest, box);
      box = snapToCells(rows, this.renderer.wantedLevel());
    }
    this.camera.fit(w, h, finest, box);
    this.requestDraw();
  }

  cameraKey() { return `${this.camera.scale} ${this.camera.ox} ${this.camera.oy}`; }

  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    this.camera.resize(w, h);
    this.requestDraw();
  }

  requestDraw() {
    if (this.pending || !this.started) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.frame(); });
  }

  frame() {
    const start = performance.now();
    const stats = this.renderer.draw();
    const now = performance.now();
    stats.drawMs = now - start;
    if (stats.cellsDrawn && this.state.firstPaintMs === null) {
      this.state.firstPaintMs = now;
      this.state.firstFrameMs = stats.drawMs;
      performance.mark('viewer:first-paint');
    }
    if (stats.imagesDrawn && stats.drawnLevels.length === 1 && this.state.spritesPaintMs === null) {
      this.state.spritesPaintMs = now;
    }
    // Once a view is complete, fetch the next finer level so zooming in finds it ready.
    if (this.state.spritesPaintMs !== null && stats.level !== null) {
      const next = this.store.levels[this.store.levels.indexOf(stats.level) + 1];
      if (next) this.store.grid(next);
    }
    Object.assign(this.state, stats, {
      frames: this.state.frames + 1, scale: this.camera.scale, labelsDrawn: this.renderer.labelsDrawn, heat: this.renderer.heat,
      errors: [...this.store.errors], filters: { ...this.filters },
      search: { query: this.search.query, done: this.search.done, tilesDone: this.search.tilesDone,
        tilesTotal: this.search.tilesTotal, rowMatches: this.search.rowMatches },
      cache: { sheets: this.store.sheets.size, thumbs: this.store.thumbs.size, tiles: this.store.tiles.size },
    });
    // A file that failed (a grid level, a row tile, a sprite sheet) is named in the notice line.
    if (this.store.errors.length > this.errorsShown) {
      this.errorsShown = this.store.errors.length;
      this.panels.notice(`Could not load ${this.store.errors[this.errorsShown - 1]}`);
    }
    if (this.renderer.heat && stats.level !== null) this.panels.legend(this.store.grids.get(stats.level).maxCount);
    const level = stats.mode === 'thumbs' ? 'single images' : `level ${stats.level ?? '…'}`;
    this.panels.setStatus(`${fmt(this.store.manifest.rows || 0)} images · ${level}`);
  }

  passesCell(grid, k) {
    const f = this.filters;
    return (f.cluster === null || grid.cluster[k] === f.cluster) && (f.category === null || grid.category[k] === f.category);
  }

  rowPassesFilters(row) {
    const f = this.filters;
    return (f.cluster === null || row.cluster === f.cluster) && (f.category === null || row.category === f.category);
  }

  rowShown(row) {
    return this.rowPassesFilters(row) && (!this.search.active || this.search.matchesText(row.caption));
  }

  // What is under a canvas point: the top level's cell and, with single images shown, the row.
  hitAt(px, py) {
    const grid = this.renderer.stack[this.renderer.stack.length - 1];
    const [wx, wy] = this.camera.toWorld(px, py);
    if (!grid || wx < 0 || wy < 0 || wx >= 1 || wy >= 1) return null;
    const L = grid.level;
    const i = cellOf(wx, L);
    const j = cellOf(wy, L);
    const k = grid.at(i, j);
    if (k < 0) return null;
    const hit = { grid, k, level: L, i, j, row: null };
    if (this.renderer.expanded.has(j * L + i)) {
      const f = L / this.store.tilesN;
      const tile = this.store.tiles.peek(Math.floor(j / f) * this.store.tilesN + Math.floor(i / f));
      const members = tile ? tile.members(L, i, j) : [];
      const [x, y] = this.camera.toScreen(i / L, j / L);
      const s = this.camera.scale / L;
      members.forEach((row, m) => {
        const [rx, ry, sub] = memberRect(x, y, s, members.length, m);
        if (px >= rx && px < rx + sub && py >= ry && py < ry + sub) hit.row = row;
      });
    }
    return hit;
  }

  hoverAt(px, py, clientX, clientY) {
    const hit = px === null ? null : this.hitAt(px, py);
    const before = this.hover;
    this.hover = hit && { level: hit.level, i: hit.i, j: hit.j };
    if (!hit) this.panels.hideTooltip();
    else {
      const { grid, k, row } = hit;
      const src = row || { caption: grid.caption[k], domain: grid.domain[k], category: grid.category[k] };
      this.panels.showTooltip(clientX, clientY, { ...src, count: grid.count[k] });
    }
    if (JSON.stringify(before) !== JSON.stringify(this.hover)) this.requestDraw();
  }

  clickAt(px, py) {
    const hit = this.hitAt(px, py);
    if (hit) this.panels.openGallery(hit.level, hit.i, hit.j, hit.grid.count[hit.k]);
    else this.panels.closeGallery();
  }

  // The members of a cell: the rows of its row tile that fall inside it.
  async cellMembers(level, i, j) {
    const f = level / this.store.tilesN;
    const tile = await this.store.fetchTile(Math.floor(i / f), Math.floor(j / f));
    return tile ? tile.members(level, i, j) : [];
  }

  // The rows inside a selected rectangle (after the filters), read from the row tiles it touches
  // and written as CSV by a worker (tiles-worker.js), then downloaded.
  exportRegion(sel) {
    const [x0, y0] = this.camera.toWorld(Math.min(sel.x0, sel.x1), Math.min(sel.y0, sel.y1));
    const [x1, y1] = this.camera.toWorld(Math.max(sel.x0, sel.x1), Math.max(sel.y0, sel.y1));
    const box = { x0, y0, x1, y1 };
    const n = this.store.tilesN;
    const urls = [];
    for (let ty = cellOf(y0, n); ty <= cellOf(y1, n); ty++) {
      for (let tx = cellOf(x0, n); tx <= cellOf(x1, n); tx++) {
        if (this.store.tileExists(tx, ty)) urls.push(this.store.url(this.store.tilePath(tx, ty)));
      }
    }
    const worker = new Worker(new URL('./tiles-worker.js', import.meta.url), { type: 'module' });
    worker.onmessage = (event) => {
      const msg = event.data;
      if (msg.error) this.store.report(new Error(msg.error));
      if (msg.progress) this.panels.notice(`Exporting rows: tile ${fmt(msg.progress)} of ${fmt(urls.length)}`);
      if (msg.csv !== undefined) this.download(msg.csv, msg.rows, box);
      if (msg.done) worker.terminate();
    };
    worker.postMessage({ task: 'region', urls, box, filters: this.filters });
  }

  download(csv, rows, box) {
    const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
    const link = document.createElement('a');
    link.href = url;
    link.download = 'selected-rows.csv';
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    this.state.exports += 1;
    this.state.lastExport = { ...box, rows };
    this.panels.notice(`Exported ${fmt(rows)} rows to selected-rows.csv`);
  }

  // For checks and scripted tours: page coordinates of a map point.
  pagePoint(x, y) {
    const r = this.canvas.getBoundingClientRect();
    const [px, py] = this.camera.toScreen(x, y);
    return [r.left + px, r.top + py];
  }
}

function snapToCells([x0, y0, x1, y1], L) {
  return [cellOf(x0, L) / L, cellOf(y0, L) / L, (cellOf(x1, L) + 1) / L, (cellOf(y1, L) + 1) / L];
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

const viewer = new Viewer();
window.__viewer = viewer;
viewer.start();
