// The map is the unit square (x right, y down). The camera maps it to CSS pixels:
// screen = world * scale + offset.
const FIT_MARGIN = 0.92;
const MAX_CELL_PX = 2048;
const MIN_EXTENT = 1 / 64;  // the first view shows at least this much of the map across  // at most one finest cell this wide: thumbnails stay sharp, zoom stays bounded

export class Camera {
  constructor() {
    this.width = 1;
    this.height = 1;
    this.scale = 1;
    this.ox = 0;
    this.oy = 0;
    this.minScale = 0.5;
    this.maxScale = 256 * MAX_CELL_PX;
  }

  // Show the box [x0, y0, x1, y1] of the map (what the rows occupy) as large as the canvas allows,
  // with a margin, centred. A box narrower than MIN_EXTENT (one image, a tight cluster) is widened.
  fit(width, height, finestLevel, extent = [0, 0, 1, 1]) {
    this.width = width;
    this.height = height;
    const [x0, y0, x1, y1] = extent;
    const w = Math.max(x1 - x0, MIN_EXTENT);
    const h = Math.max(y1 - y0, MIN_EXTENT);
    this.maxScale = finestLevel * MAX_CELL_PX;
    this.scale = Math.min(this.maxScale, Math.max(1, Math.min(width / w, height / h) * FIT_MARGIN));
    this.ox = width / 2 - ((x0 + x1) / 2) * this.scale;
    this.oy = height / 2 - ((y0 + y1) / 2) * this.scale;
    // zooming out goes as far as half the whole map, whatever the data's box
    this.minScale = Math.min(this.scale, Math.min(width, height) * FIT_MARGIN) * 0.5;
  }

  resize(width, height) {
    // Keep the centre of the view where it was.
    const [cx, cy] = this.toWorld(this.width / 2, this.height / 2);
    this.width = width;
    this.height = height;
    this.ox = width / 2 - cx * this.scale;
    this.oy = height / 2 - cy * this.scale;
  }

  toScreen(x, y) { return [x * this.scale + this.ox, y * this.scale + this.oy]; }

  toWorld(px, py) { return [(px - this.ox) / this.scale, (py - this.oy) / this.scale]; }

  zoomAt(px, py, factor) {
    const next = Math.min(this.maxScale, Math.max(this.minScale, this.scale * factor));
    const [wx, wy] = this.toWorld(px, py);
    this.scale = next;
    this.ox = px - wx * next;
    this.oy = py - wy * next;
  }

  pan(dx, dy) {
    this.ox += dx;
    this.oy += dy;
  }

  // The visible part of the map, clamped to the unit square.
  view() {
    const [x0, y0] = this.toWorld(0, 0);
    const [x1, y1] = this.toWorld(this.width, this.height);
    return { x0: Math.max(0, x0), y0: Math.max(0, y0), x1: Math.min(1, x1), y1: Math.min(1, y1) };
  }
}
