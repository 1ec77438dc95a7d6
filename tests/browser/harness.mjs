// harness.mjs - what the browser tests share: Chromium, counted assertions, the
// server's answers decoded independently of the page, and checks of what the page shows.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { decodeGray } from './png.mjs';
import { need, needFile } from './need.mjs';

export const CHROMIUM = needFile(process.env.SVDSLICE_CHROMIUM || '/usr/bin/chromium', 'apt-get install chromium');
const { chromium } = await need('playwright-core');
export const DATA = process.env.SVDSLICE_TEST_DATA || '';
export const ARTIFACTS = process.env.SVDSLICE_ARTIFACTS || path.join(os.tmpdir(), 'svdslice-artifacts');
export const WAIT = { timeout: 60000 };

let checks = 0;
// Counted assertions, so the report can say how many were made.
export function eq(actual, expected, msg) { checks++; assert.deepEqual(actual, expected, msg); }
export function ok(cond, msg) { checks++; assert.ok(cond, msg); }
export function near(actual, expected, tol, msg) {
  checks++;
  assert.ok(Math.abs(actual - expected) <= tol, `${msg}: ${actual} vs ${expected} (± ${tol})`);
}
export const checkCount = () => checks;

/* A Chromium profile in a fresh dir (how Playwright takes --user-data-dir); sRGB
 * forced so screenshots keep gray values. Returns {context, close()}. */
export async function launch() {
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'svdslice-chromium-'));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--force-color-profile=srgb'],
  });
  return {
    context,
    async close() {
      await context.close();
      fs.rmSync(profileDir, { recursive: true, force: true });
    },
  };
}

export async function get(base, p, headers = {}) {
  const res = await fetch(base + p, { headers });
  return { res, buf: Buffer.from(await res.arrayBuffer()) };
}

export async function getJson(base, p, headers = {}) {
  const { res, buf } = await get(base, p, headers);
  return { status: res.status, body: JSON.parse(buf.toString('utf8')), res };
}

export async function getGray(base, p, headers = {}) {
  const { res, buf } = await get(base, p, headers);
  eq(res.status, 200, `GET ${p}`);
  return decodeGray(buf);
}

export async function upload(base, png, name) {
  const res = await fetch(`${base}/slices?name=${encodeURIComponent(name)}`, { method: 'POST', body: png });
  ok(res.status === 201 || res.status === 200, `upload ${name}: ${res.status}`);
  return res.json();
}

/* Gray values of a canvas in the page, with checks that it is gray and opaque. */
export async function canvasGray(pg, id) {
  return pg.evaluate((cid) => {
    const c = document.getElementById(cid);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const gray = new Array(c.width * c.height);
    let grayOk = true;
    for (let i = 0; i < gray.length; i++) {
      gray[i] = d[4 * i];
      if (d[4 * i + 1] !== d[4 * i] || d[4 * i + 2] !== d[4 * i] || d[4 * i + 3] !== 255) grayOk = false;
    }
    return { width: c.width, height: c.height, gray, grayOk };
  }, id);
}

export async function canvasRgb(pg, id) {
  return pg.evaluate((cid) => {
    const c = document.getElementById(cid);
    return { width: c.width, height: c.height, data: [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data] };
  }, id);
}

