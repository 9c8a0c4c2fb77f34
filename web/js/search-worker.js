// The row pass of caption search, off the main thread: fetch each row tile, parse it, and post
// back only where the matching rows are. Reading a million captions never stalls the map.
// The page checks every URL (inside the export folder) before sending it here.
const PARALLEL_TILES = 2;

function matches(tile, query) {
  const c = tile.columns.indexOf('caption');
  const x = tile.columns.indexOf('x');
  const y = tile.columns.indexOf('y');
  const xs = [];
  const ys = [];
  if (c < 0 || x < 0 || y < 0) return { xs, ys };
  for (const row of tile.rows) {
    const caption = row[c] === null || row[c] === undefined ? '' : String(row[c]);
    if (caption.toLowerCase().includes(query) && Number.isFinite(row[x]) && Number.isFinite(row[y])) {
      xs.push(row[x]);
      ys.push(row[y]);
    }
  }
  return { xs, ys };
}

self.onmessage = async (event) => {
  const { query, urls } = event.data;
  let next = 0;
  const work = async () => {
    while (next < urls.length) {
      const url = urls[next++];
      try {
        const response = await fetch(url);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const { xs, ys } = matches(await response.json(), query);
        self.postMessage({ x: Float64Array.from(xs), y: Float64Array.from(ys) });
      } catch (err) {
        self.postMessage({ x: new Float64Array(0), y: new Float64Array(0), error: `${url}: ${err.message}` });
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL_TILES }, work));
  self.postMessage({ done: true });
};
