// page.test.mjs - drives the web page in Debian's Chromium against a real `svdslice serve`
//
// Every expected value comes from the server's own HTTP answers, fetched and decoded
// here independently of the page (png.mjs), never from the page's code.
// Env (set by ctest): SVDSLICE_BIN, SVDSLICE_TEST_DATA, SVDSLICE_ARTIFACTS.
import { test, before, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { decodeGray, encodeGray16 } from './png.mjs';
import { startServer } from './server.mjs';
import {
  ARTIFACTS, DATA, WAIT, eq, ok, checkCount, launch, get, getJson, canvasGray, firstMismatch,
  atK, waitIdle, checkRecon, checkQuality, windowed, phantom12,
} from './harness.mjs';

const SLICE = path.join(DATA, 'BrainProtonDensitySlice.png');
const BACKENDS = ['loops3', 'loops2', 'loops1', 'blocked', 'threads', 'blas', 'cuda', 'cublas'];
const KEY = 'browser-test-key-7f3a';

let server, browser, context, page;
const pageErrors = [];

async function newPage(base) {
  const pg = await context.newPage();
  pg.on('pageerror', (e) => pageErrors.push(String(e)));
  await pg.setViewportSize({ width: 1440, height: 900 });
  await pg.goto(base + '/');
  return pg;
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  ok(fs.existsSync(SLICE), `test slice ${SLICE} (SVDSLICE_TEST_DATA)`);
  server = await startServer();
  browser = await launch();
  context = browser.context;
  page = await newPage(server.base);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
  console.log(`# browser checks made: ${checkCount()}`);
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
  // The thumbnail is the original, scaled to 96 px on its long side (aspect kept).
  const thumb = await page.$eval('#slice-list li img', (i) => [i.src.slice(0, 5), i.naturalWidth, i.naturalHeight]);
  eq(thumb, ['blob:', Math.round(info.width * 96 / Math.max(info.width, info.height)), Math.round(info.height * 96 / Math.max(info.width, info.height))],
     'thumbnail via a blob URL, 96 px on the long side');
  await page.waitForSelector('#cv-recon[data-k]', WAIT);
  eq(await page.getAttribute('#k-range', 'max'), String(info.rank), 'slider max is the rank');
  // 8-bit slices open at the whole 0-255 scale: the images are the stored values unchanged.
  eq([await page.inputValue('#win-center'), await page.inputValue('#win-width')], ['127.5', '255'], '8-bit window is 0-255');
  // The sizes say which is bigger, with units.
  const sizes = await page.textContent('#slice-sizes');
  const kib = (n) => `${(n / 1024).toFixed(n / 1024 >= 100 ? 0 : 1)} KiB`;
  ok(sizes.includes(`stored ${kib(info.stored_bytes)}`) && sizes.includes(`upload ${kib(info.upload_bytes)}`),
     `stored beside upload, in KiB: ${sizes}`);
  ok(sizes.includes('original kept losslessly'), `the original kept is said: ${sizes}`);

  // The original canvas holds the stored pixels exactly.
  const want = decodeGray((await get(server.base, `/slices/${info.id}/original`)).buf);
  const got = await canvasGray(page, 'cv-original');
  eq([got.width, got.height], [info.width, info.height], 'original size');
  eq(firstMismatch(got.gray, want.data), -1, 'original pixels');
});

test('the slider (keyboard, value, number field) shows /reconstruct and /quality exactly', async () => {
  const range = page.locator('#k-range');
  // Here the difference map follows each k (viewer.test.mjs checks the fixed scale).
  await page.uncheck('#diff-lock');
  await atK(page, 1, async () => { await range.focus(); await page.keyboard.press('Home'); });
  let recon = await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 1);

  // The heat map's scale is max |original - reconstruction| of the raw values.
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
  eq(await page.locator('#spectrum polyline').count(), 2, 'spectrum draws the energy left out and the singular values');

  await atK(page, 12, () => page.fill('#k-number', '12'));
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, 12);
  eq(await page.inputValue('#k-range'), '12', 'slider follows the number field');

  const timing = await page.textContent('#timing');
  ok(/kernel [0-9.]+ ms/.test(timing) && /encode [0-9.]+ ms/.test(timing), `Server-Timing shown: ${timing}`);
});

