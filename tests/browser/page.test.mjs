// page.test.mjs - drives the web page in Debian's Chromium against a real `svdslice serve`
//
// Every expected value comes from the server's own HTTP answers, fetched and decoded
// here independently of the page (png.mjs), never from the page's code.
// Env (set by ctest): SVDSLICE_BIN, SVDSLICE_TEST_DATA, SVDSLICE_ARTIFACTS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeGray, encodeGray16 } from './png.mjs';
import { startServer } from './server.mjs';
import { need, needFile } from './need.mjs';

const CHROMIUM = needFile(process.env.SVDSLICE_CHROMIUM || '/usr/bin/chromium', 'apt-get install chromium');
const { chromium } = await need('playwright-core');
const DATA = process.env.SVDSLICE_TEST_DATA || '';
const ARTIFACTS = process.env.SVDSLICE_ARTIFACTS || path.join(os.tmpdir(), 'svdslice-artifacts');
const SLICE = path.join(DATA, 'BrainProtonDensitySlice.png');
const BACKENDS = ['loops3', 'loops2', 'loops1', 'blocked', 'threads', 'blas', 'cuda', 'cublas'];
const KEY = 'browser-test-key-7f3a';
const WAIT = { timeout: 60000 };

let server, context, page, profileDir;
const pageErrors = [];
let checks = 0;

// Counted assertions, so the report can say how many were made.
function eq(actual, expected, msg) { checks++; assert.deepEqual(actual, expected, msg); }
function ok(cond, msg) { checks++; assert.ok(cond, msg); }

async function get(base, p, headers = {}) {
  const res = await fetch(base + p, { headers });
  return { res, buf: Buffer.from(await res.arrayBuffer()) };
}

async function getJson(base, p, headers = {}) {
  const { res, buf } = await get(base, p, headers);
  return { status: res.status, body: JSON.parse(buf.toString('utf8')), res };
}

/* Gray values of a canvas in the page, with checks that it is gray and opaque. */
async function canvasGray(pg, id) {
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

function firstMismatch(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/* Clears the marks the page sets when a reconstruction and its quality are shown,
 * runs the action, and waits for both marks at k. */
async function atK(pg, k, action) {
  await pg.evaluate(() => {
    delete document.getElementById('cv-recon').dataset.k;
    delete document.getElementById('quality').dataset.k;
  });
  await action();
  await pg.waitForSelector(`#cv-recon[data-k="${k}"]`, WAIT);
  await pg.waitForSelector(`#quality[data-k="${k}"]`, WAIT);
}

/* The shown reconstruction equals /reconstruct's PNG for the same URL, pixel for
 * pixel; returns the server's pixels. */
async function checkRecon(pg, base, headers = {}) {
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
  const want = decodeGray(buf);
  const got = await canvasGray(pg, 'cv-recon');
  ok(got.grayOk, 'reconstruction canvas is gray and opaque');
  eq([got.width, got.height], [want.width, want.height], 'reconstruction size');
  const bad = firstMismatch(got.gray, want.data);
  eq(bad, -1, bad < 0 ? '' : `pixel ${bad}: page ${got.gray[bad]} vs server ${want.data[bad]} (${src})`);
  return want;
}

/* The metrics panel shows /quality's numbers for the same k and backend. */
async function checkQuality(pg, base, id, k, headers = {}) {
  const backend = await pg.getAttribute('#quality', 'data-backend');
  const { status, body } = await getJson(base, `/quality?id=${id}&k=${k}&backend=${backend}`, headers);
  eq(status, 200, 'GET /quality');
  eq(body.k, k, 'quality k');
  for (const name of ['mse', 'psnr', 'ssim', 'hausdorff', 'energy', 'stored_bytes_at_k', 'compression_ratio']) {
    const dd = pg.locator(`#quality dd[data-metric="${name}"]`);
    const raw = await dd.getAttribute('data-value'), text = (await dd.textContent()).trim();
    const v = body[name];
    if (v === null) {
      eq(raw, 'null', `${name} is null`);
      ok(text === '—' || text === '∞', `${name} shown as — or ∞, got ${text}`);
    } else {
      eq(Number(raw), v, `${name} value`);
      const shown = parseFloat(text);
      ok(Math.abs(shown - v) <= 1e-5 * Math.max(1, Math.abs(v)), `${name} shown ${text}, API ${v}`);
    }
  }
}

async function newPage(base) {
  const pg = await context.newPage();
  pg.on('pageerror', (e) => pageErrors.push(String(e)));
  await pg.setViewportSize({ width: 1280, height: 800 });
  await pg.goto(base + '/');
  return pg;
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  ok(fs.existsSync(SLICE), `test slice ${SLICE} (SVDSLICE_TEST_DATA)`);
  server = await startServer();
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'svdslice-chromium-'));
  // A persistent context on a fresh dir is how Playwright takes --user-data-dir.
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await newPage(server.base);
});

