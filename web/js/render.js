// Canvas drawing: the sprite images of the grid levels, single thumbnails when zoomed in far,
// cluster labels, highlights, and (on request) the heat colours of density underneath. Only cells
// inside the view are touched, so a frame costs the same for 10k or 1M images.
import { cellOf } from './tables.js';

// A level gives way to the next finer one only once its cells are drawn at twice their sprite
// tile (64 px tiles: cells of 64-128 px after the first level), as map tiles do; so images stay
// large enough to recognise at every zoom, and tiles are never blown up more than twice.
export const SWITCH_TILES = 2;
const MIN_TILE_PX = 32;            // an export with tiny tiles still switches at 64 px cells
export const MIN_IMAGE_PX = 32;    // the sparsest cell's image: density shrinks images down to this
const MIN_MEMBER_PX = 36;          // a finest cell opens into its members once each gets this many px
const THUMB_BUDGET = 400;          // members shown as thumbnails at once (decoded images are capped)
const BACKGROUND = '#101014';
const NO_IMAGE = '#3a3a48';
const DIM_ALPHA = 0.14;
const HEAT_ALPHA = 0.55;
const HIGHLIGHT = '#ffe14d';
const LABEL_FONT = '600 13px system-ui, sans-serif';
const MAX_LABELS = 200;
const RECT_FIELDS = 7;             // x, y, w, h, level, cell, kind (0 sprite, 1 member thumbnail)

// Dark violet -> red -> orange -> pale yellow: more images, brighter cell.
export const HEAT = Array.from({ length: 32 }, (_, n) => {
  const t = n / 31;
  const r = Math.round(40 + 215 * Math.min(1, t * 1.6));
  const g = Math.round(20 + 200 * Math.max(0, t - 0.35) / 0.65);
  const b = Math.round(70 + 60 * Math.sin(Math.PI * t) - 40 * t);
  return `rgb(${r},${g},${b})`;
});

export function heatColour(d) { return HEAT[Math.max(0, Math.min(31, Math.round(d * 31)))]; }

// The widest a level's cells are drawn before the next level takes over, in CSS px.
export function switchPx(tile) { return SWITCH_TILES * Math.max(MIN_TILE_PX, tile || 0); }

// The coarsest level whose cells are not yet past their switch size; the finest when all are.
export function chooseLevel(scale, levels, tileOf) {
  for (const L of levels) if (scale / L <= switchPx(tileOf(L))) return L;
  return levels[levels.length - 1];
}

// The side of a cell's image, as the poster and the Miro board size theirs: area in proportion to
// the cell's count, the densest cell of the level filling its cell; never below MIN_IMAGE_PX (or
// the cell) so every image stays recognisable. A hairline (1 px) separates full cells.
export function imageSide(cellPx, count, densest) {
  const full = cellPx > 8 ? cellPx - 1 : cellPx;
  const side = cellPx * Math.sqrt(Math.max(0, count) / Math.max(1, densest));
  return Math.min(full, Math.max(side, Math.min(MIN_IMAGE_PX, full)));
}

function visibleRange(view, L) {
  return [cellOf(view.x0, L), cellOf(view.y0, L), cellOf(view.x1, L), cellOf(view.y1, L)];
}

// The square of member m among n inside a cell drawn at (x, y) with side s: a k x k mini-grid.
export function memberRect(x, y, s, n, m) {
  const k = Math.ceil(Math.sqrt(n));
  const sub = s / k;
  return [x + (m % k) * sub, y + Math.floor(m / k) * sub, sub];
}