test('a burst of slider moves: one request at a time, the last k wins', async () => {
  const seen = [];
  const onReq = (r) => { if (r.url().includes('/reconstruct?')) seen.push(r.url()); };
  await waitIdle(page);
  page.on('request', onReq);
  await page.waitForSelector('#cv-recon[data-k]', WAIT);
  await atK(page, 90, () => page.evaluate(() => {
    const el = document.getElementById('k-range');
    for (let k = 81; k <= 90; k++) { el.value = String(k); el.dispatchEvent(new Event('input', { bubbles: true })); }
  }));
  page.off('request', onReq);
  // The first move starts a request; the nine others only change what is wanted next.
  const before90 = seen.slice(0, seen.findIndex((u) => u.includes('k=90')) + 1);
  ok(before90.length >= 1 && before90.length <= 2, `10 moves sent ${before90.length} requests before k=90: ${before90}`);
  ok(before90.at(-1).includes('k=90'), 'the last k is fetched');
  await checkRecon(page, server.base);
});

/* svdslice_requests_total for /reconstruct with that status, from /metrics. */
async function reconCount(base, status) {
  const { buf } = await get(base, '/metrics');
  const re = new RegExp(`^svdslice_requests_total\\{route="/reconstruct",status="${status}"\\} (\\d+)$`, 'm');
  const m = re.exec(buf.toString('utf8'));
  return m ? Number(m[1]) : 0;
}

test('going back to a k already seen makes no new render on the server', async () => {
  // 37 and 90 were shown above; the page keeps what it fetched.
  await waitIdle(page);
  const reqs = [];
  const onReq = (r) => { if (r.url().includes('/reconstruct?')) reqs.push(r.url()); };
  page.on('request', onReq);
  const before = await reconCount(server.base, 200);
  ok(before > 0, `the server counted the page's renders (${before})`);
  for (const k of [37, 90]) {
    await atK(page, k, () => page.fill('#k-number', String(k)));
    await waitIdle(page);
  }
  page.off('request', onReq);
  eq(reqs.filter((u) => /[?&]k=(37|90)&/.test(u)), [], 'no request for a k already seen');
  // Whatever else the server rendered meanwhile was a neighbour the page prefetched.
  eq(await reconCount(server.base, 200), before + reqs.length, 'no render beyond the prefetches');
  await checkRecon(page, server.base);
});

