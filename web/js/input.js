// Mouse, touch and keyboard: drag pans, wheel and pinch zoom, shift-drag selects a region,
// a click without movement opens the gallery.
const CLICK_SLOP_PX = 4;
const WHEEL_SPEED = 0.0015;

export function attachInput(viewer) {
  const canvas = viewer.canvas;
  const pointers = new Map();
  let drag = null;
  let pinch = null;
  const local = (e) => {
    const r = canvas.getBoundingClientRect();
    return [e.clientX - r.left, e.clientY - r.top];
  };
  const spread = () => {
    const [a, b] = [...pointers.values()];
    return [Math.hypot(a[0] - b[0], a[1] - b[1]), (a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
  };

  canvas.addEventListener('pointerdown', (e) => {
    canvas.setPointerCapture(e.pointerId);
    const p = local(e);
    pointers.set(e.pointerId, p);
    if (pointers.size === 2) {
      pinch = spread();
      drag = null;
      viewer.selection = null;
    } else if (e.shiftKey) {
      viewer.selection = { x0: p[0], y0: p[1], x1: p[0], y1: p[1] };
    } else {
      drag = { x: p[0], y: p[1], sx: p[0], sy: p[1], moved: false };
    }
    viewer.panels.hideTooltip();
  });

  canvas.addEventListener('pointermove', (e) => {
    const p = local(e);
    if (pointers.has(e.pointerId)) pointers.set(e.pointerId, p);
    if (pinch && pointers.size === 2) {
      const [dist, mx, my] = spread();
      viewer.camera.zoomAt(mx, my, dist / Math.max(1, pinch[0]));
      viewer.camera.pan(mx - pinch[1], my - pinch[2]);
      pinch = [dist, mx, my];
      viewer.requestDraw();
    } else if (viewer.selection) {
      viewer.selection.x1 = p[0];
      viewer.selection.y1 = p[1];
      viewer.requestDraw();
    } else if (drag) {
      viewer.camera.pan(p[0] - drag.x, p[1] - drag.y);
      drag.x = p[0];
      drag.y = p[1];
      if (Math.hypot(p[0] - drag.sx, p[1] - drag.sy) > CLICK_SLOP_PX) drag.moved = true;
      viewer.requestDraw();
    } else {
      viewer.hoverAt(p[0], p[1], e.clientX, e.clientY);
    }
  });

  const end = (e) => {
    pointers.delete(e.pointerId);
    if (pinch) {
      if (pointers.size < 2) pinch = null;
      return;
    }
    const sel = viewer.selection;
    if (sel) {
      viewer.selection = null;
      viewer.requestDraw();
      if (e.type === 'pointerup' && Math.abs(sel.x1 - sel.x0) > CLICK_SLOP_PX && Math.abs(sel.y1 - sel.y0) > CLICK_SLOP_PX) {
        viewer.exportRegion(sel);
      }
    } else if (drag && !drag.moved && e.type === 'pointerup') {
      viewer.clickAt(drag.sx, drag.sy);
    }
    drag = null;
  };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointercancel', end);
  canvas.addEventListener('pointerleave', () => { if (!drag) viewer.hoverAt(null); });

  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const [x, y] = local(e);
    const lines = e.deltaMode === 1 ? 33 : 1;  // Firefox reports lines
    viewer.camera.zoomAt(x, y, Math.exp(-e.deltaY * lines * WHEEL_SPEED));
    viewer.hoverAt(null);
    viewer.requestDraw();
  }, { passive: false });

  window.addEventListener('keydown', (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    const cam = viewer.camera;
    const step = { '+': 1.5, '=': 1.5, '-': 1 / 1.5 }[e.key];
    if (step) cam.zoomAt(cam.width / 2, cam.height / 2, step);
    else if (e.key === '0') viewer.fit();
    else if (e.key === 'Escape') viewer.panels.closeGallery();
    else return;
    viewer.requestDraw();
  });
}