export class Renderer {
  constructor(canvas, camera, store, viewer) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.camera = camera;
    this.store = store;
    this.viewer = viewer;   // filters, search, hover, selection
    this.stack = [];
    this.expanded = new Set();  // finest cells drawn as their members, in this frame (j * L + i)
    this.expandedCells = new Set();  // the same cells, by cell number
    this.stats = {};
    this.heat = false;          // density as heat colours under the images (the legend's toggle)
    // What the last frame drew, RECT_FIELDS numbers per image, for checks (see drawnRects).
    this.rects = new Float64Array(RECT_FIELDS * 1024);
    this.nRects = 0;
    this.labelBoxes = [];
  }

  wantedLevel() { return chooseLevel(this.camera.scale, this.store.levels, (L) => this.store.tileOf(L)); }

  // Past the finest level's switch size, its cells open into their members' own thumbnails.
  thumbsMode() {
    const levels = this.store.levels;
    const L = levels[levels.length - 1];
    return this.camera.scale / L > switchPx(this.store.tileOf(L));
  }

  addRect(x, y, w, h, level, k, kind) {
    if ((this.nRects + 1) * RECT_FIELDS > this.rects.length) {
      const grown = new Float64Array(this.rects.length * 2);
      grown.set(this.rects);
      this.rects = grown;
    }
    const r = this.rects;
    const o = this.nRects * RECT_FIELDS;
    r[o] = x; r[o + 1] = y; r[o + 2] = w; r[o + 3] = h; r[o + 4] = level; r[o + 5] = k; r[o + 6] = kind;
    this.nRects += 1;
  }

  // The images of the last frame in canvas CSS px, [{x, y, w, h, level, cell, kind}], less the
  // representatives that their members' thumbnails have since covered.
  drawnRects() {
    const top = this.stack.length ? this.stack[this.stack.length - 1].level : null;
    const out = [];
    for (let n = 0; n < this.nRects; n++) {
      const [x, y, w, h, level, cell, kind] = this.rects.subarray(n * RECT_FIELDS, (n + 1) * RECT_FIELDS);
      if (kind === 0 && level === top && this.expandedCells.has(cell)) continue;
      out.push({ x, y, w, h, level, cell, kind: kind === 0 ? 'sprite' : 'thumb' });
    }
    return out;
  }

  // The levels to draw, coarse first: the wanted level on top, and under it coarser levels until
  // one whose visible sprite sheets are all ready, so nothing blank shows while finer sheets load.
  levelStack(view) {
    const levels = this.store.levels;
    const stack = [];
    for (let n = levels.indexOf(this.wantedLevel()); n >= 0; n--) {
      const grid = this.store.grid(levels[n]);
      if (!grid) continue;
      stack.unshift(grid);
      if (this.requestSheets(grid, view)) break;
    }
    return stack;
  }

  requestSheets(grid, view) {
    const [i0, j0, i1, j1] = visibleRange(view, grid.level);
    const needed = new Set();
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) {
        const k = grid.at(i, j);
        if (k < 0) continue;
        const sp = grid.spriteOf(k);
        if (sp) needed.add(sp[0]);
      }
    }
    let ready = true;
    for (const n of needed) if (!this.store.sheet(grid.level, n)) ready = false;
    return ready;
  }

  draw() {
    const { ctx, camera } = this;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.globalAlpha = 1;
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, camera.width, camera.height);
    const stats = { cellsDrawn: 0, cellsShown: 0, imagesDrawn: 0, thumbsDrawn: 0, repThumbsDrawn: 0, membersDrawn: 0, highlighted: 0 };
    const view = camera.view();
    this.nRects = 0;
    this.stack = this.levelStack(view);
    this.expanded = new Set();
    this.expandedCells = new Set();
    this.stack.forEach((grid, n) => this.drawLevel(grid, view, n === 0, stats));
    const top = this.stack[this.stack.length - 1];
    const thumbs = Boolean(top && top.level === this.store.levels[this.store.levels.length - 1] && this.thumbsMode());
    if (thumbs) this.drawMembers(top, view, stats);
    if (top) this.drawHighlights(top, view, stats);
    this.drawLabels();
    this.drawSelection();
    this.stats = { ...stats, level: top ? top.level : null, drawnLevels: this.stack.map((g) => g.level),
      wantedLevel: this.wantedLevel(), mode: thumbs ? 'thumbs' : 'grid' };
    return this.stats;
  }

  cellShown(grid, k) {
    return this.viewer.passesCell(grid, k) && (!this.viewer.search.active || this.viewer.search.cellHit(grid, k));
  }

  drawLevel(grid, view, isBase, stats) {
    const { ctx, camera } = this;
    const L = grid.level;
    const s = camera.scale / L;
    const [i0, j0, i1, j1] = visibleRange(view, L);
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) {
        const k = grid.at(i, j);
        if (k < 0) continue;
        const sp = grid.spriteOf(k);
        const sheet = sp ? this.store.sheet(L, sp[0]) : null;
        // On top of a coarser level, a cell waits for its image so the coarser one shows meanwhile.
        if (!isBase && sp && !sheet) continue;
        const [x, y] = camera.toScreen(i / L, j / L);
        const shown = this.cellShown(grid, k);
        ctx.globalAlpha = shown ? 1 : DIM_ALPHA;
        if (this.heat) {
          ctx.globalAlpha *= HEAT_ALPHA;
          ctx.fillStyle = heatColour(grid.heat[k]);
          ctx.fillRect(x, y, s, s);
          ctx.globalAlpha = shown ? 1 : DIM_ALPHA;
        } else if (!isBase) {
          // a finer cell covers the coarser image beneath it, which would show around its own
          ctx.fillStyle = BACKGROUND;
          ctx.fillRect(x, y, s, s);
        }
        stats.cellsDrawn += 1;
        if (shown) stats.cellsShown += 1;
        const side = imageSide(s, grid.count[k], grid.maxCount);
        const ix = x + (s - side) / 2;
        const iy = y + (s - side) / 2;
        if (sheet) {
          ctx.drawImage(sheet, sp[1], sp[2], grid.tile, grid.tile, ix, iy, side, side);
          stats.imagesDrawn += 1;
          this.addRect(ix, iy, side, side, L, k, 0);
        } else {
          // no thumbnail (or its sheet is still loading at the base level): a plain square, same size
          ctx.fillStyle = NO_IMAGE;
          ctx.fillRect(ix, iy, side, side);
        }
      }
    }
    ctx.globalAlpha = 1;
  }

  // Cells open into their members' thumbnails from the middle of the screen outwards, until the
  // budget of decoded thumbnails is spent; the cells beyond keep their representative image.
  drawMembers(grid, view, stats) {
    const { ctx, camera } = this;
    const L = grid.level;
    const s = camera.scale / L;
    let budget = THUMB_BUDGET;
    for (const { i, j, members } of this.visibleMembers(grid, view)) {
      if (members.length > budget) {   // this cell keeps its representative; smaller ones may still open
        stats.thumbBudgetExceeded = true;
        continue;
      }
      budget -= members.length;
      const [x, y] = camera.toScreen(i / L, j / L);
      ctx.globalAlpha = 1;
      ctx.fillStyle = BACKGROUND;
      ctx.fillRect(x, y, s, s);
      members.forEach((row, m) => this.drawMember(row, memberRect(x, y, s, members.length, m), stats, L, grid.at(i, j)));
      this.expanded.add(j * L + i);
      this.expandedCells.add(grid.at(i, j));
    }
    this.drawRepresentativeThumbs(grid, view, stats);
    ctx.globalAlpha = 1;
  }

  // Cells not yet open are drawn wider than twice their sprite tile: their representative's own
  // thumbnail (its middle square, as the tile) replaces the tile once loaded, so it stays sharp.
  drawRepresentativeThumbs(grid, view, stats) {
    const { ctx, camera } = this;
    const L = grid.level;
    const s = camera.scale / L;
    const [i0, j0, i1, j1] = visibleRange(view, L);
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) {
        const k = grid.at(i, j);
        if (k < 0 || grid.sprite[k] < 0 || this.expanded.has(j * L + i)) continue;
        const img = this.store.thumb(grid.id[k]);
        if (!img || !img.width) continue;
        const [x, y] = camera.toScreen(i / L, j / L);
        const side = imageSide(s, grid.count[k], grid.maxCount);
        const crop = Math.min(img.width, img.height);
        ctx.globalAlpha = this.cellShown(grid, k) ? 1 : DIM_ALPHA;
        ctx.drawImage(img, (img.width - crop) / 2, (img.height - crop) / 2, crop, crop,
          x + (s - side) / 2, y + (s - side) / 2, side, side);
        stats.repThumbsDrawn += 1;
      }
    }
  }

  // Visible finest cells whose row tile is loaded and whose members are big enough to tell apart.
  visibleMembers(grid, view) {
    const L = grid.level;
    const s = this.camera.scale / L;
    const f = L / this.store.tilesN;
    const [i0, j0, i1, j1] = visibleRange(view, L);
    const out = [];
    for (let j = j0; j <= j1; j++) {
      for (let i = i0; i <= i1; i++) {
        if (grid.at(i, j) < 0) continue;
        const tile = this.store.tile(Math.floor(i / f), Math.floor(j / f));
        if (!tile) continue;
        const members = tile.members(L, i, j);
        const sub = s / Math.ceil(Math.sqrt(members.length));
        if (sub >= MIN_MEMBER_PX) out.push({ i, j, members });  // smaller: the representative stays
      }
    }
    // Thumbnails are requested a few at a time: the middle of the screen first.
    const ci = ((view.x0 + view.x1) / 2) * L - 0.5;
    const cj = ((view.y0 + view.y1) / 2) * L - 0.5;
    return out.sort((a, b) => Math.hypot(a.i - ci, a.j - cj) - Math.hypot(b.i - ci, b.j - cj));
  }

  drawMember(row, [x, y, sub], stats, level, k) {
    const { ctx } = this;
    const pad = sub > 10 ? 1 : 0;
    ctx.globalAlpha = this.viewer.rowShown(row) ? 1 : DIM_ALPHA;
    const img = this.store.thumb(row.id);
    if (img && img.width) {
      const fit = (sub - 2 * pad) / Math.max(img.width, img.height);
      const w = img.width * fit;
      const h = img.height * fit;
      ctx.drawImage(img, x + (sub - w) / 2, y + (sub - h) / 2, w, h);
      this.addRect(x + (sub - w) / 2, y + (sub - h) / 2, w, h, level, k, 1);
      stats.thumbsDrawn += 1;
    } else {
      ctx.fillStyle = '#3a3a48';
      ctx.fillRect(x + pad, y + pad, sub - 2 * pad, sub - 2 * pad);
    }
    stats.membersDrawn += 1;
  }

  drawHighlights(grid, view, stats) {
    const { ctx, camera, viewer } = this;
    const L = grid.level;
    const s = camera.scale / L;
    ctx.lineWidth = 2;
    ctx.strokeStyle = HIGHLIGHT;
    if (viewer.search.active) {
      const [i0, j0, i1, j1] = visibleRange(view, L);
      for (let j = j0; j <= j1; j++) {
        for (let i = i0; i <= i1; i++) {
          const k = grid.at(i, j);
          if (k < 0 || !viewer.passesCell(grid, k) || !viewer.search.cellHit(grid, k)) continue;
          const [x, y] = camera.toScreen(i / L, j / L);
          ctx.strokeRect(x + 1, y + 1, s - 2, s - 2);
          stats.highlighted += 1;
        }
      }
    }
    if (viewer.hover && viewer.hover.level === L) {
      const [x, y] = camera.toScreen(viewer.hover.i / L, viewer.hover.j / L);
      ctx.strokeStyle = '#ffffff';
      ctx.strokeRect(x, y, s, s);
    }
  }

  drawLabels() {
    const { ctx, camera, viewer } = this;
    const clusters = (this.store.manifest.clusters || []).slice(0, MAX_LABELS);
    ctx.font = LABEL_FONT;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.lineJoin = 'round';
    const placed = [];
    this.labelBoxes = placed;
    for (const c of [...clusters].sort((a, b) => (b.count || 0) - (a.count || 0))) {
      if (!Number.isFinite(c.x) || !Number.isFinite(c.y)) continue;
      const [x, y] = camera.toScreen(c.x, c.y);
      if (x < -100 || y < -20 || x > camera.width + 100 || y > camera.height + 20) continue;
      const label = String(c.label ?? c.cluster).slice(0, 80);
      const w = ctx.measureText(label).width + 8;
      const box = [x - w / 2, y - 10, x + w / 2, y + 10];
      // Skip a label that would cover a larger cluster's: zooming in reveals it.
      if (placed.some((b) => box[0] < b[2] && box[2] > b[0] && box[1] < b[3] && box[3] > b[1])) continue;
      placed.push(box);
      const dim = viewer.filters.cluster !== null && viewer.filters.cluster !== c.cluster;
      ctx.globalAlpha = dim ? 0.35 : 1;
      ctx.lineWidth = 4;
      ctx.strokeStyle = 'rgba(0,0,0,0.85)';
      ctx.strokeText(label, x, y);
      ctx.fillStyle = '#ffffff';
      ctx.fillText(label, x, y);
    }
    ctx.globalAlpha = 1;
    this.labelsDrawn = placed.length;
  }

  drawSelection() {
    const sel = this.viewer.selection;
    if (!sel) return;
    const { ctx } = this;
    const x = Math.min(sel.x0, sel.x1);
    const y = Math.min(sel.y0, sel.y1);
    ctx.fillStyle = 'rgba(120,180,255,0.15)';
    ctx.fillRect(x, y, Math.abs(sel.x1 - sel.x0), Math.abs(sel.y1 - sel.y0));
    ctx.strokeStyle = '#78b4ff';
    ctx.lineWidth = 1;
    ctx.strokeRect(x, y, Math.abs(sel.x1 - sel.x0), Math.abs(sel.y1 - sel.y0));
  }
}
