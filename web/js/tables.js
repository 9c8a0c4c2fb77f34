// The export's tables in the shapes the viewer needs: a grid level in typed arrays with a dense
// (i, j) lookup, and a row tile with its rows grouped by cell. Columns are found by name.
const ID_RE = /^[0-9a-f]{16}$/;

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
    this.maxCount = max;
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
