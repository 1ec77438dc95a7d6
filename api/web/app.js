/* app.js - the svdslice page: upload, list, live rank-k scrubbing, quality,
 * spectrum, display window, backend timing, state in the address. */
import { decodeGrayPng } from './png.js';
import { Views, windowedCanvas } from './view.js';
import { drawSpectrum, drawHistogram, drawCompare, paintColourBar, residuals, fmt } from './charts.js';

const $ = (id) => document.getElementById(id);
const KEY_STORE = 'svdslice.apiKey';
const REST_MS = 120;          // the slider still this long: fetch the quality at k
const HASH_MS = 250;          // the address follows this long after the last change
const LOADING_MS = 300;       // a wait this long says "loading" on the image
const CACHE_BYTES = 96 << 20; // decoded reconstructions kept for scrubbing back and forth
const THUMB_PX = 96;

const state = {
  info: null,          // GET /slices/{id} of the chosen slice
  orig: null,          // its decoded original (raw values, min, max)
  backends: [],
  thumbs: new Map(),   // id -> blob URL of the windowed list thumbnail
  thumbQueue: Promise.resolve(),
  compared: null,      // last backend comparison {rows, k}, redrawn on resize
  selectSeq: 0,
  ctrl: null,          // AbortController of the chosen slice's requests
  win: null,           // last valid display window {c, w}
  diffInit: false,     // the fixed difference scale is set from the first k shown
  spectrum: null, hist: null, target: null,
  status: '',          // what the toast is about: 'list', 'gone', 'other'
};

/* Live scrubbing: one request in flight at a time; the slider's k is what is
 * wanted, whatever was asked before; neighbours of k are prefetched while idle. */
const live = {
  k: 1, dir: 1, lastMove: 0,
  busy: null,          // the request in flight {kind, k, backend}
  shown: null,         // the cache entry on screen
  cache: new Map(),    // "k|backend" -> {key, k, backend, url, raw, ran, timing, rtt}, oldest first
  cacheBytes: 0,
  quality: new Map(),  // "k|backend" -> /quality JSON
  failed: null,        // {key, k, error}: the image for k failed; no retry until the next move
  qualityFailed: null, // key whose quality failed
  noPrefetch: false,
  restTimer: 0, loadingTimer: 0, hashTimer: 0,
};

// ---------------------------------------------------------------- HTTP

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ''; }

/* fetch() with the Bearer key; a non-2xx answer becomes an ApiError carrying the
 * API's {"error": {code, message}}. Images come through here too, because an
 * <img src> cannot send the Authorization header. */
async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const key = apiKey();
  if (key) headers.set('Authorization', 'Bearer ' + key);
  const res = await fetch(path, { ...opts, headers });
  if (!res.ok) {
    let code = 'http_' + res.status, message = res.statusText || 'request failed';
    try {
      const body = await res.json();
      if (body && body.error) ({ code, message } = body.error);
    } catch (_) { /* not JSON: keep the status line */ }
    throw new ApiError(res.status, code, message);
  }
  return res;
}

function errorText(e) {
  if (e instanceof ApiError) return `${e.message} (${e.status} ${e.code})`;
  if (e instanceof TypeError) return 'the server did not answer (network error)';
  return String(e && e.message || e);
}

const isAbort = (e) => e && e.name === 'AbortError';
const isGone = (e) => e instanceof ApiError && e.status === 404;

/* The toast: fixed at the bottom of the window, so it is seen wherever the page
 * is scrolled. kind says what it is about, so a later success clears only its own. */
function toast(text, kind = 'other') {
  $('status-text').textContent = text || '';
  $('status').hidden = !text;
  state.status = text ? kind : '';
}

function clearToast(...kinds) { if (kinds.includes(state.status)) toast(''); }

function reportError(e, kind = 'other') {
  if (isAbort(e)) return;
  let text = errorText(e);
  if (e instanceof ApiError && e.status === 401) text += ' — enter the API key at the top of the page.';
  toast(text, kind);
}

/* Server-Timing: "kernel;dur=0.05, encode;dur=0.3" -> {kernel: 0.05, encode: 0.3} */
function serverTiming(res) {
  const out = {};
  for (const part of (res.headers.get('Server-Timing') || '').split(',')) {
    const [name, ...params] = part.trim().split(';');
    if (!name) continue;
    for (const p of params) {
      const m = /^\s*dur=([0-9.eE+-]+)/.exec(p);
      if (m) out[name.trim()] = parseFloat(m[1]);
    }
  }
  return out;
}

// ---------------------------------------------------------------- numbers people read