after(async () => {
  if (context) await context.close();
  if (server) await server.stop();
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  console.log(`# browser checks made: ${checks}`);
});

let info; // the uploaded real slice, from the API

test('the page lists the eight backends, unavailable ones disabled with the reason', async () => {
  const { body } = await getJson(server.base, '/backends');
  await page.waitForFunction(() => document.querySelectorAll('#backend option').length === 9, null, WAIT);
  const opts = await page.$$eval('#backend option', (os) => os.map((o) => ({ v: o.value, d: o.disabled, t: o.title })));
  eq(opts.map((o) => o.v), ['auto', ...BACKENDS], 'backend options');
  for (const b of body.backends) {
    const o = opts.find((x) => x.v === b.name);
    eq(o.d, !b.available, `${b.name} disabled iff unavailable`);
    if (!b.available) {
      eq(o.t, b.reason, `${b.name} tooltip is the reason`);
      const li = (await page.textContent(`#backend-list li[data-backend="${b.name}"]`)) || '';
      ok(li.includes(b.reason), `${b.name} reason shown in the list`);
    }
  }
  if (!body.backends.find((b) => b.name === 'cuda').available) {
    // This machine has no GPU: the two GPU backends must be the disabled ones.
    eq(opts.filter((o) => o.d).map((o) => o.v), ['cuda', 'cublas'], 'disabled without a GPU');
  }
});

test('uploading a real MRI slice through the file input lists and shows it', async () => {
  await page.setInputFiles('#file', SLICE);
  await page.waitForSelector('#slice-list li[data-id]', WAIT);
  const { body } = await getJson(server.base, '/slices');
  eq(body.slices.length, 1, 'one slice stored');
  info = (await getJson(server.base, `/slices/${body.slices[0].id}`)).body;
  eq(info.name, 'BrainProtonDensitySlice.png', 'name from the multipart filename');
  eq(await page.getAttribute('#slice-list li', 'data-id'), info.id, 'listed id');
  await page.waitForFunction(() => {
    const img = document.querySelector('#slice-list li img');
    return img && img.complete && img.naturalWidth > 0;
  }, null, WAIT);
  const thumb = await page.$eval('#slice-list li img', (i) => [i.src.slice(0, 5), i.naturalWidth, i.naturalHeight]);
  eq(thumb, ['blob:', info.width, info.height], 'thumbnail is the original via a blob URL');
  await page.waitForSelector('#viewer:not([hidden])', WAIT);
  eq(await page.getAttribute('#k-range', 'max'), String(info.rank), 'slider max is the rank');
  ok(await page.isHidden('#window-panel'), 'no window control for an 8-bit slice');

  // The original canvas holds the stored pixels exactly.
  const want = decodeGray((await get(server.base, `/slices/${info.id}/original`)).buf);
  const got = await canvasGray(page, 'cv-original');
  eq([got.width, got.height], [info.width, info.height], 'original size');
  eq(firstMismatch(got.gray, want.data), -1, 'original pixels');
});

test('the slider (keyboard, value, number field) shows /reconstruct and /quality exactly', async () => {
  const range = page.locator('#k-range');
  await atK(page, 1, async () => { await range.focus(); await page.keyboard.press('Home'); });
  let recon = await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 1);

  // The heat map's scale is max |original - reconstruction| of the two images.
  const orig = decodeGray((await get(server.base, `/slices/${info.id}/original`)).buf);
  let maxDiff = 0;
  for (let i = 0; i < orig.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(orig.data[i] - recon.data[i]));
  eq(await page.getAttribute('#cv-diff', 'data-max'), String(maxDiff), 'difference map scale');
  const diff = await page.$eval('#cv-diff', (c) => [c.width, c.height]);
  eq(diff, [info.width, info.height], 'difference map size');

  await atK(page, 5, async () => { for (let i = 0; i < 4; i++) await page.keyboard.press('ArrowRight'); });
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 5);

  await atK(page, info.rank, () => page.keyboard.press('End'));
  recon = await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, info.rank);

  await atK(page, 37, () => range.evaluate((el) => { el.value = '37'; el.dispatchEvent(new Event('input', { bubbles: true })); }));
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 37);
  eq(await page.inputValue('#k-number'), '37', 'number field follows the slider');
  eq(await page.getAttribute('#spectrum', 'data-k'), '37', 'spectrum marks k');
  eq(await page.locator('#spectrum polyline').count(), 2, 'spectrum draws values and cumulative energy');

  await atK(page, 12, () => page.fill('#k-number', '12'));
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 12);
  eq(await page.inputValue('#k-range'), '12', 'slider follows the number field');

  const timing = await page.textContent('#timing');
  ok(/kernel [0-9.]+ ms/.test(timing) && /encode [0-9.]+ ms/.test(timing), `Server-Timing shown: ${timing}`);
});

