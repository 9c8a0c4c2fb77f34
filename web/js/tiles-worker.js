// Work over whole row tiles, off the main thread, so the map stays responsive while a million
// rows are read: the row pass of caption search, and the rows of a selected region as CSV.
// The page checks every URL (inside the export folder) before sending it here.
import { toCsv } from './csv.js';

const PARALLEL_TILES = 2;
const CSV_COLUMNS = ['id', 'x', 'y', 'caption', 'url', 'domain', 'category', 'cluster'];

const text = (v) => (v === null || v === undefined ? '' : String(v));

// Read the tiles two at a time; `each(tile)` runs on every parsed tile, `progress` after each.
async function forTiles(urls, each, progress) {
  let next = 0;
  const work = async () => {
    while (next < urls.length) {
      const url = urls[next++];
      let error = null;
      try {
        const response = await fetch(url);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const tile = await response.json();
        const col = Object.fromEntries(CSV_COLUMNS.map((name) => [name, tile.columns.indexOf(name)]));
        each(tile.rows, col);
      } catch (err) {
        error = `${url}: ${err.message}`;
      }
      progress(error);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL_TILES }, work));
}

// Search: post back only where the matching rows are.
async function search({ query, urls }) {
  let xs = [];
  let ys = [];
  await forTiles(urls, (rows, col) => {
    for (const row of rows) {
      if (text(row[col.caption]).toLowerCase().includes(query) && Number.isFinite(row[col.x]) && Number.isFinite(row[col.y])) {
        xs.push(row[col.x]);
        ys.push(row[col.y]);
      }
    }
  }, (error) => {
    self.postMessage({ x: Float64Array.from(xs), y: Float64Array.from(ys), error });
    xs = [];
    ys = [];
  });
}

// Region: the rows inside the box that pass the filters, as one CSV text.
async function region({ urls, box, filters }) {
  const out = [];
  let done = 0;
  await forTiles(urls, (rows, col) => {
    for (const row of rows) {
      const x = row[col.x];
      const y = row[col.y];
      if (!(x >= box.x0 && x <= box.x1 && y >= box.y0 && y <= box.y1)) continue;
      const cluster = Number.isInteger(row[col.cluster]) ? row[col.cluster] : -1;
      if (filters.cluster !== null && cluster !== filters.cluster) continue;
      if (filters.category !== null && text(row[col.category]) !== filters.category) continue;
      out.push(CSV_COLUMNS.map((name) => (col[name] < 0 ? '' : row[col[name]])));
    }
  }, (error) => { done += 1; self.postMessage({ progress: done, error }); });
  self.postMessage({ csv: toCsv(CSV_COLUMNS, out), rows: out.length });
}

self.onmessage = async (event) => {
  const job = event.data;
  if (job.task === 'search') await search(job);
  else if (job.task === 'region') await region(job);
  self.postMessage({ done: true });
};
