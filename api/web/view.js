/* view.js - the three synchronised image views (original, reconstruction,
 * |difference|): display window, difference heat map, zoom and pan, window/level
 * by dragging, the value under the cursor, and flicking between original and
 * reconstruction. Everything is computed from the raw values (png.js). */

/* Zoom steps in CSS pixels per image pixel; integers are pixel-exact. */
export const ZOOMS = [0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
const WHEEL_STEP = 100; // accumulated wheel delta per zoom step: one mouse notch (Chrome: 100), or a pinch's worth

/* Heat map colours (black - purple - red - orange - pale yellow, like "inferno"),
 * 256 entries: index round(d / max * 255), clipped at 255. */
const HEAT_STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
export const HEAT = Array.from({ length: 256 }, (_, i) => {
  const x = i / 255 * (HEAT_STOPS.length - 1), j = Math.min(HEAT_STOPS.length - 2, Math.floor(x)), f = x - j;
  return HEAT_STOPS[j].map((v, c) => Math.round(v + (HEAT_STOPS[j + 1][c] - v) * f));
});

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
function rgba(r, g, b) {
  return LITTLE_ENDIAN ? (0xff000000 | (b << 16) | (g << 8) | r) >>> 0 : ((r << 24) | (g << 16) | (b << 8) | 0xff) >>> 0;
}
const HEAT32 = Uint32Array.from(HEAT, ([r, g, b]) => rgba(r, g, b));

/* API.md's window, evaluated as the server does (engine/kernels.c):
 * clamp(round((v - C + W/2) / W * 255), 0, 255), halves rounded up. */
export function windowed(v, c, w) {
  const x = (v - c + w / 2) / w * 255;
  if (!(x > 0)) return 0;
  if (x >= 255) return 255;
  const t = Math.floor(x);
  return t + (x - t >= 0.5 ? 1 : 0);
}

/* Packed gray pixels for every possible value at this window. */
function grayLut(depth, c, w) {
  const n = depth === 16 ? 65536 : 256, lut = new Uint32Array(n);
  for (let v = 0; v < n; v++) { const g = windowed(v, c, w); lut[v] = rgba(g, g, g); }
  return lut;
}

function paint(cv, w, h, fill) {
  if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
  // CPU-backed: putImageData is cheap and getImageData reads back exactly what was put.
  const ctx = cv.getContext('2d', { willReadFrequently: true });
  const img = ctx.createImageData(w, h);
  fill(new Uint32Array(img.data.buffer));
  ctx.putImageData(img, 0, 0);
}

export class Views {
  /* els: {vps: [3 viewport divs], original, recon, diff (canvases), images (grid)};
   * hooks: onWindow(c, w, final), onReadout(info|null), onZoom(text), onFlick(on). */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.orig = null;     // {width, height, depth, data, min, max}
    this.recon = null;    // same, of the shown reconstruction
    this.reconK = 0;
    this.win = null;      // {c, w}
    this.lut = null;
    this.diff = null;     // Uint32Array |recon - orig|
    this.diffTrueMax = 0; // max of diff at the shown k
    this.diffMax = 1;     // the scale in use
    this.diffLocked = false;
    this.flick = false;
    this.z = 1; this.tx = 0; this.ty = 0; this.fit = true;
    this.drag = null;     // {mode: 'wl'|'pan', ...}
    this.touches = new Map();
    this.space = false;
    this.hover = null;    // last pointer position {vp, clientX, clientY}
    this.wheelAcc = 0;
    this.raf = 0;
    this.pending = new Set();
    for (const vp of els.vps) this.attach(vp);
    new ResizeObserver(() => this.layout()).observe(els.images);
    window.addEventListener('keydown', (ev) => this.spaceKey(ev, true));
    window.addEventListener('keyup', (ev) => this.spaceKey(ev, false));
    window.addEventListener('blur', () => { this.space = false; });
  }

  // ------------------------------------------------------------ data

  /* keep: another slice of the same volume, same size: keep zoom, pan and flick. */
  setOriginal(raw, keep = false) {
    const same = keep && this.orig && this.orig.width === raw.width && this.orig.height === raw.height;
    this.orig = raw;
    if (same) { this.lut = this.win ? grayLut(raw.depth, this.win.c, this.win.w) : null; this.paintNow('original'); return; }
    this.recon = null;
    this.diff = null;
    this.flick = false;
    for (const vp of this.els.vps) vp.style.aspectRatio = `${raw.width} / ${raw.height}`;
    for (const cv of [this.els.recon, this.els.diff]) { cv.width = raw.width; cv.height = raw.height; }
    this.fit = true;
    this.layout();
    this.hooks.onFlick(false);
  }

  setWindow(c, w) {
    this.win = { c, w };
    this.lut = this.orig ? grayLut(this.orig.depth, c, w) : null;
    this.schedule('original', 'recon');
  }

  /* A new reconstruction (raw values at k): repaints it and the difference map. */
  setRecon(raw, k) {
    const o = this.orig;
    if (!o || raw.width !== o.width || raw.height !== o.height) throw new Error('reconstruction size differs from the original');
    this.recon = raw;
    this.reconK = k;
    const n = o.data.length, d = this.diff && this.diff.length === n ? this.diff : new Uint32Array(n);
    let max = 0;
    for (let i = 0; i < n; i++) {
      const v = Math.abs(raw.data[i] - o.data[i]);
      d[i] = v;
      if (v > max) max = v;
    }
    this.diff = d;
    this.diffTrueMax = max;
    if (!this.diffLocked) this.diffMax = Math.max(1, max);
    this.paintNow('recon');
    this.paintNow('diff');
    this.refreshReadout();
  }

  setDiffScale(max, locked) {
    this.diffLocked = locked;
    this.diffMax = Math.max(1, locked ? max : this.diffTrueMax);
    this.schedule('diff');
  }

  setFlick(on) {
    this.flick = on;
    this.paintNow('recon');
    this.hooks.onFlick(on);
  }

  // ------------------------------------------------------------ painting

  schedule(...what) {
    for (const w of what) this.pending.add(w);
    if (!this.raf) this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      const todo = [...this.pending];
      this.pending.clear();
      for (const w of todo) this.paintNow(w);
    });
  }

  paintNow(what) {
    this.pending.delete(what);
    const o = this.orig;
    if (!o || !this.lut) return;
    const lut = this.lut;
    if (what === 'original') {
      paint(this.els.original, o.width, o.height, (px) => { const s = o.data; for (let i = 0; i < s.length; i++) px[i] = lut[s[i]]; });
    } else if (what === 'recon') {
      const src = this.flick ? o : this.recon;
      if (!src) return;
      paint(this.els.recon, o.width, o.height, (px) => { const s = src.data; for (let i = 0; i < s.length; i++) px[i] = lut[s[i]]; });
    } else if (what === 'diff' && this.diff) {
      const d = this.diff, scale = 255 / this.diffMax;
      paint(this.els.diff, o.width, o.height, (px) => {
        for (let i = 0; i < d.length; i++) { const j = Math.round(d[i] * scale); px[i] = HEAT32[j > 255 ? 255 : j]; }
      });
      this.els.diff.dataset.max = String(this.diffMax);
    }
  }

  // ------------------------------------------------------------ zoom and pan

  /* The size of a visible viewport (all three have the same; on a phone only one shows). */
  vpSize() {
    const vp = this.els.vps.find((v) => v.clientWidth > 0) || this.els.vps[0];
    return [vp.clientWidth, vp.clientHeight];
  }

  fitZoom() {
    const [W, H] = this.vpSize(), o = this.orig;
    return o && W && H ? Math.min(W / o.width, H / o.height) : 1;
  }

  layout() {
    if (!this.orig) return;
    if (this.fit) this.z = this.fitZoom();
    this.place();
  }

  /* Keeps the image centred where it is smaller than the viewport, covering it
   * elsewhere. Each canvas starts on a whole device pixel of the page (viewports
   * may sit at fractions of one), so integer zooms are pixel-exact. */
  place() {
    const o = this.orig, [W, H] = this.vpSize(), z = this.z, dpr = window.devicePixelRatio || 1;
    const iw = o.width * z, ih = o.height * z;
    this.tx = iw <= W ? (W - iw) / 2 : Math.min(0, Math.max(W - iw, this.tx));
    this.ty = ih <= H ? (H - ih) / 2 : Math.min(0, Math.max(H - ih, this.ty));
    for (const cv of [this.els.original, this.els.recon, this.els.diff]) {
      const r = cv.parentElement.getBoundingClientRect(), s = cv.style;
      const snap = (v, at) => Math.round((at + v) * dpr) / dpr - at;
      s.width = `${iw}px`; s.height = `${ih}px`;
      s.left = `${snap(this.tx, r.left)}px`; s.top = `${snap(this.ty, r.top)}px`;
    }
    this.els.images.dataset.zoom = this.fit ? 'fit' : String(z);
    this.hooks.onZoom(this.fit ? `fit (${z.toFixed(2)}×)` : `${z}×`, this.fit, z);
    this.refreshReadout();
  }

  /* Zoom to z keeping the image point under (px, py) (viewport coordinates) in place. */
  zoomTo(z, px, py, fit = false) {
    if (!this.orig) return;
    const [W, H] = this.vpSize();
    if (px === undefined) { px = W / 2; py = H / 2; }
    const old = this.z;
    this.fit = fit;
    this.z = fit ? this.fitZoom() : z;
    this.tx = px - (px - this.tx) * this.z / old;
    this.ty = py - (py - this.ty) * this.z / old;
    this.place();
  }

  /* The next zoom stop up or down; fitting is the 0 key and the fit button. */
  zoomStep(dir, px, py) {
    const cur = this.z, low = Math.min(this.fitZoom(), 1);
    const stops = ZOOMS.filter((z) => z >= low - 1e-9);
    const next = dir > 0 ? stops.find((z) => z > cur + 1e-9) : [...stops].reverse().find((z) => z < cur - 1e-9);
    if (next !== undefined) this.zoomTo(next, px, py);
  }

  panBy(dx, dy) {
    if (!this.orig) return;
    this.tx += dx;
    this.ty += dy;
    this.place();
  }

  // ------------------------------------------------------------ pointer and keys

  attach(vp) {
    vp.addEventListener('wheel', (ev) => {
      // Ctrl+wheel, and a trackpad pinch (which Chrome sends as ctrl+wheel), zoom;
      // the plain wheel scrolls a volume's slices, else keeps scrolling the page.
      if (!this.orig) return;
      if (!ev.ctrlKey) {
        if (!this.hooks.onSlice || !this.hooks.onSlice(0)) return;
        ev.preventDefault();
        // One slice per notch (100 in Chrome); a trackpad's small deltas add up to one.
        this.sliceAcc = (this.sliceAcc || 0) + (ev.deltaMode === 1 ? ev.deltaY * 40 : ev.deltaY);
        while (Math.abs(this.sliceAcc) >= WHEEL_STEP) {
          const dir = this.sliceAcc < 0 ? 1 : -1;
          this.sliceAcc += dir * WHEEL_STEP;
          this.hooks.onSlice(dir);
        }
        return;
      }
      ev.preventDefault();
      this.wheelAcc += ev.deltaMode === 1 ? ev.deltaY * 40 : ev.deltaY;
      const [px, py] = this.local(vp, ev);
      while (Math.abs(this.wheelAcc) >= WHEEL_STEP) {
        const dir = this.wheelAcc < 0 ? 1 : -1;
        this.wheelAcc += dir * WHEEL_STEP;
        this.zoomStep(dir, px, py);
      }
    }, { passive: false });
    vp.addEventListener('pointerdown', (ev) => this.down(vp, ev));
    vp.addEventListener('pointermove', (ev) => this.move(vp, ev));
    vp.addEventListener('pointerup', (ev) => this.up(vp, ev));
    vp.addEventListener('pointercancel', (ev) => this.up(vp, ev));
    vp.addEventListener('pointerleave', () => { if (!this.drag) { this.hover = null; this.hooks.onReadout(null); } });
    // No autoscroll on a middle click: the middle button pans.
    vp.addEventListener('mousedown', (ev) => { if (ev.button === 1) ev.preventDefault(); });
    vp.addEventListener('auxclick', (ev) => ev.preventDefault());
    vp.addEventListener('contextmenu', (ev) => { if (this.drag) ev.preventDefault(); });
    vp.addEventListener('keydown', (ev) => this.key(ev));
  }

  local(vp, ev) {
    const r = vp.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  down(vp, ev) {
    if (!this.orig) return;
    if (ev.pointerType === 'touch') {
      this.touches.set(ev.pointerId, this.local(vp, ev));
      if (this.touches.size === 2) this.drag = this.pinchStart();
      else if (this.touches.size === 1) this.drag = this.wlStart(ev);
      vp.setPointerCapture(ev.pointerId);
      return;
    }
    if (ev.button === 1 || (ev.button === 0 && this.space)) this.drag = { mode: 'pan', x: ev.clientX, y: ev.clientY, tx: this.tx, ty: this.ty };
    else if (ev.button === 0) this.drag = this.wlStart(ev);
    else return;
    ev.preventDefault();
    vp.focus({ preventScroll: true });
    vp.setPointerCapture(ev.pointerId);
    this.els.images.dataset.drag = this.drag.mode;
  }

  wlStart(ev) {
    const o = this.orig;
    // A drag across ~400 px sweeps the data's whole range.
    return { mode: 'wl', x: ev.clientX, y: ev.clientY, c: this.win.c, w: this.win.w, sens: Math.max(1, o.max - o.min) / 400 };
  }

  pinchStart() {
    const [a, b] = [...this.touches.values()];
    return { mode: 'pinch', dist: Math.hypot(a[0] - b[0], a[1] - b[1]) || 1, z: this.z, mid: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2], tx: this.tx, ty: this.ty };
  }

  move(vp, ev) {
    this.hover = { vp, clientX: ev.clientX, clientY: ev.clientY };
    const d = this.drag;
    if (d && d.mode === 'pan') {
      this.tx = d.tx + ev.clientX - d.x;
      this.ty = d.ty + ev.clientY - d.y;
      this.place();
    } else if (d && d.mode === 'wl') {
      // Right widens the window (less contrast), down raises the center (darker).
      const w = Math.max(1, Math.round(d.w + (ev.clientX - d.x) * d.sens));
      const c = Math.round(d.c + (ev.clientY - d.y) * d.sens);
      if (!this.win || w !== this.win.w || c !== this.win.c) this.hooks.onWindow(c, w, false);
    } else if (d && d.mode === 'pinch' && this.touches.has(ev.pointerId)) {
      this.touches.set(ev.pointerId, this.local(vp, ev));
      const [a, b] = [...this.touches.values()];
      const z = Math.min(ZOOMS.at(-1), Math.max(Math.min(this.fitZoom(), ZOOMS[0]), d.z * Math.hypot(a[0] - b[0], a[1] - b[1]) / d.dist));
      const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
      this.fit = false;
      this.z = z;
      this.tx = mid[0] - (d.mid[0] - d.tx) * z / d.z;
      this.ty = mid[1] - (d.mid[1] - d.ty) * z / d.z;
      this.place();
      return;
    }
    this.refreshReadout();
  }

  up(vp, ev) {
    if (ev.pointerType === 'touch') this.touches.delete(ev.pointerId);
    const d = this.drag;
    if (!d) return;
    if (d.mode === 'pinch' && this.touches.size) return; // until both fingers lift
    this.drag = null;
    delete this.els.images.dataset.drag;
    if (d.mode === 'wl' && this.win) this.hooks.onWindow(this.win.c, this.win.w, true);
  }

  /* Space held with the pointer over (or focus in) an image turns a left drag into a pan. */
  spaceKey(ev, isDown) {
    if (ev.key !== ' ') return;
    if (!isDown) { this.space = false; this.els.images.classList.remove('space'); return; }
    const a = document.activeElement;
    const mine = !a || a === document.body || this.els.vps.includes(a) || (a.type === 'range');
    if (!mine || !(this.hover || this.els.vps.includes(a))) return;
    ev.preventDefault(); // no page scroll
    this.space = true;
    this.els.images.classList.add('space');
  }

  key(ev) {
    if (!this.orig || ev.altKey || ev.metaKey || ev.ctrlKey) return;
    const step = ev.shiftKey ? 128 : 32;
    const acts = {
      '+': () => this.zoomStep(1), '=': () => this.zoomStep(1), '-': () => this.zoomStep(-1),
      '0': () => this.zoomTo(0, undefined, undefined, true), '1': () => this.zoomTo(1),
      ArrowLeft: () => this.panBy(step, 0), ArrowRight: () => this.panBy(-step, 0),
      ArrowUp: () => this.panBy(0, step), ArrowDown: () => this.panBy(0, -step),
      f: () => this.setFlick(!this.flick), F: () => this.setFlick(!this.flick),
    };
    // On a volume, up/down (without shift) go through the slices.
    if (!ev.shiftKey && (ev.key === 'ArrowUp' || ev.key === 'ArrowDown') && this.hooks.onSlice && this.hooks.onSlice(0)) {
      ev.preventDefault();
      this.hooks.onSlice(ev.key === 'ArrowUp' ? 1 : -1);
      return;
    }
    const act = acts[ev.key];
    if (!act) return;
    ev.preventDefault();
    act();
  }

  // ------------------------------------------------------------ value under the cursor

  refreshReadout() {
    const h = this.hover, o = this.orig;
    if (!h || !o) return;
    const r = h.vp.querySelector('canvas').getBoundingClientRect();
    const x = Math.floor((h.clientX - r.left) / this.z), y = Math.floor((h.clientY - r.top) / this.z);
    if (x < 0 || y < 0 || x >= o.width || y >= o.height) { this.hooks.onReadout(null); return; }
    const i = y * o.width + x;
    this.hooks.onReadout({ x, y, orig: o.data[i], recon: this.recon ? this.recon.data[i] : null, k: this.reconK });
  }
}

/* A canvas with raw values windowed (thumbnails). */
export function windowedCanvas(raw, c, w, cv = document.createElement('canvas')) {
  const lut = grayLut(raw.depth, c, w), s = raw.data;
  paint(cv, raw.width, raw.height, (px) => { for (let i = 0; i < s.length; i++) px[i] = lut[s[i]]; });
  return cv;
}
