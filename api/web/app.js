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
  vol: null,           // the chosen volume: {info, axis, index, count} (state.info then describes its slices)
  fileWin: null,       // the file's own window (NIfTI cal_min/cal_max), in the PNG's units
};

/* Live scrubbing: one request in flight at a time; the slider's k is what is
 * wanted, whatever was asked before; neighbours of k are prefetched while idle. */
const live = {
  k: 1, dir: 1, lastMove: 0,
  idir: 1, slideMove: false, // the last move was a slice step (prefetch neighbouring slices first)
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

function unitName() {
  if (state.vol && state.vol.mapped) return '16-bit PNG units';
  return state.info && state.info.bit_depth === 16 ? '16-bit units' : 'gray levels';
}

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
}

// ---------------------------------------------------------------- display window

/* Presets: 'type' the whole 0..2^bits-1 scale, 'full' the original's min..max,
 * 'tissue' the 1st..99th percentile of its nonzero pixels (air and padding are
 * 0, and would otherwise pull the window down and wash the tissue out). */
function presetWindow(raw, preset) {
  if (preset === 'file') return state.fileWin || presetWindow(raw, 'full');
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

/* The window fields speak the file's values: for a volume value = a + b × PNG value
 * (state.vol.scale); the window kept (state.win, the address) is in PNG units. */
const fieldScale = () => (state.vol ? state.vol.scale : { a: 0, b: 1 });
const toField = (c, w) => { const { a, b } = fieldScale(); return b === 1 && a === 0 ? [c, w] : [+(a + b * c).toPrecision(7), +(b * w).toPrecision(7)]; };

/* A window from the fields, or the reason it is not one. */
function windowFromFields() {
  const cs = $('win-center').value.trim(), ws = $('win-width').value.trim();
  const { a, b } = fieldScale();
  const c = (Number(cs) - a) / b, w = Number(ws) / b;
  const bad = [];
  if (cs === '' || !Number.isFinite(c)) bad.push('the center needs a number');
  if (ws === '' || !Number.isFinite(w)) bad.push('the width needs a number');
  else if (!(w > 0)) bad.push('the width must be above 0');
  return bad.length ? { error: bad.join('; ') } : { c, w };
}

function winText(win) { const [c, w] = toField(win.c, win.w); return `center ${fmt(c)}, width ${fmt(w)}`; }

/* Shows the images through window (c, w): original and reconstruction are both
 * windowed here from raw values, as API.md's formula says. */
function applyWindow(c, w, { fields = true } = {}) {
  state.win = { c, w };
  const [fc, fw] = toField(c, w);
  if (fields) {
    $('win-center').value = String(fc);
    $('win-width').value = String(fw);
  }
  Object.assign($('window-panel').dataset, { c: String(c), w: String(w) });
  for (const id of ['win-center', 'win-width']) $(id).removeAttribute('aria-invalid');
  $('win-msg').textContent = '';
  $('win-range').textContent = `= ${fmt(fc - fw / 2)} (black) to ${fmt(fc + fw / 2)} (white)` + (state.vol ? ' in the file\'s values' : '');
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
    // A volume's values in the file's own units too, when the PNG maps them.
    if (state.vol && (state.vol.mapped || state.vol.scale.a !== 0 || state.vol.scale.b !== 1))
      el.textContent += ` = ${fmt(toData(r.orig), 5)}` + (r.recon === null ? '' : ` and ${fmt(toData(r.recon), 5)}`) + ' in the file\'s values';
    Object.assign(el.dataset, { x: r.x, y: r.y, orig: r.orig, recon: r.recon ?? '', k: r.k });
  },
  onZoom(text) { $('zoom-level').textContent = `zoom ${text}`; },
  // dir 0 asks whether slices scroll here (a volume is shown).
  onSlice(dir) { if (!state.vol) return false; if (dir) setIndex(state.vol.index + dir); return true; },
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
    (state.vol && state.vol.mapped ? ` (= ${fmt(views.diffTrueMax * state.vol.scale.b, 4)} in the file's values)` : '') +
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
  if (state.info && !state.vol && !alive.has(state.info.id)) {
    toast(`"${state.info.name}" is no longer on the server (deleted elsewhere).`, 'gone');
    clearView();
  }
}

