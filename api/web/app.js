/* app.js - the svdslice page: upload, list, live rank-k reconstruction, quality, spectrum, backend timing */
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = 'svdslice.apiKey';
  const DEBOUNCE_MS = 60;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    info: null,          // GET /slices/{id} of the chosen slice
    orig16: null,        // decoded 16-bit original {width, height, data} (16-bit slices only)
    backends: [],
    timer: 0,
    ctrl: null,          // AbortController of the in-flight reconstruction + quality
    thumbs: new Map(),   // id -> blob URL of the list thumbnail
    compared: null,      // last backend comparison {rows, k}, redrawn on resize
    selectSeq: 0,        // counts slice selections
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

  /* fetch() with the Bearer key; a non-2xx answer becomes an ApiError carrying
   * the API's {"error": {code, message}}. Images go through here too, because
   * an <img src> cannot send the Authorization header. */
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
    return String(e && e.message || e);
  }

  function showStatus(text) {
    const el = $('status');
    el.textContent = text || '';
    el.hidden = !text;
  }

  function reportError(e) {
    if (e && e.name === 'AbortError') return;
    let text = errorText(e);
    if (e instanceof ApiError && e.status === 401) text += ' — enter the API key above.';
    showStatus(text);
  }

  /* Server-Timing: "kernel;dur=0.05, encode;dur=0.3, queue;dur=0.01" -> {kernel: 0.05, ...} */
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

  // ---------------------------------------------------------------- images

  /* Decode a PNG to the browser's 8-bit RGBA without colour management, so the
   * canvas holds the exact gray values the server sent. */
  async function decodeToCanvas(blob, canvas) {
    const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    canvas.width = bmp.width;
    canvas.height = bmp.height;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    ctx.clearRect(0, 0, bmp.width, bmp.height);
    ctx.drawImage(bmp, 0, 0);
    bmp.close();
  }

  async function inflate(bytes) {
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /* Minimal decoder for the server's grayscale PNGs (color type 0, 8 or 16 bit,
   * not interlaced): browsers reduce 16-bit images to 8 bits, but windowing and
   * percentiles need the real values. Returns {width, height, depth, data}. */
  async function decodeGrayPng(buf) {
    const b = new Uint8Array(buf), dv = new DataView(buf);
    const sig = [137, 80, 78, 71, 13, 10, 26, 10];
    if (b.length < 8 || sig.some((v, i) => b[i] !== v)) throw new Error('not a PNG');
    let off = 8, width = 0, height = 0, depth = 0, ctype = -1, interlace = 0;
    const idat = [];
    while (off + 8 <= b.length) {
      const len = dv.getUint32(off), type = String.fromCharCode(...b.subarray(off + 4, off + 8));
      const body = b.subarray(off + 8, off + 8 + len);
      if (type === 'IHDR') {
        width = dv.getUint32(off + 8); height = dv.getUint32(off + 12);
        depth = b[off + 16]; ctype = b[off + 17]; interlace = b[off + 20];
      } else if (type === 'IDAT') idat.push(body);
      else if (type === 'IEND') break;
      off += 12 + len;
    }
    if (ctype !== 0 || (depth !== 8 && depth !== 16) || interlace) throw new Error('unsupported PNG layout');
    const raw = await inflate(new Blob(idat));
    const bpp = depth / 8, stride = width * bpp;
    if (raw.length < height * (stride + 1)) throw new Error('truncated PNG');
    const cur = new Uint8Array(stride), prev = new Uint8Array(stride);
    const data = depth === 16 ? new Uint16Array(width * height) : new Uint8Array(width * height);
    for (let y = 0; y < height; y++) {
      const f = raw[y * (stride + 1)], row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? cur[i - bpp] : 0, up = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
        let pred = 0;
        if (f === 1) pred = a;
        else if (f === 2) pred = up;
        else if (f === 3) pred = (a + up) >> 1;
        else if (f === 4) {
          const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
          pred = pa <= pb && pa <= pc ? a : pb <= pc ? up : c;
        }
        cur[i] = (row[i] + pred) & 255;
      }
      for (let x = 0; x < width; x++)
        data[y * width + x] = depth === 16 ? (cur[2 * x] << 8) | cur[2 * x + 1] : cur[x];
      prev.set(cur);
    }
    return { width, height, depth, data };
  }

  /* API.md's window: clamp(round((v - C + W/2) / W * 255), 0, 255). */
  function windowed(v, c, w) {
    return Math.min(255, Math.max(0, Math.round((v - c + w / 2) / w * 255)));
  }

  function drawGray(canvas, width, height, gray) {
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const img = ctx.createImageData(width, height);
    for (let i = 0; i < gray.length; i++) {
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = gray[i];
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  /* Heat map colours (black - purple - orange - yellow - white, like "inferno"). */
  const HEAT = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
  function heat(t) {
    const x = Math.min(1, Math.max(0, t)) * (HEAT.length - 1), i = Math.min(HEAT.length - 2, Math.floor(x)), f = x - i;
    return HEAT[i].map((v, j) => Math.round(v + (HEAT[i + 1][j] - v) * f));
  }

  /* |original - reconstruction| of the two displayed images, as a heat map
   * scaled to its maximum. */
  function drawDiff() {
    const a = $('cv-original'), b = $('cv-recon'), out = $('cv-diff');
    if (!a.width || a.width !== b.width || a.height !== b.height) return;
    const w = a.width, h = a.height;
    const pa = a.getContext('2d', { willReadFrequently: true }).getImageData(0, 0, w, h).data;
    const pb = b.getContext('2d', { willReadFrequently: true }).getImageData(0, 0, w, h).data;
    let max = 0;
    const d = new Uint8Array(w * h);
    for (let i = 0; i < d.length; i++) {
      d[i] = Math.abs(pa[4 * i] - pb[4 * i]);
      if (d[i] > max) max = d[i];
    }
    out.width = w;
    out.height = h;
    const ctx = out.getContext('2d', { willReadFrequently: true });
    const img = ctx.createImageData(w, h);
    const lut = Array.from({ length: 256 }, (_, v) => heat(v / Math.max(1, max)));
    for (let i = 0; i < d.length; i++) {
      const c = lut[d[i]];
      img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    out.dataset.max = String(max);
    $('diff-scale').textContent = `(0 to ${max} gray levels)`;
  }

  // ---------------------------------------------------------------- backends

  async function loadBackends() {
    try {
      const body = await (await api('/backends')).json();
      state.backends = body.backends || [];
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
    if ([...sel.options].some((o) => o.value === chosen && !o.disabled)) sel.value = chosen;
  }

  // ---------------------------------------------------------------- slice list

  async function thumbnail(id, img) {
    let url = state.thumbs.get(id);
    if (!url) {
      const blob = await (await api(`/slices/${encodeURIComponent(id)}/original`)).blob();
      url = URL.createObjectURL(blob);
      state.thumbs.set(id, url);
    }
    img.src = url;
  }

  async function loadList() {
    let slices;
    try {
      slices = (await (await api('/slices')).json()).slices || [];
    } catch (e) {
      reportError(e);
      return;
    }
    showStatus('');
    const ul = $('slice-list');
    ul.replaceChildren();
    const live = new Set(slices.map((s) => s.id));
    for (const [id, url] of state.thumbs)
      if (!live.has(id)) { URL.revokeObjectURL(url); state.thumbs.delete(id); }
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
      img.width = 48;
      img.height = 48;
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
      thumbnail(s.id, img).catch(() => {});
    }
    $('list-empty').hidden = slices.length > 0;
  }

  async function remove(s) {
    if (!confirm(`Delete slice "${s.name}"?`)) return;
    try {
      await api(`/slices/${encodeURIComponent(s.id)}`, { method: 'DELETE' });
    } catch (e) {
      reportError(e);
      return;
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

  function clearView() {
    if (state.ctrl) state.ctrl.abort();
    state.info = null;
    state.orig16 = null;
    $('viewer').hidden = true;
    $('intro').hidden = false;
  }

  function energyAt(sv, k) {
    let tot = 0, part = 0;
    sv.forEach((s, i) => { tot += s * s; if (i < k) part += s * s; });
    return tot > 0 ? part / tot : 1;
  }

  function percentile(sorted, p) {
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(p * (sorted.length - 1))))];
  }

  function setWindow(mode) {
    const o = state.orig16;
    if (!o) return;
    const sorted = Uint16Array.from(o.data).sort();
    let lo = sorted[0], hi = sorted[sorted.length - 1];
    if (mode === 'auto') { lo = percentile(sorted, 0.01); hi = percentile(sorted, 0.99); }
    if (hi <= lo) hi = lo + 1;
    $('win-center').value = String(Math.round((lo + hi) / 2));
    $('win-width').value = String(Math.max(1, hi - lo));
  }

  function windowParams() {
    if (!state.info || state.info.bit_depth !== 16) return null;
    const c = parseFloat($('win-center').value), w = parseFloat($('win-width').value);
    if (!Number.isFinite(c) || !Number.isFinite(w) || w <= 0) return null;
    return { c, w };
  }

  /* The original as displayed: the server's PNG for 8-bit slices, the 16-bit
   * values windowed here for 16-bit ones (the reconstruction is windowed by the
   * server with the same formula). */
  async function drawOriginal(blob) {
    const cv = $('cv-original');
    const win = windowParams();
    if (state.orig16 && win) {
      const o = state.orig16;
      drawGray(cv, o.width, o.height, Uint8Array.from(o.data, (v) => windowed(v, win.c, win.w)));
    } else if (blob) {
      await decodeToCanvas(blob, cv);
    }
  }

  async function select(id) {
    if (state.ctrl) state.ctrl.abort();
    const seq = ++state.selectSeq; // a later click wins over a slower earlier one
    let info, origBlob;
    try {
      info = await (await api(`/slices/${encodeURIComponent(id)}`)).json();
      origBlob = await (await api(`/slices/${encodeURIComponent(id)}/original`)).blob();
    } catch (e) {
      reportError(e);
      return;
    }
    if (seq !== state.selectSeq) return;
    state.info = info;
    state.orig16 = null;
    for (const li of $('slice-list').children) li.classList.toggle('current', li.dataset.id === id);
    $('intro').hidden = true;
    $('viewer').hidden = false;
    $('slice-title').textContent = info.name;
    $('slice-meta').textContent = `${info.width}×${info.height}, ${info.bit_depth}-bit, rank ${info.rank}, ` +
      `${info.stored_bytes} bytes stored (ratio ${fmt(info.compression_ratio, 4)})`;
    const base = `/slices/${encodeURIComponent(id)}`;
    $('dl-original').href = base + '/original';
    $('dl-original').download = `${info.name.replace(/\.png$/i, '')}.png`;
    $('dl-factors').href = base + '/factors';
    $('dl-factors').download = `${info.name.replace(/\.png$/i, '')}.svd`;

    const is16 = info.bit_depth === 16;
    $('window-panel').hidden = !is16;
    if (is16) {
      try {
        state.orig16 = await decodeGrayPng(await origBlob.arrayBuffer());
        setWindow('auto');
      } catch (e) {
        showStatus(`Cannot window this original: ${e.message}`);
      }
    }
    await drawOriginal(origBlob);

    // Default k: the smallest rank that keeps 99.9 % of the energy.
    const sv = info.singular_values || [];
    let k = info.rank;
    for (let i = 1; i <= info.rank; i++) if (energyAt(sv, i) >= 0.999) { k = i; break; }
    for (const el of [$('k-range'), $('k-number')]) { el.max = String(info.rank); el.value = String(k); }
    $('k-max').textContent = String(info.rank);
    $('compare-chart').toggleAttribute('hidden', true); // SVG elements have no .hidden property
    $('compare-table').hidden = true;
    $('compare-msg').textContent = '';
    state.compared = null;
    update();
  }

  function currentK() {
    const k = parseInt($('k-range').value, 10);
    return Math.min(state.info ? state.info.rank : 1, Math.max(1, Number.isFinite(k) ? k : 1));
  }

  function reconstructUrl(k, backend) {
    const p = new URLSearchParams({ id: state.info.id, k: String(k), backend });
    const win = windowParams();
    if (win) {
      p.set('window-center', String(win.c));
      p.set('window-width', String(win.w));
    } else if (state.info.bit_depth === 16) {
      p.set('bits', '8');
    }
    return '/reconstruct?' + p.toString();
  }

  /* Debounced: a burst of slider events sends one request ~60 ms after the last. */
  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(update, DEBOUNCE_MS);
  }

  /* Fetch and show the reconstruction and quality at the current k, cancelling
   * whatever the previous k still had in flight. The HTTP cache revalidates with
   * the server's ETag (fetch's default cache mode). */
  async function update() {
    if (!state.info) return;
    if (state.ctrl) state.ctrl.abort();
    const ctrl = new AbortController();
    state.ctrl = ctrl;
    const k = currentK(), backend = $('backend').value, info = state.info;
    drawSpectrum(k);
    const recon = (async () => {
      const t0 = performance.now();
      const url = reconstructUrl(k, backend);
      const res = await api(url, { signal: ctrl.signal });
      const blob = await res.blob();
      const rtt = performance.now() - t0;
      if (ctrl.signal.aborted) return;
      const cv = $('cv-recon');
      await decodeToCanvas(blob, cv);
      if (ctrl.signal.aborted || state.info !== info) return;
      const st = serverTiming(res), ran = res.headers.get('X-Backend') || '?';
      cv.dataset.k = String(k);
      cv.dataset.backend = ran;
      cv.dataset.src = url;
      $('recon-k').textContent = String(k);
      const parts = [`backend <strong>${esc(ran)}</strong>`];
      for (const name of ['kernel', 'encode', 'queue'])
        if (name in st) parts.push(`${name} ${fmt(st[name], 3)} ms`);
      parts.push(`round trip ${fmt(rtt, 3)} ms`);
      $('timing').innerHTML = parts.join(' · ');
      drawDiff();
    })();
    const quality = (async () => {
      const p = new URLSearchParams({ id: info.id, k: String(k), backend });
      const q = await (await api('/quality?' + p, { signal: ctrl.signal })).json();
      if (ctrl.signal.aborted || state.info !== info) return;
      showQuality(q);
    })();
    const results = await Promise.allSettled([recon, quality]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) reportError(failed.reason);
    else if (!ctrl.signal.aborted) showStatus('');
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));
  }

  function fmt(v, digits = 6) {
    if (v === null || v === undefined || Number.isNaN(v)) return '—';
    if (!Number.isFinite(v)) return '∞';
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(digits)));
  }

  function showQuality(q) {
    const dl = $('quality');
    for (const dd of dl.querySelectorAll('dd')) {
      const name = dd.dataset.metric, v = q[name];
      dd.dataset.value = v === null || v === undefined ? 'null' : String(v);
      let text;
      if (v === null || v === undefined) {
        // psnr is null for a perfect match, hausdorff when one image is empty: both infinite.
        text = name === 'psnr' || name === 'hausdorff' ? '∞' : '—';
      } else if (name === 'energy') {
        text = `${fmt(v)} (${(v * 100).toFixed(3)} %)`;
      } else {
        text = fmt(v);
      }
      dd.textContent = text;
    }
    dl.dataset.k = String(q.k);
    dl.dataset.backend = q.backend || '';
    $('quality-k').textContent = String(q.k);
  }

  // ---------------------------------------------------------------- charts

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  /* Log-scale singular values (left axis) and cumulative energy (right, 0-100 %),
   * with the current k marked. */
  function drawSpectrum(k) {
    const chart = $('spectrum'), info = state.info;
    chart.replaceChildren();
    const sv = info.singular_values || [];
    if (!sv.length) return;
    // The viewBox follows the element's width so labels keep their size on narrow screens.
    const W = chartWidth(chart, 560), H = 260, x0 = 58, x1 = W - 52, y0 = H - 38, y1 = 14;
    chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const pos = sv.filter((s) => s > 0);
    const dHi = Math.ceil(Math.log10(Math.max(...pos)));
    let dLo = Math.floor(Math.log10(Math.min(...pos)));
    if (dLo === dHi) dLo--;
    const n = sv.length;
    const X = (i) => x0 + (n > 1 ? (i - 1) / (n - 1) : 0.5) * (x1 - x0);
    const Y = (s) => y0 - (Math.log10(Math.max(s, 10 ** dLo)) - dLo) / (dHi - dLo) * (y0 - y1);
    const E = (e) => y0 - e * (y0 - y1);
    const g = svg('g', { 'font-size': 11 });
    for (let d = dLo; d <= dHi; d++) {
      g.append(svg('line', { x1: x0, x2: x1, y1: Y(10 ** d), y2: Y(10 ** d), class: 'grid' }));
      g.append(svg('text', { x: x0 - 4, y: Y(10 ** d) + 4, 'text-anchor': 'end' }, d >= -2 && d <= 4 ? String(10 ** d) : `1e${d}`));
    }
    for (const e of [0, 0.5, 0.9, 1]) g.append(svg('text', { x: x1 + 4, y: E(e) + 4, class: 'energy-t' }, `${e * 100}%`));
    const step = Math.max(1, Math.round(n / 6 / 10) * 10);
    for (let i = 1; i <= n; i += (i === 1 ? step - 1 : step))
      g.append(svg('text', { x: X(i), y: y0 + 14, 'text-anchor': 'middle' }, String(i)));
    g.append(svg('text', { x: (x0 + x1) / 2, y: H - 4, 'text-anchor': 'middle' }, 'component i'));
    g.append(svg('text', { x: 12, y: (y0 + y1) / 2, transform: `rotate(-90 12 ${(y0 + y1) / 2})`, 'text-anchor': 'middle' }, 'singular value (log)'));
    g.append(svg('rect', { x: x0, y: y1, width: x1 - x0, height: y0 - y1, class: 'frame' }));
    // Components beyond the stored rank are shaded: they cannot be reconstructed.
    if (info.rank < n) g.append(svg('rect', { x: X(info.rank), y: y1, width: x1 - X(info.rank), height: y0 - y1, class: 'unstored' }));
    let tot = 0;
    sv.forEach((s) => { tot += s * s; });
    let cum = 0;
    const sPts = [], ePts = [];
    sv.forEach((s, i) => {
      cum += s * s;
      sPts.push(`${X(i + 1).toFixed(1)},${Y(s).toFixed(1)}`);
      ePts.push(`${X(i + 1).toFixed(1)},${E(tot > 0 ? cum / tot : 1).toFixed(1)}`);
    });
    g.append(svg('polyline', { points: sPts.join(' '), class: 'sv' }));
    g.append(svg('polyline', { points: ePts.join(' '), class: 'energy' }));
    const e = energyAt(sv, k), xk = X(k);
    g.append(svg('line', { x1: xk, x2: xk, y1: y1, y2: y0, class: 'kmark' }));
    g.append(svg('circle', { cx: xk, cy: E(e), r: 3.5, class: 'kdot' }));
    g.append(svg('text', { x: xk < (x0 + x1) / 2 ? xk + 6 : xk - 6, y: y1 + 14, 'text-anchor': xk < (x0 + x1) / 2 ? 'start' : 'end', class: 'klabel' },
      `k = ${k}: ${(e * 100).toFixed(3)} % energy`));
    const legend = svg('g', { transform: `translate(${x1 - 150},${y0 - 34})` });
    legend.append(svg('line', { x1: 0, x2: 18, y1: 0, y2: 0, class: 'sv' }), svg('text', { x: 22, y: 4 }, 'singular value'));
    legend.append(svg('line', { x1: 0, x2: 18, y1: 16, y2: 16, class: 'energy' }), svg('text', { x: 22, y: 20 }, 'cumulative energy'));
    g.append(legend);
    chart.append(g);
    chart.dataset.k = String(k);
    chart.onclick = (ev) => {
      const pt = chart.createSVGPoint();
      pt.x = ev.clientX; pt.y = ev.clientY;
      const p = pt.matrixTransform(chart.getScreenCTM().inverse());
      const i = Math.round(1 + (p.x - x0) / (x1 - x0) * (n - 1));
      setK(Math.min(info.rank, Math.max(1, i)));
    };
  }

  /* Width in CSS pixels an SVG chart is laid out at (its fallback when hidden). */
  function chartWidth(chart, fallback) {
    const w = Math.round(chart.getBoundingClientRect().width);
    return w >= 200 ? Math.min(w, 1000) : fallback;
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
    drawCompare(rows, k);
  }

  function drawCompare(rows, k) {
    const chart = $('compare-chart'), tbody = $('compare-table').querySelector('tbody');
    chart.replaceChildren();
    tbody.replaceChildren();
    if (!rows.length) return;
    for (const r of rows) {
      const tr = document.createElement('tr');
      tr.dataset.backend = r.name;
      for (const v of [r.name, fmt(r.kernel, 3), fmt(r.rtt, 3)]) {
        const td = document.createElement('td');
        td.textContent = v;
        tr.append(td);
      }
      tbody.append(tr);
    }
    chart.toggleAttribute('hidden', false);
    const W = chartWidth(chart, 760), narrow = W < 560, H = 300;
    const x0 = 64, x1 = narrow ? W - 12 : W - 150, y0 = H - 40, y1 = narrow ? 52 : 30;
    chart.setAttribute('viewBox', `0 0 ${W} ${H}`);
    const vals = rows.flatMap((r) => [r.kernel, r.rtt]).filter((v) => v > 0 && Number.isFinite(v));
    let dLo = Math.floor(Math.log10(Math.min(...vals))), dHi = Math.ceil(Math.log10(Math.max(...vals)));
    if (dHi <= dLo) dHi = dLo + 1;
    const Y = (v) => y0 - (Math.log10(v) - dLo) / (dHi - dLo) * (y0 - y1);
    const g = svg('g', { 'font-size': 12 });
    g.append(svg('text', { x: (x0 + x1) / 2, y: 16, 'text-anchor': 'middle', 'font-weight': 'bold' },
      narrow ? `median ms at k = ${k}, log scale` : `median time per reconstruction at k = ${k} (log scale; lower is faster)`));
    for (let d = dLo; d <= dHi; d++) {
      g.append(svg('line', { x1: x0, x2: x1, y1: Y(10 ** d), y2: Y(10 ** d), class: 'grid' }));
      g.append(svg('text', { x: x0 - 6, y: Y(10 ** d) + 4, 'text-anchor': 'end' }, `${Number((10 ** d).toPrecision(1))} ms`));
      for (let m = 2; m <= 9 && d < dHi; m++)
        g.append(svg('line', { x1: x0, x2: x1, y1: Y(m * 10 ** d), y2: Y(m * 10 ** d), class: 'minor' }));
    }
    const gw = (x1 - x0) / rows.length, bw = gw * 0.36;
    rows.forEach((r, i) => {
      const gx = x0 + i * gw + gw * 0.14;
      [['kernel', r.kernel], ['rtt', r.rtt]].forEach(([cls, v], j) => {
        if (!(v > 0 && Number.isFinite(v))) return;
        const bar = svg('rect', { x: gx + j * bw, y: Y(v), width: bw * 0.92, height: y0 - Y(v), class: `bar ${cls}`, 'data-backend': r.name });
        bar.append(svg('title', {}, `${r.name}: ${cls === 'kernel' ? 'server kernel' : 'round trip'} ${fmt(v, 3)} ms`));
        g.append(bar);
      });
      g.append(svg('text', { x: x0 + (i + 0.5) * gw, y: y0 + 16, 'text-anchor': 'middle' }, r.name));
    });
    g.append(svg('line', { x1: x0, x2: x1, y1: y0, y2: y0, class: 'axis' }));
    g.append(svg('line', { x1: x0, x2: x0, y1: y0, y2: y1, class: 'axis' }));
    // Legend to the right, or above the plot where there is no room beside it.
    const lg = svg('g', { transform: narrow ? `translate(${x0},24)` : `translate(${x1 + 16},${y1 + 10})` });
    const [dx, dy] = narrow ? [130, 0] : [0, 22];
    lg.append(svg('rect', { x: 0, y: 0, width: 14, height: 14, class: 'bar kernel' }), svg('text', { x: 20, y: 11 }, 'server kernel'));
    lg.append(svg('rect', { x: dx, y: dy, width: 14, height: 14, class: 'bar rtt' }), svg('text', { x: dx + 20, y: dy + 11 }, 'client round trip'));
    g.append(lg);
    chart.append(g);
    $('compare-table').hidden = false;
  }

  // ---------------------------------------------------------------- wiring

  function setK(k) {
    $('k-range').value = String(k);
    $('k-number').value = String(k);
    schedule();
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

  function init() {
    $('apikey').value = apiKey();
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('apikey').value.trim();
      if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
      for (const url of state.thumbs.values()) URL.revokeObjectURL(url);
      state.thumbs.clear();
      loadList().then(() => { if (state.info) select(state.info.id); });
    });
    $('apikey-clear').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_STORE);
      $('apikey').value = '';
    });
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
    $('k-range').addEventListener('input', () => { $('k-number').value = $('k-range').value; schedule(); });
    $('k-number').addEventListener('input', () => {
      const v = parseInt($('k-number').value, 10);
      if (!state.info || !Number.isFinite(v) || v < 1 || v > state.info.rank) return;
      $('k-range').value = String(v);
      schedule();
    });
    $('k-number').addEventListener('change', () => { $('k-number').value = String(currentK()); });
    $('backend').addEventListener('change', update);
    for (const id of ['win-center', 'win-width'])
      $(id).addEventListener('input', () => { drawOriginal(null); schedule(); });
    $('win-auto').addEventListener('click', () => { setWindow('auto'); drawOriginal(null); update(); });
    $('win-full').addEventListener('click', () => { setWindow('full'); drawOriginal(null); update(); });
    $('compare').addEventListener('click', compareBackends);
    $('dl-original').addEventListener('click', download);
    $('dl-factors').addEventListener('click', download);
    // Charts are drawn at their laid-out width: redraw them when it changes.
    let resizeTimer = 0;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (!state.info) return;
        drawSpectrum(currentK());
        if (state.compared && !$('compare-chart').hasAttribute('hidden')) drawCompare(state.compared.rows, state.compared.k);
      }, 100);
    });
    loadBackends();
    loadList();
  }

  init();
})();