test('choosing a backend runs it and shows X-Backend', async () => {
  const k = Number(await page.inputValue('#k-range'));
  await atK(page, k, () => page.selectOption('#backend', 'loops1'));
  eq(await page.getAttribute('#cv-recon', 'data-backend'), 'loops1', 'X-Backend of the shown image');
  ok((await page.textContent('#timing')).includes('loops1'), 'timing line names the backend');
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, info.id, k);
  await atK(page, k, () => page.selectOption('#backend', 'auto'));
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

test('download links point at the reconstruction, the original and the factors', async () => {
  const k = await page.inputValue('#k-range'), backend = await page.inputValue('#backend');
  eq(await page.getAttribute('#dl-recon', 'href'), `/reconstruct?id=${info.id}&k=${k}&backend=${backend}`, 'reconstruction link');
  eq(await page.getAttribute('#dl-recon', 'download'), `BrainProtonDensitySlice-k${k}.png`, 'its file name says k');
  eq(await page.getAttribute('#dl-original', 'href'), `/slices/${info.id}/original`, 'original link');
  eq(await page.getAttribute('#dl-factors', 'href'), `/slices/${info.id}/factors`, 'factors link');
  const { res } = await get(server.base, `/slices/${info.id}/factors`);
  eq(res.status, 200, 'factors download works');
});

test('screenshots at 1440x900 and 390x844 (phone: one large view, a wide slider)', async () => {
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await waitIdle(page);
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-1440x900.png') });
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-1440x900-full.png'), fullPage: true });
  const wide = await page.locator('#fig-recon .vp').boundingBox();
  ok(wide.width >= 300, `three images side by side, each ${wide.width} px wide`);
  await page.setViewportSize({ width: 390, height: 844 });
  // Narrow: nothing scrolls sideways; the viewer comes first, the list below.
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  ok(widths[0] <= widths[1], `no horizontal scroll at 390 px (${widths})`);
  const side = await page.locator('.side').boundingBox(), main = await page.locator('#viewer').boundingBox();
  ok(side.y >= main.y + main.height - 1, 'with a slice shown, the list stacks below the viewer');
  // One large view (the others are a tab away) and a slider across the screen.
  const shown = await page.$$eval('#images figure', (fs) => fs.filter((f) => f.getBoundingClientRect().width > 0).map((f) => f.id));
  eq(shown, ['fig-recon'], 'one image at a time on a phone');
  const vp = await page.locator('#fig-recon .vp').boundingBox(), slider = await page.locator('#k-range').boundingBox();
  ok(vp.width >= 340 && vp.y + vp.height <= 844, `the image is ${vp.width}x${vp.height} px and on the first screen`);
  ok(slider.width >= 330 && slider.height >= 30, `slider ${slider.width}x${slider.height} px`);
  await page.click('label:has(input[name="view"][value="diff"])');
  eq(await page.$$eval('#images figure', (fs) => fs.filter((f) => f.getBoundingClientRect().width > 0).map((f) => f.id)), ['fig-diff'], 'the tab shows the difference');
  await page.click('label:has(input[name="view"][value="recon"])');
  await page.evaluate(() => window.scrollTo(0, 0));
  // The charts redraw at the new width after a resize.
  await page.waitForFunction(() => {
    const c = document.getElementById('spectrum');
    return Math.abs(c.viewBox.baseVal.width - c.getBoundingClientRect().width) < 2;
  }, null, WAIT);
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-390x844.png') });
  await page.screenshot({ path: path.join(ARTIFACTS, 'page-390x844-full.png'), fullPage: true });
  await page.setViewportSize({ width: 1440, height: 900 });
  for (const f of ['page-1440x900.png', 'page-390x844.png']) ok(fs.statSync(path.join(ARTIFACTS, f)).size > 1000, f);
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

test('a dropped 16-bit slice (12-bit data) gets a tissue window; the page windows as the server does', async () => {
  const w = 96, h = 80, v = phantom12(w, h);
  // Dropped on the drop zone, as a user dragging a file from the desktop would.
  const png16 = [...encodeGray16(w, h, v)];
  await page.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'phantom12.png', { type: 'image/png' }));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, png16);
  await page.waitForFunction(() => document.getElementById('slice-title').textContent === 'phantom12.png', null, WAIT);
  await page.waitForSelector('#cv-recon[data-k]', WAIT);
  const id = await page.$eval('#slice-list li.current', (li) => li.dataset.id);
  const meta = (await getJson(server.base, `/slices/${id}`)).body;
  eq(meta.bit_depth, 16, '16-bit slice stored');

  // The default window is the 1st..99th percentile of the nonzero pixels (not the air).
  const nz = v.filter((x) => x > 0).sort((a, b) => a - b);
  const pct = (p) => nz[Math.max(1, Math.ceil(p * nz.length)) - 1];
  const [lo, hi] = [pct(0.01), pct(0.99)];
  eq([Number(await page.inputValue('#win-center')), Number(await page.inputValue('#win-width'))], [(lo + hi) / 2, hi - lo], 'tissue window');
  // The reconstruction is fetched raw (16-bit) and windowed in the page.
  eq(new URL(await page.getAttribute('#cv-recon', 'data-src'), server.base).searchParams.has('window-center'), false, 'raw request');

  // Set a window by hand and check both images against the server's windowing.
  await page.fill('#win-width', '900');
  await atK(page, 3, () => page.fill('#k-number', '3'));
  const c = Number(await page.inputValue('#win-center')), ww = Number(await page.inputValue('#win-width'));
  eq(ww, 900, 'window width');
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, id, 3);
  const orig = decodeGray((await get(server.base, `/slices/${id}/original`)).buf);
  eq(orig.depth, 16, 'original served at 16 bits');
  const want = Array.from(orig.data, (x) => windowed(x, c, ww));
  const got = await canvasGray(page, 'cv-original');
  eq(firstMismatch(got.gray, want), -1, 'original windowed like API.md says');

  // The thumbnail is windowed too: 12-bit data as 16-bit PNG would be nearly black.
  await page.waitForFunction((sid) => {
    const img = document.querySelector(`#slice-list li[data-id="${sid}"] img`);
    return img && img.complete && img.naturalWidth > 0;
  }, id, WAIT);
  const brightest = await page.$eval(`#slice-list li[data-id="${id}"] img`, (img) => {
    const cv = document.createElement('canvas');
    cv.width = img.naturalWidth; cv.height = img.naturalHeight;
    const ctx = cv.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, cv.width, cv.height).data;
    let max = 0;
    for (let i = 0; i < d.length; i += 4) max = Math.max(max, d[i]);
    return max;
  });
  ok(brightest >= 200, `16-bit thumbnail is windowed (brightest ${brightest}; unwindowed 12-bit data tops out at 16)`);
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