/* The slice answered 404: deleted since the list was drawn. */
async function sliceGone(id, name) {
  if (state.vol && state.info && state.info.id === id) {
    toast(`volume "${name || id}" is no longer on the server (deleted elsewhere); the list is refreshed.`, 'gone');
    clearView();
    await loadVolumes();
    return;
  }
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

/* A NIfTI file, by its name: given to the PNG upload, it goes to POST /volumes. */
const isNifti = (file) => /\.nii(\.gz)?$/i.test(file.name);

async function upload(files) {
  const msg = $('upload-msg');
  for (const file of files) {
    if (isNifti(file)) {
      msg.className = 'msg';
      msg.textContent = `${file.name}: a NIfTI volume, uploaded as a volume (below)`;
      await uploadVolume(file);
      continue;
    }
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
  leaveVolume();
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
  leaveVolume();
  // Nothing shown is of this slice yet.
  setIdle(false);
  delete $('cv-recon').dataset.k;
  delete $('quality').dataset.k;
  state.info = info;
  state.orig = raw;
  state.diffInit = false;
  state.fileWin = null;
  $('win-file').disabled = true;
  $('win-file').title = 'PNG files carry no display window';
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
  // Without the original the left view is the stored rank: nothing to call original or compare with.
  const kept = info.original_kept !== false;
  document.body.classList.toggle('no-original', !kept);
  $('diff-none').textContent = kept ? '' : 'No difference map: the original pixels were not kept, ' +
    'so there is nothing to compare rank k with (full rank is the stored rank).';
  $('diff-none').hidden = kept;
  setOriginalCaption(kept);
  $('dl-original').href = kept ? base + '/original' : `/reconstruct?id=${encodeURIComponent(id)}`;
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

function reconstructUrl(k, backend, win, pos = posNow()) {
  if (state.vol) {
    const [axis, index] = pos.split(':');
    const p = new URLSearchParams({ k: String(k), axis, index, backend });
    if (win) { p.set('window-center', String(toData(win.c))); p.set('window-width', String(win.w * state.vol.scale.b)); }
    return `/volumes/${encodeURIComponent(state.info.id)}/reconstruct?${p}`;
  }
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
  live.slideMove = false;
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

/* A volume's slice is "axis:index"; a 2D slice has no position. */
const posNow = () => (state.vol ? `${state.vol.axis}:${state.vol.index}` : '');
const keyOf = (k, backend, pos = posNow()) => `${k}|${backend}|${pos}`;
const qualityKey = (k, backend) => `${k}|${backend}|`;
/* A volume's original slice is its reconstruction at full rank (the stored voxels, exactly). */
const origKey = (backend, pos = posNow()) => keyOf(state.info.rank, backend, pos);
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
    const hit = live.cache.get(want), okey = state.vol ? origKey(backend) : '';
    // A volume's slice needs its original too: fetched first, shown with the reconstruction.
    if (okey && !live.cache.has(okey)) {
      if (live.failed && live.failed.key === want) { setIdle(true); return; }
      fetchRecon(info.rank, backend, false, posNow(), want);
      return;
    }
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
  const qk = qualityKey(k, backend);
  if (!live.quality.has(qk) && live.qualityFailed !== qk) { fetchQuality(k, backend); return; }
  if (!live.noPrefetch) {
    const near = [[k + live.dir, posNow()], [k - live.dir, posNow()], [k + 2 * live.dir, posNow()]];
    if (state.vol) {
      // The next slices in the direction of the last step (original and rank k each),
      // before other k when the last move was a slice step.
      const v = state.vol, slices = [];
      for (const i of [v.index + live.idir, v.index - live.idir])
        if (i >= 0 && i < v.count) slices.push([info.rank, `${v.axis}:${i}`], [k, `${v.axis}:${i}`]);
      if (live.slideMove) near.unshift(...slices); else near.push(...slices);
    }
    for (const [n, pos] of near)
      if (n >= 1 && n <= info.rank && !live.cache.has(keyOf(n, backend, pos))) { fetchRecon(n, backend, false, pos); return; }
  }
  setIdle(true);
}

function remember(entry) {
  const old = live.cache.get(entry.key);
  if (old) { live.cache.delete(entry.key); live.cacheBytes -= old.raw.data.byteLength; }
  live.cache.set(entry.key, entry);
  live.cacheBytes += entry.raw.data.byteLength;
  for (const [key, e] of live.cache) {
    if (live.cacheBytes <= CACHE_BYTES) break;
    if (e === live.shown || e === entry || (state.vol && key === origKey(backendNow()))) continue;
    live.cache.delete(key);
    live.cacheBytes -= e.raw.data.byteLength;
  }
}

/* display: the image the slider asked for (shown on arrival even if the slider
 * has moved on: it is the closest there is); otherwise a prefetch. */
/* pos: a volume's slice; failKey: what fails if this does (the original of a
 * wanted volume slice). */
async function fetchRecon(k, backend, display, pos = posNow(), failKey = '') {
  const info = state.info, ctrl = state.ctrl, url = reconstructUrl(k, backend, null, pos);
  const job = { kind: display ? 'recon' : failKey ? 'original' : 'prefetch', k, backend, pos };
  live.busy = job;
  setIdle(false);
  try {
    const t0 = performance.now();
    const res = await api(url, { signal: ctrl.signal });
    const buf = await res.arrayBuffer();
    const rtt = performance.now() - t0;
    const raw = await decodeGrayPng(buf);
    if (state.info !== info) return;
    const entry = { key: keyOf(k, backend, pos), k, backend, pos, url, raw, rtt, prefetched: !display,
                    ran: res.headers.get('X-Backend') || '?', timing: serverTiming(res) };
    remember(entry);
    if (display) show(entry);
  } catch (e) {
    if (isAbort(e) || state.info !== info) return;
    if (isGone(e)) { live.busy = null; sliceGone(info.id, info.name); return; }
    if (failKey) live.failed = { key: failKey, k: live.k, error: e };
    else if (display) live.failed = { key: keyOf(k, backend, pos), k, error: e };
    else live.noPrefetch = true;
    updateReconState();
  } finally {
    if (live.busy === job) { live.busy = null; pump(); }
  }
}

async function fetchQuality(k, backend) {
  const info = state.info, ctrl = state.ctrl, key = qualityKey(k, backend);
  const job = { kind: 'quality', k, backend };
  live.busy = job;
  setIdle(false);
  try {
    const q = await (await api(qualityUrl(k, backend), { signal: ctrl.signal })).json();
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
  if (state.vol) {
    const o = live.cache.get(keyOf(state.info.rank, entry.backend, entry.pos));
    if (o && views.orig !== o.raw) {
      state.orig = o.raw;
      views.setOriginal(o.raw, true);
      if (!state.win) { const w = defaultVolumeWindow(o.raw); applyWindow(w.c, w.w); } else views.setWindow(state.win.c, state.win.w);
      state.hist = drawHistogram($('histogram'), o.raw);
      state.hist.setWindow(state.win.c, state.win.w);
    }
    const [axis, index] = entry.pos.split(':').map(Number);
    $('cv-original').dataset.pos = $('cv-recon').dataset.pos = entry.pos;
    $('cv-recon').dataset.axis = String(axis);
    $('cv-recon').dataset.index = String(index);
  }
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
  const q = live.quality.get(qualityKey(live.k, backendNow()));
  if (q) showQuality(q);
  const shownK = $('quality').dataset.k;
  const stale = shownK !== String(live.k);
  $('quality-panel').classList.toggle('stale', stale && shownK !== undefined);
  if (!stale) $('quality-state').textContent = '';
  else if (live.qualityFailed !== qualityKey(live.k, backendNow())) $('quality-state').textContent = shownK ? `(updating for k = ${live.k}…)` : '';
}

function psnrOverRange(mse) {
  const o = state.orig, r = (o.max - o.min) * (state.vol && state.vol.mapped ? state.vol.storedPerPng : 1);
  if (mse === 0) return Infinity;
  return r > 0 ? 10 * Math.log10(r * r / mse) : null;
}

function showQuality(q) {
  if (q.volume) q = volumeSliceQuality(q);
  const info = state.info, o = state.orig, unit = unitName();
  const full = 2 ** info.bit_depth - 1, range = o.max - o.min;
  // psnr (over 2^bits - 1) and psnr_data_range (over max - min) as /quality answers them;
  // a volume's slice has no psnr_data_range: computed here.
  const vals = { ...q, psnr_range: q.mse === null || q.mse === undefined ? null : q.mse === 0 ? Infinity
    : q.psnr_data_range !== undefined && q.psnr_data_range !== null ? q.psnr_data_range : psnrOverRange(q.mse) };
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
      // A volume's MSE is in its stored units (the server's, and the page's along other axes).
      case 'mse': text = noOrig ? '— (original not kept)' : v === null ? '– (waiting for the slice)' : `${fmt(v)} (${state.vol ? 'stored units' : unit})²`; break;
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
  if (state.vol) explainVolumeQuality();
  else $('quality').querySelector('dd[data-metric="psnr"]').previousElementSibling.textContent = 'PSNR, full scale';
}

// ---------------------------------------------------------------- charts

function drawCharts() {
  if (!state.info) return;
  updateTarget(false);
  state.spectrum = drawSpectrum($('spectrum'), { sv: state.info.singular_values || [], rank: state.info.rank, target: state.target },
    (k) => setK(k));
  state.spectrum.setK(live.k);
  if (state.orig) {
    state.hist = drawHistogram($('histogram'), state.orig);
    if (state.win) state.hist.setWindow(state.win.c, state.win.w);
  }
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
  const sv = info.singular_values || [], res = residuals(sv), range = dataRange();
  let tot = 0;
  for (const s of sv) tot += s * s;
  const mseNeeded = range * range / 10 ** (P / 10), resNeeded = tot > 0 ? mseNeeded * (info.npix || info.width * info.height) / tot : 0;
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
    const key = qualityKey(k, backend);
    let q = live.quality.get(key);
    if (!q) {
      q = await (await api(qualityUrl(k, backend), { signal })).json();
      live.quality.set(key, q);
    }
    if (q.volume) return q.volume.mse === 0 ? Infinity : 10 * Math.log10(dataRange() ** 2 / q.volume.mse);
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
  if (state.vol) {
    const v = state.vol, p = new URLSearchParams({ volume: state.info.id, k: String(live.k), axis: String(v.axis),
                                                   index: String(v.index), backend: backendNow() });
    if (state.win) { p.set('window-center', String(state.win.c)); p.set('window-width', String(state.win.w)); }
    hash = '#' + p.toString();
  } else if (state.info) {
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
  if (!p.get('id') && !p.get('volume')) return null;
  const want = p.get('volume') ? { volume: p.get('volume'), axis: p.get('axis'), index: p.get('index') } : { id: p.get('id') };
  if (p.has('k')) want.k = p.get('k');
  if (p.has('backend')) want.backend = p.get('backend');
  const c = Number(p.get('window-center')), w = Number(p.get('window-width'));
  if (p.has('window-center') && p.has('window-width') && Number.isFinite(c) && w > 0) want.win = { c, w };
  return want;
}

async function followHash() {
  const want = readHash();
  if (!want) return;
  if (want.volume) {
    if (state.vol && state.info.id === want.volume) {
      if (want.backend && usableBackend(want.backend)) $('backend').value = want.backend;
      if (want.win) applyWindow(want.win.c, want.win.w);
      if (want.axis && Number(want.axis) !== state.vol.axis) setAxis(Number(want.axis), want.index);
      else if (want.index) setIndex(Number(want.index));
      setK(kFromAddress(want.k, live.k));
      return;
    }
    await selectVolume(want.volume, want);
    return;
  }
  if (state.info && state.info.id === want.id && !state.vol) {
    if (want.backend && usableBackend(want.backend)) $('backend').value = want.backend;
    if (want.win) applyWindow(want.win.c, want.win.w);
    setK(kFromAddress(want.k, live.k));
    return;
  }
  await select(want.id, want);
}

function updateDownloads() {
  if (!state.info) return;
  if (state.vol) { volumeDownloads(); return; }
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


// ---------------------------------------------------------------- volumes

const AXIS_PLANE = { L: 'sagittal', R: 'sagittal', A: 'coronal', P: 'coronal', S: 'axial', I: 'axial' };

/* "i (R→L)": the voxel axis and where it points, from the file's orientation;
 * slices across it are named by the plane they lie in. */
function axisName(vi, a) {
  const o = vi.orientation && vi.orientation[a];
  const letter = 'ijk'[a];
  return o ? `${letter} (${o.replace('>', '→')}): ${AXIS_PLANE[o[2]]} slices` : `${letter}: slices across voxel axis ${letter}`;
}

/* "stored 28 KiB · upload 35 KiB · …": what the server holds beside what was sent. */
function uploadSizes(info) {
  const stored = info.stored_bytes, up = info.upload_bytes;
  if (!(stored > 0)) return '';
  if (!(up > 0)) return `stored <strong>${fmtBytes(stored)}</strong> · upload size not known · `;
  // stored_vs_upload (slice info, the storage issue) is stored / upload; else computed.
  const x = info.stored_vs_upload > 0 ? info.stored_vs_upload : stored / up;
  return `stored <strong>${fmtBytes(stored)}</strong> · upload <strong>${fmtBytes(up)}</strong> ` +
    `(the stored form is <strong>${sizeVs(x, 1)}</strong> than the upload) · `;
}

/* target of volume info: what was asked for at upload. */
function targetText(t) {
  if (!t || t.rank === undefined && t.energy === undefined && t.psnr === undefined) return 'every component';
  if (t.rank !== undefined) return `rank ${t.rank} per slice`;
  if (t.energy !== undefined) return `energy ${t.energy} per slice`;
  return `PSNR ${t.psnr} dB per slice`;
}

function keptText(vi) {
  if (vi.original_kept !== false) return 'original voxels kept losslessly (full rank is the original exactly)';
  const r = vi.ranks || [], lo = Math.min(...r), hi = Math.max(...r);
  const ranks = r.length ? (lo === hi ? `rank ${lo}` : `ranks ${lo}–${hi}`) : 'the stored ranks';
  return `<strong>original not kept</strong>: full rank is the stored rank (${ranks}, quantised factors); ` +
    'no difference map, MSE, PSNR or SSIM';
}

function setOriginalCaption(kept) {
  $('orig-caption').textContent = kept ? 'Original' : 'Stored rank (original not kept)';
  $('cv-original').setAttribute('aria-label', kept ? 'Original slice' : 'The slice at its stored rank (the original was not kept)');
  $('dl-original').textContent = kept ? 'original (PNG)' : 'stored rank (PNG; the original was not kept)';
}

function toData(p) { const s = state.vol.scale; return s.a + s.b * p; }

function dataRange() {
  if (state.vol) { const v = state.vol.info; return v.value_max - v.value_min || 1; }
  return state.orig.max - state.orig.min;
}

function defaultVolumeWindow(raw) {
  if (state.fileWin) return state.fileWin;
  return presetWindow(raw, raw.depth === 8 ? 'type' : 'tissue');
}

function qualityUrl(k, backend) {
  if (state.vol) return `/volumes/${encodeURIComponent(state.info.id)}/quality?` + new URLSearchParams({ k: String(k), backend });
  return '/quality?' + new URLSearchParams({ id: state.info.id, k: String(k), backend });
}

/* /volumes/{id}/quality: the whole volume into #vquality; returns the shown slice's
 * numbers for #quality (from the server along the factorisation axis; along another
 * axis MSE and PSNR are computed here from the two PNGs). */
function volumeSliceQuality(q) {
  const v = state.vol, R = q.data_range, noOrig = q.original_kept === false;
  for (const dd of $('vquality').querySelectorAll('dd[data-metric]')) {
    const val = q.volume[dd.dataset.metric];
    dd.dataset.value = val === null ? 'null' : String(val);
    dd.textContent = noOrig && dd.dataset.metric !== 'energy' ? '— (original not kept)'
      : dd.dataset.metric === 'psnr' ? (val === null ? '∞ dB (identical)' : `${fmt(val)} dB`)
      : dd.dataset.metric === 'mse' ? `${fmt(val)} (stored units)²`
      : dd.dataset.metric === 'energy' ? `${(val * 100).toFixed(4)} %` : val === null ? '— (a side under 7 voxels)' : fmt(val);
  }
  $('why-vpsnr').textContent = `10·log₁₀(R²/MSE) over every voxel, R = ${fmt(R)} (${v.info.datatype === 'uint8' ? '255, the uint8 scale' : v.info.datatype === 'uint16' ? '65535, the uint16 scale' : 'the volume\'s max − min'})`;
  $('vquality-note').textContent = noOrig ? q.note || 'the original voxels were not kept' : '';
  $('vquality').dataset.k = String(q.k);
  $('vquality-k').textContent = String(q.k);
  const out = { k: q.k, backend: q.backend, hausdorff: null, stored_bytes_at_k: 0, compression_ratio: 0, perSlice: 'server',
                original_kept: q.original_kept };
  if (v.axis === q.axis && q.slices[v.index]) return { ...out, ...q.slices[v.index], k: q.k };
  // Another axis: from the pixels on screen (the shown slice, when it is the slider's k).
  const o = views.orig, r = views.recon;
  out.perSlice = 'page';
  out.ssim = null;
  out.energy = null;
  if (noOrig || !o || !r || views.reconK !== live.k) { out.mse = null; out.psnr = null; return out; }
  const f = v.mapped ? v.storedPerPng : 1;
  let se = 0;
  for (let i = 0; i < o.data.length; i++) { const d = (r.data[i] - o.data[i]) * f; se += d * d; }
  out.mse = se / o.data.length;
  out.psnr = out.mse === 0 ? null : 10 * Math.log10(R * R / out.mse);
  return out;
}

/* After showQuality on a volume: say what the per-slice numbers are. */
function explainVolumeQuality() {
  const q = live.quality.get(qualityKey(live.k, backendNow()));
  if (!q || !q.volume) return;
  const v = state.vol, R = q.data_range, on = v.axis === q.axis;
  $('why-psnr').textContent = `10·log₁₀(R²/MSE) with R = ${fmt(R)}, the volume's data range (as /volumes/{id}/quality reports it)` +
    (on ? '' : '; computed here from the two PNGs (the server gives per-slice numbers along the factorisation axis)');
  const ssim = $('quality').querySelector('dd[data-metric="ssim"]'), en = $('quality').querySelector('dd[data-metric="energy"]');
  if (!on) {
    ssim.textContent = `— (given per slice along axis ${'ijk'[q.axis]} only; see the whole volume below)`;
    en.textContent = '— (slices across other axes have no factors of their own)';
  }
  $('quality').dataset.perSlice = on ? 'server' : 'page';
  $('quality').querySelector('dd[data-metric="psnr"]').previousElementSibling.textContent = 'PSNR, volume range';
  const o = state.orig;
  if (o && v.mapped) $('why-psnr-range').textContent = `10·log₁₀(R²/MSE) with R = ${fmt((o.max - o.min) * v.storedPerPng, 5)} = max − min of this slice, in stored units; higher is better`;
}

function leaveVolume() {
  state.vol = null;
  document.body.classList.remove('no-original');
  $('diff-none').hidden = true;
  setOriginalCaption(true);
  document.body.classList.remove('is-volume');
  for (const el of document.querySelectorAll('.vol-only')) el.hidden = true;
  $('dl-factors').hidden = false;
  for (const li of $('volume-list').children) li.classList.remove('current');
}

async function loadVolumes() {
  let vols;
  try {
    vols = (await (await api('/volumes')).json()).volumes || [];
  } catch (e) {
    // A store without volumes (or no key yet) leaves the list empty; the slice list reports errors.
    vols = [];
  }
  const ul = $('volume-list');
  ul.replaceChildren();
  for (const v of vols) {
    const li = document.createElement('li');
    li.dataset.id = v.id;
    li.dataset.state = v.state;
    if (state.vol && state.info.id === v.id) li.classList.add('current');
    const pick = document.createElement('button');
    pick.type = 'button';
    pick.className = 'pick';
    pick.setAttribute('aria-label', `Show volume ${v.name}`);
    const text = document.createElement('span');
    text.innerHTML = '<strong></strong><small></small>';
    text.firstChild.textContent = v.name;
    text.lastChild.textContent = `${v.dims.join('×')}, ${v.datatype}, ` +
      (v.state === 'ready' ? `stored ${fmtBytes(v.stored_bytes)}` + (v.upload_bytes > 0 ? ` · upload ${fmtBytes(v.upload_bytes)}` : '')
        : v.state === 'failed' ? `failed: ${v.error || ''}` : `${v.state} ${v.slices_done}/${v.slices_total}`);
    pick.append(text);
    pick.disabled = v.state !== 'ready';
    pick.addEventListener('click', () => selectVolume(v.id));
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'del small';
    del.textContent = '✕';
    del.setAttribute('aria-label', `Delete volume ${v.name}`);
    del.addEventListener('click', async () => {
      if (!confirm(`Delete volume "${v.name}"?`)) return;
      try { await api(`/volumes/${encodeURIComponent(v.id)}`, { method: 'DELETE' }); } catch (e) { if (!isGone(e)) { reportError(e); return; } }
      if (state.vol && state.info.id === v.id) clearView();
      await loadVolumes();
    });
    li.append(pick, del);
    ul.append(li);
  }
  $('vlist-empty').hidden = vols.length > 0;
}

/* POST /volumes with upload progress (XMLHttpRequest: fetch() reports none), then
 * GET /volumes/{id} until ready, the factorising progress on the same bar. */
function postVolume(file, url, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    const key = apiKey();
    if (key) xhr.setRequestHeader('Authorization', 'Bearer ' + key);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded, ev.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, body });
      else reject(new ApiError(xhr.status, body && body.error ? body.error.code : 'http_' + xhr.status,
                               body && body.error ? body.error.message : xhr.statusText || 'upload failed'));
    };
    xhr.onerror = () => reject(new TypeError('network error'));
    xhr.send(file);
  });
}

async function uploadVolume(file) {
  const msg = $('vupload-msg'), box = $('vprogress-box'), bar = $('vprogress'), text = $('vprogress-text');
  msg.className = 'msg';
  msg.textContent = '';
  box.hidden = false;
  bar.dataset.phase = 'upload';
  bar.value = 0;
  text.textContent = `uploading ${file.name}…`;
  const p = new URLSearchParams();
  const name = $('upload-name').value.trim();
  p.set('name', name || file.name.replace(/\.nii(\.gz)?$/i, ''));
  if ($('vaxis-up').value !== '') p.set('axis', $('vaxis-up').value);
  // What is kept (API.md): the server checks the values and refuses bad ones with 400.
  if ($('vpsnr').value.trim() !== '') p.set('psnr', $('vpsnr').value.trim());
  if (!$('vkeep').checked) p.set('keep-original', 'false');
  try {
    const { body } = await postVolume(file, '/volumes?' + p, (done, total) => {
      bar.value = done / total;
      text.textContent = `uploading ${file.name}: ${fmtBytes(done)} of ${fmtBytes(total)}`;
    });
    bar.value = 1;
    bar.dataset.uploaded = '1';
    let info = body;
    bar.dataset.phase = 'factorise';
    for (;;) {
      if (info.state === 'ready') break;
      if (info.state === 'failed') throw new Error(`factorising failed: ${info.error}`);
      if (info.slices_total) {
        bar.value = info.slices_done / info.slices_total;
        text.textContent = `factorising: ${info.slices_done} of ${info.slices_total} slices done`;
        bar.dataset.seen = String(info.slices_done);
      } else text.textContent = `${info.state}…`;
      await new Promise((r) => setTimeout(r, 200));
      info = await (await api(`/volumes/${encodeURIComponent(body.id)}`)).json();
    }
    bar.value = 1;
    bar.dataset.phase = 'ready';
    text.textContent = `ready: ${info.slices_total} slices factorised`;
    msg.textContent = `Stored: ${info.name} (${info.dims.join('×')}, ${info.datatype})`;
    await loadVolumes();
    await selectVolume(info.id);
  } catch (e) {
    bar.dataset.phase = 'failed';
    text.textContent = e instanceof ApiError ? `refused by the server (${e.status})` : 'failed';
    msg.className = 'msg error';
    msg.textContent = `${file.name}: ${errorText(e)}`;
    loadVolumes();
  }
}

/* Slice dims along axis a (rows × cols of its PNG): the two other voxel axes. */
function sliceDims(vi, a) {
  const d = vi.dims.filter((_, i) => i !== a);
  return { width: d[0], height: d[1], count: vi.dims[a] };
}

/* Shows volume id; want = {k, axis, index, backend, win} from the address, else defaults. */
async function selectVolume(id, want = {}) {
  if (state.ctrl) state.ctrl.abort();
  const ctrl = new AbortController();
  state.ctrl = ctrl;
  const seq = ++state.selectSeq;
  let vi;
  try {
    vi = await (await api(`/volumes/${encodeURIComponent(id)}?singular_values=true`, { signal: ctrl.signal })).json();
  } catch (e) {
    if (isAbort(e) || seq !== state.selectSeq) return;
    if (isGone(e)) { toast(`volume ${id} is not on the server.`, 'gone'); await loadVolumes(); } else reportError(e);
    return;
  }
  if (seq !== state.selectSeq) return;
  if (vi.state !== 'ready') { toast(`volume "${vi.name}" is ${vi.state} (${vi.slices_done} of ${vi.slices_total} slices): not ready yet.`); return; }
  clearToast('gone');
  resetLive();
  setIdle(false);
  delete $('cv-recon').dataset.k;
  delete $('quality').dataset.k;
  const full = Math.min(vi.slice_rows, vi.slice_cols);
  // The volume's spectrum: per component i, the root of Σ over slices of s_i².
  const sv = new Array(full).fill(0);
  for (const s of vi.singular_values || []) s.forEach((x, i) => { if (i < full) sv[i] += x * x; });
  const mapped = vi.datatype !== 'uint8' && vi.datatype !== 'uint16';
  const slope = vi.scl_slope, inter = vi.scl_inter, storedPerPng = (vi.value_max - vi.value_min) / 65535;
  const scale = mapped ? { a: inter + slope * vi.value_min, b: slope * storedPerPng } : { a: inter, b: slope };
  // Absent from the address (null) is not axis 0.
  let axis = want.axis === null || want.axis === undefined || want.axis === '' ? NaN : Number(want.axis);
  if (!(Number.isInteger(axis) && axis >= 0 && axis <= 2)) axis = vi.axis;
  const dims = sliceDims(vi, axis);
  let index = want.index === null || want.index === undefined || want.index === '' ? NaN : Number(want.index);
  if (!(Number.isInteger(index) && index >= 0 && index < dims.count)) index = dims.count >> 1;
  state.vol = { info: vi, axis, index, count: dims.count, mapped, scale, storedPerPng };
  state.info = {
    id: vi.id, name: vi.name, rank: full, width: dims.width, height: dims.height, bit_depth: vi.datatype === 'uint8' ? 8 : 16,
    singular_values: sv.map(Math.sqrt), npix: vi.dims[0] * vi.dims[1] * vi.dims[2],
    stored_bytes: vi.stored_bytes, original_bytes: vi.original_bytes, upload_bytes: vi.upload_bytes,
    original_kept: vi.original_kept !== false,
  };
  // Without the original, full rank is the stored rank: nothing to take a difference from.
  state.vol.kept = vi.original_kept !== false;
  document.body.classList.toggle('no-original', !state.vol.kept);
  $('diff-none').textContent = 'No difference map: the original voxels were not kept, so there is ' +
    'nothing to compare rank k with (full rank is the stored rank).';
  $('diff-none').hidden = state.vol.kept;
  setOriginalCaption(state.vol.kept);
  state.orig = null;
  state.win = null;
  state.diffInit = false;
  views.orig = null;
  // The file's own window: cal_min..cal_max of the header, in the PNG's units.
  state.fileWin = null;
  if (vi.cal_min !== null && vi.cal_max !== null && vi.cal_max > vi.cal_min) {
    const lo = (vi.cal_min - scale.a) / scale.b, hi = (vi.cal_max - scale.a) / scale.b;
    state.fileWin = { c: (lo + hi) / 2, w: hi - lo };
  }
  $('win-type').textContent = mapped || vi.datatype === 'uint16' ? '0–65535' : '0–255';
  $('win-type').title = mapped ? 'the whole 16-bit PNG scale: the volume\'s min to max' : `the whole ${vi.datatype} scale`;
  $('win-file').disabled = !state.fileWin;
  $('win-file').title = state.fileWin ? `cal_min ${vi.cal_min} to cal_max ${vi.cal_max} from the NIfTI header`
    : 'this file sets no window (cal_min/cal_max are 0)';
  if (want.win && want.win.w > 0) state.win = { ...want.win };
  document.body.classList.add('has-slice', 'is-volume');
  for (const el of document.querySelectorAll('.vol-only')) el.hidden = false;
  $('dl-factors').hidden = true;
  for (const li of $('slice-list').children) li.classList.remove('current');
  for (const li of $('volume-list').children) li.classList.toggle('current', li.dataset.id === id);
  $('intro').hidden = true;
  $('viewer').hidden = false;
  $('slice-title').textContent = vi.name;
  $('slice-meta').textContent = `volume ${vi.dims.join('×')}, ${vi.datatype}, voxels ${vi.voxel_sizes.map((x) => fmt(x, 3)).join('×')} mm, ` +
    `factorised along ${'ijk'[vi.axis]}, rank ≤ ${full} per slice` + (mapped ? `; shown as 16-bit PNGs: value = ${fmt(scale.a, 4)} + ${fmt(scale.b, 4)} × PNG value` : '');
  $('slice-sizes').innerHTML = uploadSizes(vi) + keptText(vi) + ` · target: <strong>${esc(targetText(vi.target))}</strong> · ` +
    `voxels: <strong>${fmtBytes(vi.original_bytes)}</strong> (${vi.original_bytes} bytes) · ` +
    `the stored form is <strong>${sizeVs(vi.stored_bytes, vi.original_bytes)}</strong> than the voxels`;
  $('slice-sizes').dataset.stored = String(vi.stored_bytes);
  const sel = $('vaxis');
  sel.replaceChildren(...[0, 1, 2].map((a) => { const o = document.createElement('option'); o.value = String(a); o.textContent = axisName(vi, a); return o; }));
  sel.value = String(axis);
  const idx = $('index-range');
  idx.max = String(dims.count - 1);
  idx.value = String(index);
  showIndex();
  if (want.backend && usableBackend(want.backend)) $('backend').value = want.backend;
  $('k-msg').textContent = '';
  let k = full;
  for (let i = 1; i <= full; i++) if (energyAt(state.info.singular_values, i) >= 0.999) { k = i; break; }
  k = kFromAddress(want.k, k);
  for (const el of [$('k-range'), $('k-number')]) { el.max = String(full); el.value = String(k); }
  $('k-max').textContent = String(full);
  $('compare-chart').toggleAttribute('hidden', true);
  $('compare-table').hidden = true;
  $('target-measured').textContent = '';
  state.compared = null;
  live.k = k;
  if (state.win) applyWindow(state.win.c, state.win.w);
  drawCharts();
  setK(k);
}

function showIndex() {
  const v = state.vol;
  $('index-text').textContent = `${v.index} of 0–${v.count - 1} along ${axisName(v.info, v.axis).split(':')[0]}`;
  $('index-text').dataset.index = String(v.index);
}

/* Slice index from the wheel, the arrow keys, the slider or the address. */
function setIndex(i, { from = '' } = {}) {
  const v = state.vol;
  if (!v) return;
  i = Math.min(v.count - 1, Math.max(0, i));
  if (i !== v.index) live.idir = i > v.index ? 1 : -1;
  v.index = i;
  live.slideMove = true;
  live.lastMove = performance.now();
  live.failed = null;
  live.noPrefetch = false;
  if (from !== 'range') $('index-range').value = String(i);
  showIndex();
  updateDownloads();
  updateReconState();
  markQuality();
  scheduleHash();
  pump();
}

function setAxis(a, index) {
  const v = state.vol;
  if (!v) return;
  const d = sliceDims(v.info, a);
  v.axis = a;
  v.count = d.count;
  state.info.width = d.width;
  state.info.height = d.height;
  $('vaxis').value = String(a);
  $('index-range').max = String(d.count - 1);
  live.shown = null;
  views.orig = null; // another size: the views refit
  const i = Number(index);
  v.index = -1;
  setIndex(Number.isInteger(i) && i >= 0 && i < d.count ? i : d.count >> 1);
}

function volumeDownloads() {
  const v = state.vol, k = live.k, backend = backendNow(), stem = `${state.info.name}-${'ijk'[v.axis]}${v.index}`;
  $('dl-recon').href = reconstructUrl(k, backend);
  $('dl-recon').download = `${stem}-k${k}.png`;
  $('dl-recon').textContent = `slice at rank ${k} (PNG, ${state.info.bit_depth}-bit)`;
  if (state.win) {
    $('dl-shown').href = reconstructUrl(k, backend, state.win);
    $('dl-shown').download = `${stem}-k${k}-window.png`;
  }
  $('dl-original').href = reconstructUrl(state.info.rank, backend);
  $('dl-original').download = `${stem}.png`;
  $('dl-volume').href = `/volumes/${encodeURIComponent(state.info.id)}/reconstruct?` + new URLSearchParams({ k: String(k), format: 'nifti', backend });
  $('dl-volume').download = `${state.info.name}-k${k}.nii.gz`;
  $('dl-volume').textContent = `volume at rank ${k} (.nii.gz)`;
}

function initVolumes() {
  $('vfile').addEventListener('change', (ev) => {
    const f = ev.target.files[0];
    ev.target.value = '';
    if (f) uploadVolume(f);
  });
  $('index-range').addEventListener('input', () => setIndex(parseInt($('index-range').value, 10), { from: 'range' }));
  $('vaxis').addEventListener('change', () => setAxis(Number($('vaxis').value)));
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
    loadVolumes();
    loadList().then(() => (state.vol ? selectVolume(state.info.id, { k: live.k, backend: backendNow(), win: state.win, axis: state.vol.axis, index: state.vol.index })
      : state.info ? select(state.info.id, { k: live.k, backend: backendNow(), win: state.win }) : followHash()));
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
  $('refresh').addEventListener('click', () => { loadList(); loadVolumes(); });
  // Slices deleted elsewhere drop out of the list when the tab comes back.
  document.addEventListener('visibilitychange', () => { if (!document.hidden) loadList(); });
  window.addEventListener('focus', () => { loadList(); loadVolumes(); });

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
  for (const id of ['dl-recon', 'dl-shown', 'dl-original', 'dl-factors', 'dl-volume']) $(id).addEventListener('click', download);
  initVolumes();
  window.addEventListener('hashchange', followHash);
  // Charts are drawn at their laid-out width: redraw them when it changes.
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawCharts, 100);
  });
  Promise.all([loadBackends(), loadList(), loadVolumes()]).then(followHash);
}

/* Narrow screens show one image at a time, chosen here. */
function chooseView(v) {
  $('images').dataset.view = v;
  for (const r of document.querySelectorAll('input[name="view"]')) r.checked = r.value === v;
  views.layout();
}

init();