test('a burst of slider moves is debounced to the last k', async () => {
  const seen = [];
  const onReq = (r) => { if (r.url().includes('/reconstruct?')) seen.push(r.url()); };
  page.on('request', onReq);
  await atK(page, 30, () => page.evaluate(() => {
    const el = document.getElementById('k-range');
    for (let k = 21; k <= 30; k++) { el.value = String(k); el.dispatchEvent(new Event('input', { bubbles: true })); }
  }));
  page.off('request', onReq);
  ok(seen.length >= 1 && seen.length <= 2, `10 moves sent ${seen.length} reconstruct requests`);
  ok(seen.at(-1).includes('k=30'), 'the last request is for the last k');
  await checkRecon(page, server.base);
});

/* svdslice_requests_total for /reconstruct with that status, from /metrics. */
async function reconCount(base, status) {
  const { buf } = await get(base, '/metrics');
  const re = new RegExp(`^svdslice_requests_total\\{route="/reconstruct",status="${status}"\\} (\\d+)$`, 'm');
  const m = re.exec(buf.toString('utf8'));
  return m ? Number(m[1]) : 0;
}

test('going back to a k already seen uses the browser cache (ETag), not a new render', async () => {
  const before = await reconCount(server.base, 200);
  ok(before > 0, `the server counted the page's renders (${before})`);
  for (const k of [5, 30]) {
    await atK(page, k, () => page.fill('#k-number', String(k)));
    await checkRecon(page, server.base);
  }
  // Each checkRecon fetched once from Node: those are the only new 200s.
  eq(await reconCount(server.base, 200), before + 2, 'no second render for a k already seen');
});

test('choosing a backend runs it and shows X-Backend', async () => {
  await atK(page, 30, () => page.selectOption('#backend', 'loops1'));
  eq(await page.getAttribute('#cv-recon', 'data-backend'), 'loops1', 'X-Backend of the shown image');
  ok((await page.textContent('#timing')).includes('loops1'), 'timing line names the backend');
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 30);
  await atK(page, 30, () => page.selectOption('#backend', 'auto'));
});

test('compare backends times every available backend', async () => {
  const { body } = await getJson(server.base, '/backends');
  const avail = body.backends.filter((b) => b.available).map((b) => b.name);
  await page.click('#compare');
  await page.waitForSelector('#compare-table:not([hidden])', { timeout: 300000 });
  const rows = await page.$$eval('#compare-table tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  eq(rows.map((r) => r[0]), avail, 'one row per available backend');
  for (const r of rows) ok(parseFloat(r[1]) > 0 && parseFloat(r[2]) > 0, `timings of ${r[0]}: ${r}`);
  eq(await page.locator('#compare-chart rect.bar[data-backend]').count(), 2 * avail.length, 'two bars per backend');
  ok(await page.isVisible('#compare-chart'), 'the comparison chart is shown');
});

test('download links point at the original and the factors', async () => {
  eq(await page.getAttribute('#dl-original', 'href'), `/slices/${info.id}/original`, 'original link');
  eq(await page.getAttribute('#dl-factors', 'href'), `/slices/${info.id}/factors`, 'factors link');
  const { res } = await get(server.base, `/slices/${info.id}/factors`);
  eq(res.status, 200, 'factors download works');
});

test('screenshots at 1280x800 and 400x800', async () => {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-1280x800.png') });
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-1280x800-full.png'), fullPage: true });
  await page.setViewportSize({ width: 400, height: 800 });
  // Narrow: the panels stack, nothing scrolls sideways.
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  ok(widths[0] <= widths[1], `no horizontal scroll at 400 px (${widths})`);
  const side = await page.locator('.side').boundingBox(), main = await page.locator('#viewer').boundingBox();
  ok(main.y >= side.y + side.height - 1, 'viewer stacks below the slice list');
  await page.evaluate(() => window.scrollTo(0, 0));
  // The charts redraw at the new width after a resize.
  await page.waitForFunction(() => {
    const c = document.getElementById('spectrum');
    return Math.abs(c.viewBox.baseVal.width - c.getBoundingClientRect().width) < 2;
  }, null, WAIT);
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-400x800.png') });
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-400x800-full.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  for (const f of ['page-1280x800.png', 'page-400x800.png']) ok(fs.statSync(path.join(ARTIFACTS, f)).size > 1000, f);
});

test('a bad upload shows the API error message', async () => {
  const text = Buffer.from('this is not a PNG\n');
  const form = new FormData();
  form.append('file', new Blob([text], { type: 'text/plain' }), 'notes.txt');
  const res = await fetch(server.base + '/slices', { method: 'POST', body: form });
  const err = (await res.json()).error;
  ok(res.status >= 400 && err.message, `API refuses text: ${res.status}`);
  await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: text });
  await page.waitForSelector('#upload-msg.error', WAIT);
  const msg = await page.textContent('#upload-msg');
  ok(msg.includes(err.message), `shown: ${msg}`);
  ok(msg.includes(String(res.status)) && msg.includes(err.code), 'status and code shown');
});

