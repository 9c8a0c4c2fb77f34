// The DOM around the map: tooltip, gallery, search and filter controls, status lines.
// Captions, domains and URLs come from the open web: they only ever reach the page through
// textContent, attribute properties and checked http(s) hrefs, never as HTML.
const GALLERY_PAGE = 120;

export const fmt = (n) => Number(n).toLocaleString('en-US');

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Only absolute http(s) URLs become links; anything else (javascript:, data:, relative) stays text.
export function safeHref(url) {
  try {
    const u = new URL(String(url));
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

export class Panels {
  constructor(viewer) {
    this.viewer = viewer;
    this.tooltip = document.getElementById('tooltip');
    this.gallery = document.getElementById('gallery');
    this.galleryTitle = document.getElementById('gallery-title');
    this.galleryStatus = document.getElementById('gallery-status');
    this.galleryItems = document.getElementById('gallery-items');
    this.status = document.getElementById('status');
    this.searchStatusEl = document.getElementById('search-status');
    this.errorEl = document.getElementById('error');
    this.galleryToken = 0;
    document.getElementById('gallery-close').addEventListener('click', () => this.closeGallery());
  }

  setTitle(title) {
    const text = String(title || 'City Identity Explorer');
    document.getElementById('title').textContent = text;
    document.title = text;
  }

  // what a reader must know about the cluster names, e.g. that random weights made them caption words only
  setLabelsNote(note) {
    const el = document.getElementById('labels-note');
    el.textContent = note ? String(note) : '';
    el.hidden = !note;
  }

  fillFilters(manifest, onChange) {
    const cluster = document.getElementById('cluster');
    const category = document.getElementById('category');
    for (const c of [...(manifest.clusters || [])].sort((a, b) => a.cluster - b.cluster)) {
      if (!Number.isInteger(c.cluster)) continue;
      cluster.append(el('option', { value: String(c.cluster), text: `${c.label ?? c.cluster} (${fmt(c.count || 0)})` }));
    }
    for (const name of manifest.categories || []) category.append(el('option', { value: String(name), text: String(name) }));
    const read = () => onChange({
      cluster: cluster.value === '' ? null : Number(cluster.value),
      category: category.value === '' ? null : category.value,
    });
    cluster.addEventListener('change', read);
    category.addEventListener('change', read);
  }

  // "Reset view" and the density-colour toggle with its legend.
  attachMapControls(onReset, onHeat) {
    document.getElementById('reset').addEventListener('click', onReset);
    const heat = document.getElementById('heat');
    heat.addEventListener('change', () => {
      document.getElementById('legend').hidden = !heat.checked;
      onHeat(heat.checked);
    });
  }

  legend(densest) {
    const text = `1 to ${fmt(densest)} images per cell`;
    const node = document.getElementById('legend-text');
    if (node.textContent !== text) node.textContent = text;
  }

  showTooltip(px, py, info) {
    const t = this.tooltip;
    t.replaceChildren(
      el('div', { class: 'caption', text: info.caption || '(no caption)' }),
      el('div', { class: 'meta', text: [info.domain, info.category].filter(Boolean).join(' · ') }),
      el('div', { class: 'count', text: `${fmt(info.count)} image${info.count === 1 ? '' : 's'} in this cell` }),
    );
    t.hidden = false;
    const box = t.getBoundingClientRect();
    const x = Math.min(px + 14, window.innerWidth - box.width - 8);
    const y = py + 16 + box.height > window.innerHeight ? py - box.height - 10 : py + 16;
    t.style.left = `${Math.max(4, x)}px`;
    t.style.top = `${Math.max(4, y)}px`;
  }

  hideTooltip() { this.tooltip.hidden = true; }

  galleryOpen() { return !this.gallery.hidden; }

  closeGallery() {
    this.galleryToken += 1;
    this.gallery.hidden = true;
    this.galleryItems.replaceChildren();
  }

  async openGallery(level, i, j, count) {
    const token = ++this.galleryToken;
    this.gallery.hidden = false;
    this.galleryTitle.textContent = `${fmt(count)} image${count === 1 ? '' : 's'} in this cell`;
    this.galleryStatus.textContent = 'Loading…';
    this.galleryItems.replaceChildren();
    const rows = await this.viewer.cellMembers(level, i, j);
    if (token !== this.galleryToken) return;
    const shown = rows.filter((row) => this.viewer.rowPassesFilters(row));
    const hidden = rows.length - shown.length;
    this.galleryStatus.textContent = hidden ? `${fmt(hidden)} hidden by the filters` : '';
    this.appendItems(shown, 0, token);
  }

  appendItems(rows, start, token) {
    const end = Math.min(rows.length, start + GALLERY_PAGE);
    for (let n = start; n < end; n++) this.galleryItems.append(this.item(rows[n]));
    if (end < rows.length) {
      const more = el('button', { class: 'more', type: 'button', text: `Show ${fmt(Math.min(GALLERY_PAGE, rows.length - end))} more of ${fmt(rows.length - end)}` });
      more.addEventListener('click', () => { more.remove(); if (token === this.galleryToken) this.appendItems(rows, end, token); });
      this.galleryItems.append(more);
    }
  }

  item(row) {
    const figure = el('figure', { class: 'item' });
    const src = this.viewer.store.thumbUrl(row.id);
    let media;
    if (src) {
      media = el('img', { class: 'thumb', loading: 'lazy', decoding: 'async' });
      media.alt = row.caption.slice(0, 200);
      media.addEventListener('error', () => media.replaceWith(el('div', { class: 'thumb missing', text: 'no thumbnail' })));
      media.src = src;
    } else {
      media = el('div', { class: 'thumb missing', text: 'no thumbnail' });
    }
    const href = safeHref(row.url);
    if (href) {
      const link = el('a', { href, target: '_blank', rel: 'noopener noreferrer', title: href });
      link.append(media);
      figure.append(link);
    } else {
      figure.append(media);
    }
    const caption = el('figcaption', { text: row.caption || '(no caption)' });
    const meta = el('div', { class: 'meta', text: [row.domain, row.category].filter(Boolean).join(' · ') });
    if (href) meta.append(' · ', el('a', { href, target: '_blank', rel: 'noopener noreferrer', text: 'source' }));
    else if (row.url) meta.append(' · ', el('span', { class: 'bad-url', text: 'source link withheld (not http/https)' }));
    figure.append(caption, meta);
    return figure;
  }

  searchStatus(search) {
    if (!search.active) { this.searchStatusEl.textContent = ''; return; }
    const progress = search.done ? 'all rows searched' : `searching rows: tile ${fmt(search.tilesDone)} of ${fmt(search.tilesTotal)}`;
    this.searchStatusEl.textContent = `${fmt(search.rowMatches)} matching rows · ${progress}`;
  }

  setStatus(text) { this.status.textContent = text; }

  notice(text) { document.getElementById('notice').textContent = text; }

  showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = false;
  }
}