export function firstMismatch(a, b) {
  if (a.length !== b.length) return -2;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/* API.md's window, in doubles, halves rounded up. */
export function windowed(v, c, w) {
  const x = (v - c + w / 2) / w * 255;
  if (!(x > 0)) return 0;
  if (x >= 255) return 255;
  return Math.floor(x) + (x - Math.floor(x) >= 0.5 ? 1 : 0);
}

/* Waits until the page has nothing in flight and nothing left to fetch. */
export async function waitIdle(pg) {
  await pg.waitForSelector('#viewer[data-idle="1"]', { state: 'attached', ...WAIT });
}

/* Clears the marks the page sets when a reconstruction and its quality are shown,
 * runs the action, and waits for both marks at k. */
export async function atK(pg, k, action) {
  await pg.evaluate(() => {
    delete document.getElementById('cv-recon').dataset.k;
    delete document.getElementById('quality').dataset.k;
  });
  await action();
  await pg.waitForSelector(`#cv-recon[data-k="${k}"]`, WAIT);
  await pg.waitForSelector(`#quality[data-k="${k}"]`, WAIT);
}

/* The shown reconstruction is /reconstruct's PNG through the window in the page's
 * fields, i.e. the server's own windowed PNG for that window, pixel for pixel; for
 * an 8-bit slice at the 0-255 window also the plain PNG. Returns the raw pixels. */
export async function checkRecon(pg, base, headers = {}) {
  const k = await pg.inputValue('#k-range');
  const src = await pg.getAttribute('#cv-recon', 'data-src');
  const ran = await pg.getAttribute('#cv-recon', 'data-backend');
  ok(src && src.startsWith('/reconstruct?'), `reconstruction source ${src}`);
  // Ask for the backend that ran, so `auto` cannot pick another one for us.
  const u = new URL(src, base);
  eq(u.searchParams.get('k'), k, 'the image shown is for the slider\'s k');
  eq(await pg.getAttribute('#cv-recon', 'data-k'), k, 'the image is marked with that k');
  u.searchParams.set('backend', ran);
  const { res, buf } = await get(base, u.pathname + u.search, headers);
  eq(res.status, 200, `GET ${u.pathname}${u.search}`);
  eq(res.headers.get('x-backend'), ran, 'X-Backend');
  const raw = decodeGray(buf);
  const c = await pg.inputValue('#win-center'), w = await pg.inputValue('#win-width');
  u.searchParams.set('window-center', c);
  u.searchParams.set('window-width', w);
  const shownPng = decodeGray((await get(base, u.pathname + u.search, headers)).buf);
  const got = await canvasGray(pg, 'cv-recon');
  ok(got.grayOk, 'reconstruction canvas is gray and opaque');
  eq([got.width, got.height], [raw.width, raw.height], 'reconstruction size');
  let bad = firstMismatch(got.gray, shownPng.data);
  eq(bad, -1, bad < 0 ? '' : `pixel ${bad}: page ${got.gray[bad]} vs server ${shownPng.data[bad]} (${u.search})`);
  if (raw.depth === 8 && Number(c) === 127.5 && Number(w) === 255) {
    bad = firstMismatch(got.gray, raw.data);
    eq(bad, -1, bad < 0 ? '' : `pixel ${bad}: page ${got.gray[bad]} vs /reconstruct ${raw.data[bad]}`);
  }
  return raw;
}

function sizeVs(stored, original) {
  const x = stored / original, f = x >= 1 ? x : 1 / x;
  return `${f >= 10 ? f.toFixed(0) : f.toFixed(1)}× ${x >= 1 ? 'larger' : 'smaller'}`;
}

/* The metrics panel shows /quality's numbers for the same k and backend, with
 * units, plus PSNR over the original's own range (max - min). */
export async function checkQuality(pg, base, id, k, headers = {}) {
  const backend = await pg.getAttribute('#quality', 'data-backend');
  const { status, body } = await getJson(base, `/quality?id=${id}&k=${k}&backend=${backend}`, headers);
  eq(status, 200, 'GET /quality');
  eq(body.k, k, 'quality k');
  const info = (await getJson(base, `/slices/${id}`, headers)).body;
  const orig = await getGray(base, `/slices/${id}/original`, headers);
  let lo = Infinity, hi = -Infinity;
  for (const v of orig.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const shown = async (name) => {
    const dd = pg.locator(`#quality dd[data-metric="${name}"]`);
    return [await dd.getAttribute('data-value'), (await dd.textContent()).trim()];
  };
  for (const name of ['mse', 'psnr', 'ssim', 'hausdorff']) {
    const [raw, text] = await shown(name), v = body[name];
    if (v === null) {
      eq(raw, 'null', `${name} is null`);
      ok(text.startsWith('—') || text.startsWith('∞'), `${name} shown as — or ∞, got ${text}`);
    } else {
      eq(Number(raw), v, `${name} value`);
      near(parseFloat(text), v, 1e-5 * Math.max(1, Math.abs(v)), `${name} shown ${text}`);
    }
  }
  ok((await shown('psnr'))[1].includes('dB'), 'PSNR in dB');
  ok((await shown('mse'))[1].includes('²'), 'MSE in squared units');
  if (body.hausdorff !== null) ok((await shown('hausdorff'))[1].endsWith('px'), 'Hausdorff in pixels');
  const [er, et] = await shown('energy');
  eq(Number(er), body.energy, 'energy value');
  near(parseFloat(et) / 100, body.energy, 1e-6, `energy shown ${et} as a percentage`);
  ok(et.endsWith('%'), 'energy in %');
  const [br, bt] = await shown('float32_bytes_at_k');
  eq(Number(br), body.float32_bytes_at_k, 'float32 bytes at k');
  ok(bt.includes(`(${body.float32_bytes_at_k} bytes)`) && /KiB|MiB|bytes/.test(bt), `bytes at k shown: ${bt}`);
  const vs = sizeVs(body.float32_bytes_at_k, info.original_bytes);
  ok(bt.includes(vs) && bt.includes('than the raw pixels'), `float32 factors against the raw pixels: "${bt}" has "${vs}"`);
  // PSNR over the data's own range, computed here from /quality's MSE.
  const [pr, pt] = await shown('psnr_range');
  if (body.mse === 0) ok(pt.startsWith('∞'), 'perfect match: infinite PSNR');
  else {
    const want = 10 * Math.log10((hi - lo) ** 2 / body.mse);
    near(body.psnr_data_range, want, 1e-9 * want, '/quality psnr_data_range is over max - min');
    near(Number(pr), want, 1e-9 * want, 'PSNR over the data range');
    near(parseFloat(pt), want, 1e-5 * want, `PSNR over the data range shown ${pt}`);
    ok((await pg.textContent('#why-psnr-range')).includes(`R = ${hi - lo}`), 'the range used is said');
  }
  return { body, info, orig };
}

/* 8-bit RGB(A) PNG as Playwright's screenshots are: returns {width, height, rgb(x, y)}. */
export function decodeRgb(buf) {
  let off = 8, ihdr = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off), type = buf.toString('latin1', off + 4, off + 8), body = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') ihdr = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), depth: body[8], ctype: body[9], interlace: body[12] };
    else if (type === 'IDAT') idat.push(body);
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  const { width, height, depth, ctype, interlace } = ihdr;
  if (depth !== 8 || interlace || (ctype !== 2 && ctype !== 6)) throw new Error(`screenshot layout ${ctype}/${depth}/${interlace}`);
  const bpp = ctype === 6 ? 4 : 3, stride = width * bpp, raw = zlib.inflateSync(Buffer.concat(idat));
  const out = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)], line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? out[y * stride + i - bpp] : 0, b = y ? out[(y - 1) * stride + i] : 0;
      const c = i >= bpp && y ? out[(y - 1) * stride + i - bpp] : 0;
      const p = [0, a, b, (a + b) >> 1, (() => { const q = a + b - c, pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c); return pa <= pb && pa <= pc ? a : pb <= pc ? b : c; })()][f];
      out[y * stride + i] = (line[i] + p) & 255;
    }
  }
  return { width, height, rgb: (x, y) => [...out.subarray(y * stride + x * bpp, y * stride + x * bpp + 3)] };
}

/* A 16-bit PNG holding 12-bit data like a scanner's: air 0 around an ellipse of
 * "skull" (~3000), "brain" (~1100-1900) and "ventricles" (~500). */
export function phantom12(w, h) {
  const v = new Array(w * h).fill(0);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const dx = (x - w / 2) / (w * 0.42), dy = (y - h / 2) / (h * 0.45), r = Math.hypot(dx, dy);
    if (r > 1) continue;
    let val = r > 0.88 ? 3000 : 1500 + 400 * Math.sin(x / 5) * Math.cos(y / 7);
    if (Math.hypot(dx * 2.5, dy * 1.4) < 0.35) val = 500;
    v[y * w + x] = Math.round(val + 37 * ((x * 7 + y * 13) % 5));
  }
  return v;
}