test('a dropped 16-bit slice gets a window; the page windows as the server does', async () => {
  const w = 64, h = 48, v = new Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) v[y * w + x] = Math.round(20000 + 15000 * Math.sin(x / 7) * Math.cos(y / 5) + 97 * ((x * 7 + y * 13) % 11));
  // Dropped on the drop zone, as a user dragging a file from the desktop would.
  const png16 = [...encodeGray16(w, h, v)];
  await page.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'phantom16.png', { type: 'image/png' }));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, png16);
  await page.waitForSelector('#window-panel:not([hidden])', WAIT);
  await page.waitForSelector('#cv-recon[data-k]', WAIT);
  const id = await page.$eval('#slice-list li.current', (li) => li.dataset.id);
  const meta = (await getJson(server.base, `/slices/${id}`)).body;
  eq(meta.bit_depth, 16, '16-bit slice stored');

  // Set a window by hand and check both images against the API's formula/pixels.
  await page.fill('#win-width', '9000');
  await atK(page, 3, () => page.fill('#k-number', '3'));
  const c = Number(await page.inputValue('#win-center')), ww = Number(await page.inputValue('#win-width'));
  eq(ww, 9000, 'window width');
  const src = await page.getAttribute('#cv-recon', 'data-src');
  ok(src.includes(`window-center=${c}`) && src.includes('window-width=9000'), `windowed request ${src}`);
  await checkRecon(page, server.base);
  const orig = decodeGray((await get(server.base, `/slices/${id}/original`)).buf);
  eq(orig.depth, 16, 'original served at 16 bits');
  const want = Array.from(orig.data, (x) => Math.min(255, Math.max(0, Math.round((x - c + ww / 2) / ww * 255))));
  const got = await canvasGray(page, 'cv-original');
  eq(firstMismatch(got.gray, want), -1, 'original windowed like API.md says');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-16bit-window.png') });
});

test('deleting asks, then removes the slice', async () => {
  const id = await page.$eval('#slice-list li.current', (li) => li.dataset.id);
  let asked = '';
  page.once('dialog', (d) => { asked = d.message(); d.accept(); });
  await page.click(`#slice-list li[data-id="${id}"] button.del`);
  await page.waitForSelector(`#slice-list li[data-id="${id}"]`, { state: 'detached', ...WAIT });
  ok(asked.includes('Delete'), `confirm asked: ${asked}`);
  eq((await get(server.base, `/slices/${id}`)).res.status, 404, 'slice gone from the server');
  eq(await page.locator('#slice-list li').count(), 1, 'the other slice stays');
});

test('with --api-key --auth-reads the page needs the key, then works', async () => {
  const secured = await startServer(['--api-key', KEY, '--auth-reads']);
  try {
    const denied = await getJson(secured.base, '/slices');
    eq(denied.status, 401, 'reads need the key');
    const pg = await newPage(secured.base);
    await pg.waitForSelector('#status:not([hidden])', WAIT);
    ok((await pg.textContent('#status')).includes(denied.body.error.message), 'the 401 message is shown');
    // /backends needs no key: the selector still fills.
    await pg.waitForFunction(() => document.querySelectorAll('#backend option').length === 9, null, WAIT);

    await pg.fill('#apikey', KEY);
    await pg.click('#apikey-save');
    await pg.waitForSelector('#status[hidden]', { state: 'attached', ...WAIT });
    eq(await pg.evaluate(() => sessionStorage.getItem('svdslice.apiKey')), KEY, 'key kept in sessionStorage');

    await pg.setInputFiles('#file', SLICE);
    await pg.waitForSelector('#slice-list li[data-id]', WAIT);
    await pg.waitForSelector('#cv-recon[data-k]', WAIT);
    const auth = { Authorization: `Bearer ${KEY}` };
    const id = await pg.getAttribute('#slice-list li', 'data-id');
    await atK(pg, 9, () => pg.fill('#k-number', '9'));
    await checkRecon(pg, secured.base, auth);
    await checkQuality(pg, secured.base, id, 9, auth);
    await pg.waitForFunction(() => {
      const img = document.querySelector('#slice-list li img');
      return img && img.complete && img.naturalWidth > 0;
    }, null, WAIT);
    ok((await pg.getAttribute('#slice-list li img', 'src')).startsWith('blob:'), 'thumbnail fetched with the key');
    await pg.close();
  } finally {
    await secured.stop();
  }
});

test('no script errors on the page', () => {
  eq(pageErrors, [], 'page errors');
});