test('a slice stored without its original: the left view is the stored rank, no difference map', async () => {
  const png = fs.readFileSync(SLICE);
  const res = await fetch(`${server.base}/slices?name=lossy&psnr=35&keep-original=false`, { method: 'POST', body: png });
  ok(res.status === 201 || res.status === 200, `upload without the original: ${res.status}`);
  const info = await res.json();
  eq(info.original_kept, false, 'the API kept no original');
  const pg = await newPage(server.base);
  await pg.waitForSelector(`#slice-list li[data-id="${info.id}"]`, WAIT);
  await pg.click(`#slice-list li[data-id="${info.id}"]`);
  await pg.waitForSelector('#cv-recon[data-k]', WAIT);
  eq(await pg.textContent('#orig-caption'), 'Stored rank (original not kept)', 'the left image is not called the original');
  ok(await pg.evaluate(() => document.body.classList.contains('no-original')), 'no-original mode');
  ok(await pg.isVisible('#diff-none'), 'the missing difference map is explained');
  eq(await pg.evaluate(() => getComputedStyle(document.querySelector('#cv-diff')).visibility), 'hidden', 'no difference map drawn');
  eq(await pg.getAttribute('#dl-original', 'href'), `/reconstruct?id=${info.id}`, 'the left download is the stored rank');
  // The left view shows exactly what the server serves at the stored rank.
  const stored = decodeGray((await get(server.base, `/reconstruct?id=${info.id}`)).buf);
  const c = Number(await pg.inputValue('#win-center')), w = Number(await pg.inputValue('#win-width'));
  const left = await canvasGray(pg, 'cv-original');
  eq(firstMismatch(left.gray, stored.data.map((v) => windowed(v, c, w))), -1, 'the left view is the stored rank, exactly');
  // Back to a slice with its original: the original and the map return.
  await pg.click('#slice-list li:not([data-id="' + info.id + '"])');
  await pg.waitForFunction(() => document.querySelector('#orig-caption').textContent === 'Original', null, WAIT);
  ok(!(await pg.evaluate(() => document.body.classList.contains('no-original'))), 'the map is back');
  await pg.close();
});

test('no script errors on the page', () => {
  eq(pageErrors, [], 'page errors');
});