function fmtBytes(n) {
  if (n < 1024) return `${n} bytes`;
  const [v, u] = n < 1024 * 1024 ? [n / 1024, 'KiB'] : [n / 1024 / 1024, 'MiB'];
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${u}`;
}

/* "7.4× larger" / "3.1× smaller": a ratio nobody has to invert in their head. */
function sizeVs(stored, original) {
  const x = stored / original;
  if (!(x > 0) || !Number.isFinite(x)) return '';
  if (Math.abs(x - 1) < 0.05) return 'about the same size';
  const f = x >= 1 ? x : 1 / x;
  return `${f >= 10 ? f.toFixed(0) : f.toFixed(1)}× ${x >= 1 ? 'larger' : 'smaller'}`;
}

function unitName() { return state.info && state.info.bit_depth === 16 ? '16-bit units' : 'gray levels'; }

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
}

// ---------------------------------------------------------------- display window

/* Presets: 'type' the whole 0..2^bits-1 scale, 'full' the original's min..max,
 * 'tissue' the 1st..99th percentile of its nonzero pixels (air and padding are
 * 0, and would otherwise pull the window down and wash the tissue out). */
function presetWindow(raw, preset) {
  let lo = raw.min, hi = raw.max;
  if (preset === 'type') { lo = 0; hi = raw.depth === 16 ? 65535 : 255; }
  if (preset === 'tissue') {
    const counts = new Uint32Array(raw.depth === 16 ? 65536 : 256);
    let n = 0;
    for (const v of raw.data) if (v > 0) { counts[v]++; n++; }
    if (n) {
      const at = (p) => { const want = Math.max(1, Math.ceil(p * n)); let c = 0; for (let v = 0; v < counts.length; v++) if ((c += counts[v]) >= want) return v; return raw.max; };
      lo = at(0.01); hi = at(0.99);
    }
  }
  if (hi <= lo) hi = lo + 1;
  return { c: (lo + hi) / 2, w: hi - lo };
}

function defaultPreset(raw) { return raw.depth === 16 ? 'tissue' : 'type'; }

/* A window from the fields, or the reason it is not one. */
function windowFromFields() {
  const cs = $('win-center').value.trim(), ws = $('win-width').value.trim();
  const c = Number(cs), w = Number(ws);
  const bad = [];
  if (cs === '' || !Number.isFinite(c)) bad.push('the center needs a number');
  if (ws === '' || !Number.isFinite(w)) bad.push('the width needs a number');
  else if (!(w > 0)) bad.push('the width must be above 0');
  return bad.length ? { error: bad.join('; ') } : { c, w };
}

function winText(win) { return `center ${fmt(win.c)}, width ${fmt(win.w)}`; }

/* Shows the images through window (c, w): original and reconstruction are both
 * windowed here from raw values, as API.md's formula says. */
function applyWindow(c, w, { fields = true } = {}) {
  state.win = { c, w };
  if (fields) {
    $('win-center').value = String(c);
    $('win-width').value = String(w);
  }
  for (const id of ['win-center', 'win-width']) $(id).removeAttribute('aria-invalid');
  $('win-msg').textContent = '';
  $('win-range').textContent = `= ${fmt(c - w / 2)} (black) to ${fmt(c + w / 2)} (white)`;
  if (state.orig) for (const b of document.querySelectorAll('#window-panel [data-preset]')) {
    const p = presetWindow(state.orig, b.dataset.preset);
    b.setAttribute('aria-pressed', String(p.c === c && p.w === w));
  }
  views.setWindow(c, w);
  if (state.hist) state.hist.setWindow(c, w);
  updateDownloads();
  scheduleHash();
}

function onWindowField() {
  const got = windowFromFields();
  if (got.error) {
    // Keep showing the last valid window and say so, next to the fields.
    for (const id of ['win-center', 'win-width']) $(id).setAttribute('aria-invalid', 'true');
    $('win-msg').textContent = `${got.error}: keeping ${winText(state.win)}.`;
    return;
  }
  applyWindow(got.c, got.w, { fields: false });
}

// ---------------------------------------------------------------- the views

const views = new Views({
  vps: [...document.querySelectorAll('#images .vp')],
  original: $('cv-original'), recon: $('cv-recon'), diff: $('cv-diff'), images: $('images'),
}, {
  onWindow(c, w) { applyWindow(c, w); },
  onReadout(r) {
    const el = $('readout');
    if (!r) { el.textContent = ''; el.removeAttribute('data-x'); return; }
    const d = r.recon === null ? '' : ` · difference ${r.recon - r.orig > 0 ? '+' : ''}${r.recon - r.orig}`;
    el.textContent = `x ${r.x}, y ${r.y}: original ${r.orig}` +
      (r.recon === null ? '' : ` · rank ${r.k}: ${r.recon}`) + `${d} (${unitName()})`;
    Object.assign(el.dataset, { x: r.x, y: r.y, orig: r.orig, recon: r.recon ?? '', k: r.k });
  },
  onZoom(text) { $('zoom-level').textContent = `zoom ${text}`; },
  onFlick(on) {
    $('flick').setAttribute('aria-pressed', String(on));
    $('fig-recon').dataset.flicked = on ? '1' : '';
    $('recon-caption').innerHTML = on ? '<strong>Original</strong> (flicked: F or the button to go back)'
      : `Rank <span id="recon-k">${live.shown ? live.shown.k : '–'}</span> reconstruction`;
  },
});

function updateDiffLabels() {
  const max = views.diffMax, unit = unitName();
  const clipped = views.diffTrueMax > max;
  $('diff-mid').textContent = fmt(max / 2, 3);
  $('diff-top').textContent = `${clipped ? '≥ ' : ''}${max}`;
  $('diff-scale').textContent = `${unit}; largest at k = ${views.reconK}: ${views.diffTrueMax}` +
    (clipped ? ' (brighter pixels are clipped)' : '');
  $('diff-unit').textContent = unit;
  if (views.diffLocked) $('diff-max').value = String(max);
  else $('diff-max').value = String(views.diffMax);
}

function onDiffControl() {
  const locked = $('diff-lock').checked;
  const v = Number($('diff-max').value);
  if (locked && !(Number.isInteger(v) && v >= 1)) {
    $('diff-max').setAttribute('aria-invalid', 'true');
    $('diff-msg').classList.remove('muted');
    $('diff-msg').textContent = `The scale needs a whole number ≥ 1: keeping ${views.diffMax}.`;
    return;
  }
  $('diff-max').removeAttribute('aria-invalid');
  $('diff-msg').textContent = locked ? '' : 'Rescaled to the largest difference at each k.';
  $('diff-msg').classList.toggle('muted', !locked);
  views.setDiffScale(locked ? v : 0, locked);
  updateDiffLabels();
}

// ---------------------------------------------------------------- backends

async function loadBackends() {
  try {
    state.backends = (await (await api('/backends')).json()).backends || [];
  } catch (e) {
    reportError(e);
    return;
  }
  const sel = $('backend'), list = $('backend-list');
  const chosen = sel.value;
  sel.replaceChildren(new Option('auto (fastest available)', 'auto'));
  list.replaceChildren();
  for (const b of state.backends) {
    const opt = new Option(b.available ? b.name : `${b.name} (unavailable)`, b.name);
    opt.disabled = !b.available;
    if (b.reason) opt.title = b.reason;
    sel.add(opt);
    const li = document.createElement('li');
    li.dataset.backend = b.name;
    li.className = b.available ? 'ok' : 'off';
    const name = document.createElement('strong');
    name.textContent = b.name;
    const desc = document.createElement('span');
    desc.textContent = ` ${b.device} · ${b.description || ''}`;
    li.append(name, desc);
    if (!b.available) {
      const why = document.createElement('span');
      why.className = 'reason';
      why.textContent = ` — unavailable: ${b.reason || 'no reason given'}`;
      li.append(why);
    }
    list.append(li);
  }
  if (usableBackend(chosen)) sel.value = chosen;
}

function usableBackend(name) {
  return [...$('backend').options].some((o) => o.value === name && !o.disabled);
}

// ---------------------------------------------------------------- slice list

/* Thumbnails are the original through its default window (a 12-bit slice in a
 * 16-bit PNG would be nearly black as is), scaled to THUMB_PX. */
async function thumbnail(id) {
  let url = state.thumbs.get(id);
  if (url) return url;
  const res = await api(`/slices/${encodeURIComponent(id)}/original`).catch((e) => {
    if (e && e.code === 'original_not_kept') return api(`/reconstruct?id=${encodeURIComponent(id)}`); // its stored rank
    throw e;
  });
  const raw = await decodeGrayPng(await res.arrayBuffer());
  const win = presetWindow(raw, defaultPreset(raw));
  let cv = windowedCanvas(raw, win.c, win.w);
  const s = Math.min(1, THUMB_PX / Math.max(raw.width, raw.height));
  if (s < 1) {
    const small = document.createElement('canvas');
    small.width = Math.max(1, Math.round(raw.width * s));
    small.height = Math.max(1, Math.round(raw.height * s));
    const ctx = small.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(cv, 0, 0, small.width, small.height);
    cv = small;
  }
  const blob = await new Promise((resolve) => cv.toBlob(resolve, 'image/png'));
  url = URL.createObjectURL(blob);
  state.thumbs.set(id, url);
  return url;
}

async function loadList() {
  let slices;
  try {
    slices = (await (await api('/slices')).json()).slices || [];
  } catch (e) {
    reportError(e, 'list');
    return;
  }
  clearToast('list');
  const ul = $('slice-list');
  ul.replaceChildren();
  const alive = new Set(slices.map((s) => s.id));
  for (const [id, url] of state.thumbs)
    if (!alive.has(id)) { URL.revokeObjectURL(url); state.thumbs.delete(id); }
  for (const s of slices) {
    const li = document.createElement('li');
    li.dataset.id = s.id;
    if (state.info && state.info.id === s.id) li.classList.add('current');
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'pick';
    pick.setAttribute('aria-label', `Show ${s.name}`);
    const img = document.createElement('img');
    img.alt = '';
    const text = document.createElement('span');
    text.innerHTML = '<strong></strong><small></small>';
    text.firstChild.textContent = s.name;
    text.lastChild.textContent = `${s.width}×${s.height}, ${s.bit_depth}-bit, rank ${s.rank}`;
    pick.append(img, text);
    pick.addEventListener('click', () => select(s.id));
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'del small';
    del.textContent = '✕';
    del.setAttribute('aria-label', `Delete ${s.name}`);
    del.addEventListener('click', () => remove(s));
    li.append(pick, del);
    ul.append(li);
    // One at a time: each decodes a whole original.
    state.thumbQueue = state.thumbQueue.then(() => thumbnail(s.id)).then((url) => { img.src = url; }, () => {});
  }
  $('list-empty').hidden = slices.length > 0;
  if (state.info && !alive.has(state.info.id)) {
    toast(`"${state.info.name}" is no longer on the server (deleted elsewhere).`, 'gone');
    clearView();
  }
}

/* The slice answered 404: deleted since the list was drawn. */
async function sliceGone(id, name) {
  toast(`"${name || id}" is no longer on the server (deleted elsewhere); the list is refreshed.`, 'gone');
  if (state.info && state.info.id === id) clearView();
  await loadList();
}

async function remove(s) {
  if (!confirm(`Delete slice "${s.name}"?`)) return;
  try {
    await api(`/slices/${encodeURIComponent(s.id)}`, { method: 'DELETE' });
  } catch (e) {
    if (!isGone(e)) { reportError(e); return; }
  }
  if (state.info && state.info.id === s.id) clearView();
  await loadList();
}

// ---------------------------------------------------------------- upload

async function upload(files) {
  const msg = $('upload-msg');
  for (const file of files) {
    msg.className = 'msg';
    msg.textContent = `Uploading ${file.name}…`;
    const form = new FormData();
    form.append('file', file, file.name);
    const name = $('upload-name').value.trim();
    const q = name ? `?name=${encodeURIComponent(name)}` : '';
    try {
      const res = await api('/slices' + q, { method: 'POST', body: form });
      const info = await res.json();
      msg.textContent = `${res.status === 201 ? 'Stored' : 'Already stored'}: ${info.name} ` +
        `(${info.width}×${info.height}, ${info.bit_depth}-bit, rank ${info.rank})`;
      await loadList();
      await select(info.id);
    } catch (e) {
      msg.className = 'msg error';
      msg.textContent = `${file.name}: ${errorText(e)}`;
    }
  }
}

// ---------------------------------------------------------------- the chosen slice

function resetLive() {
  clearTimeout(live.restTimer);
  clearTimeout(live.loadingTimer);
  Object.assign(live, { busy: null, shown: null, cache: new Map(), cacheBytes: 0, quality: new Map(),
                        failed: null, qualityFailed: null, noPrefetch: false });
}

function clearView() {
  if (state.ctrl) state.ctrl.abort();
  resetLive();
  state.info = null;
  state.orig = null;
  $('viewer').hidden = true;
  $('intro').hidden = false;
  document.body.classList.remove('has-slice');
  for (const li of $('slice-list').children) li.classList.remove('current');
  writeHash();
}

function energyAt(sv, k) {
  let tot = 0, part = 0;
  sv.forEach((s, i) => { tot += s * s; if (i < k) part += s * s; });
  return tot > 0 ? part / tot : 1;
}

/* Shows slice id; want = {k, backend, win} from the address, else defaults. */
async function select(id, want = {}) {
  if (state.ctrl) state.ctrl.abort();
  const ctrl = new AbortController();
  state.ctrl = ctrl;
  const seq = ++state.selectSeq; // a later click wins over a slower earlier one
  let info, raw;
  try {
    const base = `/slices/${encodeURIComponent(id)}`;
    info = await (await api(base, { signal: ctrl.signal })).json();
    const src = info.original_kept === false ? `/reconstruct?id=${encodeURIComponent(id)}` : base + '/original';
    raw = await decodeGrayPng(await (await api(src, { signal: ctrl.signal })).arrayBuffer());
  } catch (e) {
    if (isAbort(e) || seq !== state.selectSeq) return;
    if (isGone(e)) await sliceGone(id);
    else reportError(e);
    return;
  }
  if (seq !== state.selectSeq) return;
  clearToast('gone');
  resetLive();
  // Nothing shown is of this slice yet.
  setIdle(false);
  delete $('cv-recon').dataset.k;
  delete $('quality').dataset.k;
  state.info = info;
  state.orig = raw;
  state.diffInit = false;
  for (const li of $('slice-list').children) li.classList.toggle('current', li.dataset.id === id);
  document.body.classList.add('has-slice');
  $('intro').hidden = true;
  $('viewer').hidden = false;
  $('slice-title').textContent = info.name;
  $('slice-meta').textContent = `${info.width}×${info.height}, ${info.bit_depth}-bit, rank ${info.rank}`;
  // What the store holds beside what was sent (docs/COMPRESSION.md), each with its unit.
  const up = info.upload_bytes;
  $('slice-sizes').innerHTML =
    `stored <strong>${fmtBytes(info.stored_bytes)}</strong> (${info.stored_bytes} bytes) · ` +
    (up ? `upload <strong>${fmtBytes(up)}</strong> (${up} bytes): the store holds <strong>${sizeVs(info.stored_bytes, up)}</strong> than the upload · `
        : 'upload size not known · ') +
    (info.original_kept === false ? `original not kept (rank ${info.rank}, quantised factors) · ` : 'original kept losslessly · ') +
    `raw pixels ${fmtBytes(info.original_bytes)}`;
  $('slice-sizes').dataset.stored = String(info.stored_bytes);
  const base = `/slices/${encodeURIComponent(id)}`, stem = info.name.replace(/\.png$/i, '');
  $('dl-original').href = base + '/original';
  $('dl-original').download = `${stem}.png`;
  $('dl-factors').href = base + '/factors';
  $('dl-factors').download = `${stem}.svd`;

  views.setOriginal(raw);
  state.hist = drawHistogram($('histogram'), raw);
  $('win-type').textContent = raw.depth === 16 ? '0–65535' : '0–255';
  $('win-type').title = `the whole ${raw.depth}-bit scale`;
  const win = want.win && want.win.w > 0 ? want.win : presetWindow(raw, defaultPreset(raw));
  applyWindow(win.c, win.w);
  $('win-msg').textContent = '';

  // Default k: the smallest rank that keeps 99.9 % of the energy.
  const sv = info.singular_values || [];
  let k = info.rank;
  for (let i = 1; i <= info.rank; i++) if (energyAt(sv, i) >= 0.999) { k = i; break; }
  $('k-msg').textContent = '';
  k = kFromAddress(want.k, k);
  if (want.backend && usableBackend(want.backend)) $('backend').value = want.backend;
  for (const el of [$('k-range'), $('k-number')]) { el.max = String(info.rank); el.value = String(k); }
  $('k-max').textContent = String(info.rank);
  $('compare-chart').toggleAttribute('hidden', true); // SVG elements have no .hidden property
  $('compare-table').hidden = true;
  $('compare-msg').textContent = '';
  $('target-measured').textContent = '';
  state.compared = null;
  live.k = k;
  drawCharts();
  setK(k);
}

function currentK() { return live.k; }

/* k asked for by the address, if it is one; else fallback, and say so. */
function kFromAddress(asked, fallback) {
  if (asked === undefined) return fallback;
  const k = Number(asked), rank = state.info.rank;
  if (Number.isInteger(k) && k >= 1 && k <= rank) return k;
  $('k-msg').textContent = `k = ${asked} from the address is not a whole number in 1..${rank}: showing k = ${fallback}.`;
  return fallback;
}

function reconstructUrl(k, backend, win) {
  const p = new URLSearchParams({ id: state.info.id, k: String(k), backend });
  if (win) {
    p.set('window-center', String(win.c));
    p.set('window-width', String(win.w));
  }
  return '/reconstruct?' + p.toString();
}

/* k from the slider, the field, the buttons, the spectrum or the address. */
function setK(k, { from = '' } = {}) {
  if (!state.info) return;
  k = Math.min(state.info.rank, Math.max(1, k));
  if (k !== live.k) live.dir = k > live.k ? 1 : -1;
  live.k = k;
  live.lastMove = performance.now();
  live.failed = null;
  live.qualityFailed = null;
  live.noPrefetch = false;
  if (from !== 'range') $('k-range').value = String(k);
  if (from !== 'number') $('k-number').value = String(k);
  if (state.spectrum) state.spectrum.setK(k);
  updateDownloads();
  updateReconState();
  markQuality();
  scheduleHash();
  pump();
}

// ---------------------------------------------------------------- the request loop

const keyOf = (k, backend) => `${k}|${backend}`;
const backendNow = () => $('backend').value;

function setIdle(idle) {
  if (idle) $('viewer').dataset.idle = '1';
  else delete $('viewer').dataset.idle;
}

/* Starts the next request if none is in flight: the image at the slider's k,
 * then (once the slider rests) its quality, then neighbouring k. */
function pump() {
  const info = state.info;
  if (!info || live.busy) return;
  const backend = backendNow(), k = live.k, want = keyOf(k, backend);
  if (!live.shown || live.shown.key !== want) {
    const hit = live.cache.get(want);
    if (hit) show(hit);
    else if (live.failed && live.failed.key === want) { setIdle(true); return; }
    else { fetchRecon(k, backend, true); return; }
  }
  // While the slider moves, only the image at its k: a prefetch would be stale by
  // the time it came back, and would delay the next image.
  const rest = REST_MS - (performance.now() - live.lastMove);
  if (rest > 0) {
    clearTimeout(live.restTimer);
    live.restTimer = setTimeout(pump, rest);
    setIdle(false);
    return;
  }
  if (!live.quality.has(want) && live.qualityFailed !== want) { fetchQuality(k, backend); return; }
  if (!live.noPrefetch)
    for (const n of [k + live.dir, k - live.dir, k + 2 * live.dir])
      if (n >= 1 && n <= info.rank && !live.cache.has(keyOf(n, backend))) { fetchRecon(n, backend, false); return; }
  setIdle(true);
}

function remember(entry) {
  const old = live.cache.get(entry.key);
  if (old) { live.cache.delete(entry.key); live.cacheBytes -= old.raw.data.byteLength; }
  live.cache.set(entry.key, entry);
  live.cacheBytes += entry.raw.data.byteLength;
  for (const [key, e] of live.cache) {
    if (live.cacheBytes <= CACHE_BYTES) break;
    if (e === live.shown || e === entry) continue;
    live.cache.delete(key);
    live.cacheBytes -= e.raw.data.byteLength;
  }
}

/* display: the image the slider asked for (shown on arrival even if the slider
 * has moved on: it is the closest there is); otherwise a prefetch. */
async function fetchRecon(k, backend, display) {
  const info = state.info, ctrl = state.ctrl, url = reconstructUrl(k, backend);
  const job = { kind: display ? 'recon' : 'prefetch', k, backend };
  live.busy = job;
  setIdle(false);
  try {
    const t0 = performance.now();
    const res = await api(url, { signal: ctrl.signal });
    const buf = await res.arrayBuffer();
    const rtt = performance.now() - t0;
    const raw = await decodeGrayPng(buf);
    if (state.info !== info) return;
    const entry = { key: keyOf(k, backend), k, backend, url, raw, rtt, prefetched: !display,
                    ran: res.headers.get('X-Backend') || '?', timing: serverTiming(res) };
    remember(entry);
    if (display) show(entry);
  } catch (e) {
    if (isAbort(e) || state.info !== info) return;
    if (isGone(e)) { live.busy = null; sliceGone(info.id, info.name); return; }
    if (display) live.failed = { key: keyOf(k, backend), k, error: e };
    else live.noPrefetch = true;
    updateReconState();
  } finally {
    if (live.busy === job) { live.busy = null; pump(); }
  }
}

async function fetchQuality(k, backend) {
  const info = state.info, ctrl = state.ctrl, key = keyOf(k, backend);
  const job = { kind: 'quality', k, backend };
  live.busy = job;
  setIdle(false);
  try {
    const p = new URLSearchParams({ id: info.id, k: String(k), backend });
    const q = await (await api('/quality?' + p, { signal: ctrl.signal })).json();
    if (state.info !== info) return;
    live.quality.set(key, q);
    markQuality();
  } catch (e) {
    if (isAbort(e) || state.info !== info) return;
    if (isGone(e)) { live.busy = null; sliceGone(info.id, info.name); return; }
    live.qualityFailed = key;
    $('quality-state').textContent = `(k = ${k} failed: ${errorText(e)})`;
  } finally {
    if (live.busy === job) { live.busy = null; pump(); }
  }
}

/* Puts a reconstruction on screen: image, difference, timing, marks for tests. */
function show(entry) {
  views.setRecon(entry.raw, entry.k);
  live.shown = entry;
  if (!state.diffInit) {
    // The difference scale starts at the largest difference of the first k shown,
    // and stays there (if kept fixed) as k moves.
    state.diffInit = true;
    $('diff-max').value = String(Math.max(1, views.diffTrueMax));
    onDiffControl();
  }
  updateDiffLabels();
  const cv = $('cv-recon');
  cv.dataset.k = String(entry.k);
  cv.dataset.backend = entry.ran;
  cv.dataset.src = entry.url;
  if (!views.flick) $('recon-caption').innerHTML = `Rank <span id="recon-k">${entry.k}</span> reconstruction`;
  const st = entry.timing, parts = [`backend <strong>${esc(entry.ran)}</strong>`];
  for (const name of ['kernel', 'encode', 'queue'])
    if (name in st) parts.push(`${name} ${fmt(st[name], 3)} ms`);
  parts.push(`round trip ${fmt(entry.rtt, 3)} ms${entry.prefetched ? ' (prefetched)' : ''}`);
  $('timing').innerHTML = parts.join(' · ');
  updateReconState();
  markQuality();
}

/* Says on the image when it is not the slider's k: loading (after a moment),
 * or failed, with what is shown instead and a retry. */
function updateReconState() {
  const fig = $('fig-recon'), el = $('recon-state'), s = live.shown;
  const want = keyOf(live.k, backendNow());
  clearTimeout(live.loadingTimer);
  const showing = s ? `The image still shows k = ${s.k}${s.backend !== backendNow() ? ` (${s.backend})` : ''}.` : 'No image yet.';
  if (live.failed && live.failed.key === want) {
    fig.dataset.state = 'failed';
    el.hidden = false;
    el.innerHTML = `k = ${live.k} failed: ${esc(errorText(live.failed.error))}. ${showing} <button type="button" class="small" id="recon-retry">Retry</button>`;
    $('recon-retry').onclick = () => { live.failed = null; updateReconState(); pump(); };
  } else if (!s || s.key !== want) {
    fig.dataset.state = 'pending';
    live.loadingTimer = setTimeout(() => {
      if (fig.dataset.state !== 'pending') return;
      el.hidden = false;
      el.textContent = `Loading k = ${live.k}… ${showing}`;
    }, LOADING_MS);
  } else {
    fig.dataset.state = 'current';
    el.hidden = true;
  }
}

/* The quality panel shows /quality at the slider's k, or says it is for another k. */
function markQuality() {
  const q = live.quality.get(keyOf(live.k, backendNow()));
  if (q) showQuality(q);
  const shownK = $('quality').dataset.k;
  const stale = shownK !== String(live.k);
  $('quality-panel').classList.toggle('stale', stale && shownK !== undefined);
  if (!stale) $('quality-state').textContent = '';
  else if (live.qualityFailed !== keyOf(live.k, backendNow())) $('quality-state').textContent = shownK ? `(updating for k = ${live.k}…)` : '';
}

function psnrOverRange(mse) {
  const o = state.orig, r = o.max - o.min;
  if (mse === 0) return Infinity;
  return r > 0 ? 10 * Math.log10(r * r / mse) : null;
}

function showQuality(q) {
  const info = state.info, o = state.orig, unit = unitName();
  const full = 2 ** info.bit_depth - 1, range = o.max - o.min;
  // psnr (over 2^bits - 1) and psnr_data_range (over max - min) as /quality answers them
  const vals = { ...q, psnr_range: q.mse === 0 ? Infinity : q.psnr_data_range };
  const noOrig = q.original_kept === false;
  const dB = (v, nullText) => (v === null || v === undefined ? nullText : `${fmt(v)} dB`);
  for (const dd of $('quality').querySelectorAll('dd[data-metric]')) {
    const name = dd.dataset.metric, v = vals[name];
    dd.dataset.value = v === null || v === undefined ? 'null' : String(v);
    let text;
    switch (name) {
      // psnr is null for a perfect match: infinite.
      case 'psnr': case 'psnr_range':
        text = noOrig ? '— (original not kept)' : v === Infinity ? '∞ dB (identical)' : dB(v, '∞ dB (identical)'); break;
      case 'mse': text = noOrig ? '— (original not kept)' : `${fmt(v)} (${unit})²`; break;
      case 'ssim': text = noOrig ? '— (original not kept)' : v === null ? '— (needs both sides ≥ 7 px)' : fmt(v); break;
      // null when exactly one image has no nonzero pixel.
      case 'hausdorff': text = noOrig ? '— (original not kept)' : v === null ? '∞ (one image is all zero)' : `${fmt(v)} px`; break;
      case 'energy': text = `${(v * 100).toFixed(4)} %`; break;
      case 'float32_bytes_at_k':
        text = `${fmtBytes(v)} (${v} bytes), ${sizeVs(v, info.original_bytes)} than the raw pixels`; break;
      default: text = fmt(v);
    }
    dd.textContent = text;
  }
  $('why-psnr-range').textContent = `10·log₁₀(R²/MSE) with R = ${range} = max − min of the original (${o.min} to ${o.max}); higher is better`;
  const gap = range > 0 ? 20 * Math.log10(full / range) : 0;
  $('why-psnr').textContent = `the same with R = ${full}, the whole ${info.bit_depth}-bit scale (as /quality reports it)` +
    (gap >= 0.05 ? `: ${fmt(gap, 3)} dB above the data-range figure for the same error` : '');
  const dl = $('quality');
  dl.dataset.k = String(q.k);
  dl.dataset.backend = q.backend || '';
  $('quality-k').textContent = String(q.k);
}

// ---------------------------------------------------------------- charts

function drawCharts() {
  if (!state.info) return;
  updateTarget(false);
  state.spectrum = drawSpectrum($('spectrum'), { sv: state.info.singular_values || [], rank: state.info.rank, target: state.target },
    (k) => setK(k));
  state.spectrum.setK(live.k);
  state.hist = drawHistogram($('histogram'), state.orig);
  if (state.win) state.hist.setWindow(state.win.c, state.win.w);
  if (state.compared && !$('compare-chart').hasAttribute('hidden'))
    drawCompare($('compare-chart'), $('compare-table').querySelector('tbody'), state.compared.rows, state.compared.k);
}

/* The k a PSNR (over the data range) needs, estimated from the singular values:
 * the squared error of rank k before rounding is the energy left out, so
 * MSE(k) ≈ Σ_{i>k} s_i² / (width·height). Rounding and clipping are ignored. */
function updateTarget(redraw = true) {
  const info = state.info, o = state.orig, P = Number($('target-psnr').value);
  state.target = null;
  $('target-est').textContent = '';
  if (!info) return;
  if (!($('target-psnr').value.trim() !== '' && P > 0 && P < 200)) {
    $('target-msg').textContent = 'Give a PSNR between 0 and 200 dB.';
    return;
  }
  $('target-msg').textContent = 'Estimate: the energy left out per pixel, before rounding; "measure" asks /quality (a binary search over k, assuming PSNR rises with k).';
  const sv = info.singular_values || [], res = residuals(sv), range = o.max - o.min;
  let tot = 0;
  for (const s of sv) tot += s * s;
  const mseNeeded = range * range / 10 ** (P / 10), resNeeded = tot > 0 ? mseNeeded * info.width * info.height / tot : 0;
  let kEst = 0;
  for (let k = 1; k <= info.rank; k++) if (res[k] <= resNeeded) { kEst = k; break; }
  $('target-est').textContent = kEst ? `k ≈ ${kEst} (estimate from the singular values)` : `not reached up to k = ${info.rank} (estimate)`;
  $('target-est').dataset.k = String(kEst);
  state.target = { residual: resNeeded, k: kEst, label: `${fmt(P)} dB (estimate)` };
  if (redraw) {
    state.spectrum = drawSpectrum($('spectrum'), { sv, rank: info.rank, target: state.target }, (k) => setK(k));
    state.spectrum.setK(live.k);
  }
}

async function measureTarget(ev) {
  ev.preventDefault();
  const info = state.info, P = Number($('target-psnr').value), out = $('target-measured');
  if (!info || !(P > 0)) return;
  if (info.original_kept === false) { // /quality has no original to measure against
    out.textContent = 'not measurable: the original was not kept';
    return;
  }
  const backend = backendNow(), signal = state.ctrl.signal, btn = $('target-measure');
  const psnrAt = async (k) => {
    out.textContent = `measuring k = ${k}…`;
    const key = keyOf(k, backend);
    let q = live.quality.get(key);
    if (!q) {
      const p = new URLSearchParams({ id: info.id, k: String(k), backend });
      q = await (await api('/quality?' + p, { signal })).json();
      live.quality.set(key, q);
    }
    return psnrOverRange(q.mse);
  };
  btn.disabled = true;
  try {
    let lo = 1, hi = info.rank;
    const top = await psnrAt(hi);
    if (!(top >= P)) { out.textContent = `measured: not reached; k = ${hi} gives ${fmt(top, 4)} dB`; delete out.dataset.k; return; }
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((await psnrAt(mid)) >= P) hi = mid; else lo = mid + 1;
    }
    const got = await psnrAt(lo);
    out.dataset.k = String(lo);
    out.innerHTML = `measured: <button type="button" class="small linkish" id="target-go">k = ${lo}</button> gives ${esc(fmt(got, 4))} dB`;
    $('target-go').onclick = () => setK(lo);
  } catch (e) {
    if (state.info === info && !isAbort(e)) out.textContent = `measuring failed: ${errorText(e)}`;
  } finally {
    btn.disabled = false;
  }
}

function median(a) {
  const s = [...a].sort((x, y) => x - y), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/* Times every available backend at the current k: 5 uncached requests each
 * (Cache-Control: no-cache makes the server recompute), median of the server's
 * kernel time and of the client's round trip. */
async function compareBackends() {
  if (!state.info) return;
  const btn = $('compare'), msg = $('compare-msg'), k = currentK();
  btn.disabled = true;
  const rows = [];
  try {
    for (const b of state.backends.filter((x) => x.available)) {
      const kern = [], rtt = [];
      for (let i = 0; i < 5; i++) {
        msg.textContent = `timing ${b.name} ${i + 1}/5…`;
        const t0 = performance.now();
        const res = await api(reconstructUrl(k, b.name), { cache: 'no-store', headers: { 'Cache-Control': 'no-cache' } });
        await res.arrayBuffer();
        rtt.push(performance.now() - t0);
        const st = serverTiming(res);
        if ('kernel' in st) kern.push(st.kernel);
      }
      rows.push({ name: b.name, kernel: kern.length ? median(kern) : NaN, rtt: median(rtt) });
    }
    msg.textContent = `k = ${k}, ${rows.length} backends, 5 requests each`;
  } catch (e) {
    msg.textContent = errorText(e);
  } finally {
    btn.disabled = false;
  }
  state.compared = { rows, k };
  if (rows.length) {
    drawCompare($('compare-chart'), $('compare-table').querySelector('tbody'), rows, k);
    $('compare-table').hidden = false;
  }
}

// ---------------------------------------------------------------- address and downloads

/* #id=&k=&backend=&window-center=&window-width= : a link to exactly this view. */
function writeHash() {
  clearTimeout(live.hashTimer);
  let hash = '';
  if (state.info) {
    const p = new URLSearchParams({ id: state.info.id, k: String(live.k), backend: backendNow() });
    if (state.win) { p.set('window-center', String(state.win.c)); p.set('window-width', String(state.win.w)); }
    hash = '#' + p.toString();
  }
  if (hash !== location.hash) history.replaceState(null, '', location.pathname + location.search + hash);
}

/* Debounced: browsers throttle history updates made at drag rate. */
function scheduleHash() {
  clearTimeout(live.hashTimer);
  live.hashTimer = setTimeout(writeHash, HASH_MS);
}

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (!p.get('id')) return null;
  const want = { id: p.get('id') };
  if (p.has('k')) want.k = p.get('k');
  if (p.has('backend')) want.backend = p.get('backend');
  const c = Number(p.get('window-center')), w = Number(p.get('window-width'));
  if (p.has('window-center') && p.has('window-width') && Number.isFinite(c) && w > 0) want.win = { c, w };
  return want;
}

async function followHash() {
  const want = readHash();
  if (!want) return;
  if (state.info && state.info.id === want.id) {
    if (want.backend && usableBackend(want.backend)) $('backend').value = want.backend;
    if (want.win) applyWindow(want.win.c, want.win.w);
    setK(kFromAddress(want.k, live.k));
    return;
  }
  await select(want.id, want);
}

function updateDownloads() {
  if (!state.info) return;
  const stem = state.info.name.replace(/\.png$/i, ''), k = live.k, backend = backendNow();
  $('dl-recon').href = reconstructUrl(k, backend);
  $('dl-recon').download = `${stem}-k${k}.png`;
  $('dl-recon').textContent = `rank-${k} reconstruction (PNG, ${state.info.bit_depth}-bit)`;
  if (state.win) {
    $('dl-shown').href = reconstructUrl(k, backend, state.win);
    $('dl-shown').download = `${stem}-k${k}-window.png`;
  }
}

/* With a key set, a plain link cannot authenticate: fetch the file and save the blob. */
async function download(ev) {
  const a = ev.currentTarget;
  if (!apiKey() || a.dataset.blob) return;
  ev.preventDefault();
  try {
    const blob = await (await api(a.getAttribute('href'))).blob();
    const tmp = document.createElement('a');
    tmp.href = URL.createObjectURL(blob);
    tmp.download = a.download;
    tmp.dataset.blob = '1';
    document.body.append(tmp);
    tmp.click();
    tmp.remove();
    setTimeout(() => URL.revokeObjectURL(tmp.href), 10000);
  } catch (e) {
    reportError(e);
  }
}

// ---------------------------------------------------------------- wiring

/* The number field: out-of-range k is clamped and said so next to the field;
 * something that is not a whole number keeps the current k and says so. */
function onKField(final) {
  const field = $('k-number'), msg = $('k-msg'), s = field.value.trim(), rank = state.info ? state.info.rank : 1;
  const v = Number(s);
  field.removeAttribute('aria-invalid');
  if (s === '' || !Number.isInteger(v)) {
    field.setAttribute('aria-invalid', 'true');
    msg.textContent = `k is a whole number from 1 to ${rank}: still k = ${live.k}.`;
    if (final) { field.value = String(live.k); field.removeAttribute('aria-invalid'); }
    return;
  }
  if (v < 1 || v > rank) {
    const k = v < 1 ? 1 : rank;
    msg.textContent = v > rank ? `${v} is above the rank ${rank}: showing k = ${rank}.` : `k starts at 1: showing k = 1.`;
    setK(k, { from: 'number' });
    if (final) field.value = String(k);
    return;
  }
  msg.textContent = '';
  setK(v, { from: 'number' });
}

function init() {
  paintColourBar($('diff-bar'));
  $('apikey').value = apiKey();
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('apikey').value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    for (const url of state.thumbs.values()) URL.revokeObjectURL(url);
    state.thumbs.clear();
    loadList().then(() => (state.info ? select(state.info.id, { k: live.k, backend: backendNow(), win: state.win }) : followHash()));
  });
  $('apikey-clear').addEventListener('click', () => {
    sessionStorage.removeItem(KEY_STORE);
    $('apikey').value = '';
  });
  $('status-close').addEventListener('click', () => toast(''));
  $('file').addEventListener('change', (ev) => {
    const files = [...ev.target.files];
    ev.target.value = '';
    upload(files);
  });
  const drop = $('drop');
  for (const t of ['dragenter', 'dragover']) drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add('over'); });
  for (const t of ['dragleave', 'drop']) drop.addEventListener(t, () => drop.classList.remove('over'));
  drop.addEventListener('drop', (ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    if (ev.dataTransfer && ev.dataTransfer.files.length) upload([...ev.dataTransfer.files]);
  });
  // A file dropped anywhere else would make the browser navigate away to it: upload it instead.
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => {
    ev.preventDefault();
    if (ev.dataTransfer && ev.dataTransfer.files.length) upload([...ev.dataTransfer.files]);
  });
  $('refresh').addEventListener('click', loadList);
  // Slices deleted elsewhere drop out of the list when the tab comes back.
  document.addEventListener('visibilitychange', () => { if (!document.hidden) loadList(); });
  window.addEventListener('focus', () => loadList());

  $('k-range').addEventListener('input', () => { $('k-msg').textContent = ''; setK(parseInt($('k-range').value, 10), { from: 'range' }); });
  $('k-number').addEventListener('input', () => onKField(false));
  $('k-number').addEventListener('change', () => onKField(true));
  $('k-dec').addEventListener('click', () => setK(live.k - 1));
  $('k-inc').addEventListener('click', () => setK(live.k + 1));
  $('backend').addEventListener('change', () => {
    live.failed = null;
    live.qualityFailed = null;
    live.noPrefetch = false;
    updateDownloads();
    updateReconState();
    markQuality();
    scheduleHash();
    pump();
  });
  for (const id of ['win-center', 'win-width']) {
    $(id).addEventListener('input', onWindowField);
    // Leaving a field that holds no valid window puts the one in use back.
    $(id).addEventListener('change', () => { if (windowFromFields().error && state.win) { applyWindow(state.win.c, state.win.w); $('win-msg').textContent = `Restored ${winText(state.win)}.`; } });
  }
  for (const b of document.querySelectorAll('#window-panel [data-preset]'))
    b.addEventListener('click', () => { if (state.orig) { const w = presetWindow(state.orig, b.dataset.preset); applyWindow(w.c, w.w); } });
  $('diff-lock').addEventListener('change', onDiffControl);
  $('diff-max').addEventListener('input', () => { $('diff-lock').checked = true; onDiffControl(); });
  $('diff-fit').addEventListener('click', () => { $('diff-max').value = String(Math.max(1, views.diffTrueMax)); $('diff-lock').checked = true; onDiffControl(); });
  $('zoom-in').addEventListener('click', () => views.zoomStep(1));
  $('zoom-out').addEventListener('click', () => views.zoomStep(-1));
  $('zoom-fit').addEventListener('click', () => views.zoomTo(0, undefined, undefined, true));
  $('zoom-1').addEventListener('click', () => views.zoomTo(1));
  $('flick').addEventListener('click', () => {
    if ($('images').dataset.view !== 'recon') chooseView('recon');
    views.setFlick(!views.flick);
  });
  for (const r of document.querySelectorAll('input[name="view"]')) r.addEventListener('change', () => chooseView(r.value));
  $('target-psnr').addEventListener('input', () => updateTarget());
  $('target-form').addEventListener('submit', measureTarget);
  $('compare').addEventListener('click', compareBackends);
  for (const id of ['dl-recon', 'dl-shown', 'dl-original', 'dl-factors']) $(id).addEventListener('click', download);
  window.addEventListener('hashchange', followHash);
  // Charts are drawn at their laid-out width: redraw them when it changes.
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawCharts, 100);
  });
  Promise.all([loadBackends(), loadList()]).then(followHash);
}

/* Narrow screens show one image at a time, chosen here. */
function chooseView(v) {
  $('images').dataset.view = v;
  for (const r of document.querySelectorAll('input[name="view"]')) r.checked = r.value === v;
  views.layout();
}

init();
