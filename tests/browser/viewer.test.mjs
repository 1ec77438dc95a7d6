// viewer.test.mjs - the viewer's interactions, driven with real mouse, wheel and keyboard
// events in Debian's Chromium against a real `svdslice serve`: live scrubbing (images per
// second of drag), zoom/pan, window/level, value under the cursor, flick, difference
// scale, spectrum target, the address, downloads, bad input, a deleted slice, a server gone.
//
// Expected values come from the server's HTTP answers decoded here (png.mjs), never
// from the page's code.
import { test, before, after } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { encodeGray16, decodeGray } from './png.mjs';
import { startServer } from './server.mjs';
import {
  ARTIFACTS, DATA, WAIT, eq, ok, near, checkCount, launch, get, getJson, getGray, upload,
  canvasGray, canvasRgb, firstMismatch, atK, waitIdle, checkRecon, checkQuality, windowed,
  decodeRgb, phantom12,
} from './harness.mjs';

const SLICE = path.join(DATA, 'BrainProtonDensitySlice.png');
const ZOOMS = [0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
const MIN_FPS = 20;

let server, browser, page, pd, ph;
const pageErrors = [];
const notFound = [];

/* Instruments the page's fetch (the page calls the global each time): counts the
 * /reconstruct and /quality requests and how many are unfinished at once; a request
 * ends when the page has its body. Records each new image (data-k set) with its time. */
async function instrument(pg) {
  await pg.evaluate(() => {
    if (window.__net) { Object.assign(window.__net, { cur: 0, max: 0, urls: [] }); window.__frames.length = 0; window.__inputs.length = 0; return; }
    const net = window.__net = { cur: 0, max: 0, urls: [] };
    const orig = window.fetch;
    window.fetch = function (input, init) {
      const url = String(input);
      if (!/\/(reconstruct|quality)\?/.test(url)) return orig.call(this, input, init);
      net.cur++;
      net.max = Math.max(net.max, net.cur);
      net.urls.push(url);
      let open = true;
      const end = () => { if (open) { open = false; net.cur--; } };
      return orig.call(this, input, init).then((res) => {
        for (const m of ['arrayBuffer', 'json', 'blob', 'text']) {
          const f = res[m].bind(res);
          res[m] = () => f().finally(end);
        }
        return res;
      }, (e) => { end(); throw e; });
    };
    window.__frames = [];
    const cv = document.getElementById('cv-recon');
    new MutationObserver(() => window.__frames.push([performance.now(), Number(cv.dataset.k)]))
      .observe(cv, { attributes: true, attributeFilter: ['data-k'] });
    window.__drag = {};
    window.__inputs = [];
    document.getElementById('k-range').addEventListener('input', () => window.__inputs.push(performance.now()));
    document.addEventListener('mousedown', () => { window.__drag.down = performance.now(); }, true);
    document.addEventListener('mouseup', () => { window.__drag.up = performance.now(); }, true);
  });
}

async function newPage(base, hash = '') {
  const pg = await browser.context.newPage();
  pg.on('pageerror', (e) => pageErrors.push(String(e)));
  await pg.setViewportSize({ width: 1440, height: 900 });
  await pg.goto(base + '/' + hash);
  return pg;
}

/* Geometry of the three canvases in their viewports: [left, top, width, height]
 * each, CSS px, positions rounded (each canvas snaps to whole pixels of the page). */
async function geometry(pg) {
  return pg.$$eval('#images canvas.px', (cs) => cs.map((c) => {
    const r = c.getBoundingClientRect(), v = c.parentElement.getBoundingClientRect();
    return [Math.round(r.left - v.left), Math.round(r.top - v.top), r.width, r.height];
  }));
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  ok(fs.existsSync(SLICE), `test slice ${SLICE} (SVDSLICE_TEST_DATA)`);
  server = await startServer();
  ph = await upload(server.base, encodeGray16(96, 80, phantom12(96, 80)), 'phantom12');
  pd = await upload(server.base, fs.readFileSync(SLICE), 'pd');
  pd = (await getJson(server.base, `/slices/${pd.id}`)).body;
  browser = await launch();
  page = await browser.context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('response', (r) => { if (r.status() === 404) notFound.push(r.url()); });
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(`${server.base}/#id=${pd.id}`);
  await page.waitForSelector('#cv-recon[data-k]', WAIT);
  await waitIdle(page);
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
  console.log(`# browser checks made: ${checkCount()}`);
});

test('favicon served and linked; nothing 404s while the page loads; the first inputs are k and the upload', async () => {
  eq(notFound, [], 'no 404 while loading');
  eq(await page.getAttribute('link[rel=icon]', 'href'), '/favicon.svg', 'icon link');
  const { res, buf } = await get(server.base, '/favicon.svg');
  eq([res.status, res.headers.get('content-type')], [200, 'image/svg+xml'], 'favicon type');
  ok(buf.toString().includes('<svg'), 'an SVG');
  const first = await page.evaluate(() => [document.querySelector('input[type=range]').id,
    document.querySelector('label[for=k-range]').textContent, document.querySelector('input[type=file]').id]);
  eq(first[0], 'k-range', 'the k slider is the first range input');
  ok(/\bk\b/.test(first[1]), `labelled k: ${first[1]}`);
  eq(first[2], 'file', 'the upload is the first file input');
});

test(`dragging the k slider shows images while dragging (≥ ${MIN_FPS} per second), one request at a time`, async () => {
  await atK(page, 1, async () => { await page.focus('#k-range'); await page.keyboard.press('Home'); });
  await waitIdle(page);
  await instrument(page);
  const box = await page.locator('#k-range').boundingBox();
  const y = box.y + box.height / 2, xa = box.x + 8, xb = box.x + box.width - 8;
  await page.mouse.move(xa, y);
  await page.mouse.down();
  // 120 pointer moves left to right, each sent once the page has taken the last
  // (Playwright waits for Chromium's ack), so as fast as a real mouse or slower.
  const moves = 120;
  for (let i = 1; i <= moves; i++) await page.mouse.move(xa + (xb - xa) * i / moves, y);
  await page.mouse.up();
  eq(await page.inputValue('#k-range'), String(pd.rank), 'the drag ended at the rank');
  await page.waitForSelector(`#cv-recon[data-k="${pd.rank}"]`, WAIT);
  await waitIdle(page);
  const { frames, drag, net } = await page.evaluate(() => ({ frames: window.__frames, drag: window.__drag, net: window.__net }));
  const during = frames.filter(([t]) => t >= drag.down && t <= drag.up);
  const secs = (drag.up - drag.down) / 1000, fps = during.length / secs;
  const ks = during.map(([, k]) => k);
  const inputs = (await page.evaluate(() => window.__inputs)).filter((t) => t >= drag.down && t <= drag.up).length;
  console.log(`# drag: ${during.length} new images in ${secs.toFixed(2)} s of drag = ${fps.toFixed(1)} images/s ` +
              `(${inputs} slider input events, k ${ks[0]}..${ks.at(-1)}); ${net.urls.length} requests, at most ${net.max} in flight`);
  ok(fps >= MIN_FPS, `${fps.toFixed(1)} images per second of drag (want ≥ ${MIN_FPS})`);
  ok(ks.every((k, i) => i === 0 || k > ks[i - 1]), `the image follows the slider rightwards: ${ks}`);
  eq(net.max, 1, 'never more than one request in flight');
  await checkRecon(page, server.base);
  await checkQuality(page, server.base, pd.id, pd.rank);

  // Neighbours were prefetched while idle: one step back needs no request.
  const before = net.urls.filter((u) => u.includes('/reconstruct?')).length;
  await page.focus('#k-range');
  await page.keyboard.press('ArrowLeft');
  await page.waitForSelector(`#cv-recon[data-k="${pd.rank - 1}"]`, WAIT);
  const after1 = await page.evaluate(() => window.__net.urls.filter((u) => u.includes('/reconstruct?')));
  eq(after1.slice(before).filter((u) => u.includes(`k=${pd.rank - 1}&`)), [], 'k - 1 came from the prefetch');
  await waitIdle(page);
  await checkRecon(page, server.base);
});

test('the k field: out-of-range k is clamped and said next to the field; a non-number is refused', async () => {
  const field = page.locator('#k-number');
  await field.fill('');
  ok((await page.textContent('#k-msg')).includes('whole number'), 'empty field: message');
  await page.keyboard.type('250');
  await page.waitForSelector(`#cv-recon[data-k="${pd.rank}"]`, WAIT);
  eq(await page.inputValue('#k-range'), String(pd.rank), 'k clamped to the rank');
  const msg = await page.textContent('#k-msg');
  ok(msg.includes('250') && msg.includes(`rank ${pd.rank}`) && msg.includes(`k = ${pd.rank}`), `said: ${msg}`);
  const fb = await field.boundingBox(), mb = await page.locator('#k-msg').boundingBox();
  ok(Math.abs(mb.y - fb.y) < 80, 'the message is next to the field');
  await page.keyboard.press('Tab');
  eq(await field.inputValue(), String(pd.rank), 'the field shows the clamped k after leaving it');
  await field.fill('0');
  await page.waitForSelector('#cv-recon[data-k="1"]', WAIT);
  ok((await page.textContent('#k-msg')).includes('starts at 1'), 'k below 1 clamped to 1 and said');
  await field.fill('');
  await page.keyboard.type('1e');
  ok((await page.textContent('#k-msg')).includes('still k = 1'), 'not a number: k kept and said');
  eq(await page.inputValue('#k-range'), '1', 'slider unchanged');
  await page.keyboard.press('Tab');
  eq(await field.inputValue(), '1', 'the field shows k again');
  await atK(page, 40, () => field.fill('40'));
  eq(await page.textContent('#k-msg'), '', 'a valid k clears the message');
});

test('ctrl+wheel and keys zoom the three views together; integer zoom is pixel-exact', async () => {
  await waitIdle(page);
  await page.locator('#images').scrollIntoViewIfNeeded();
  const vp = page.locator('#fig-recon .vp');
  const b = await vp.boundingBox();
  eq(await page.getAttribute('#images', 'data-zoom'), 'fit', 'starts fitted');
  const fitZ = (await geometry(page))[1][2] / pd.width;
  const next = ZOOMS.find((z) => z > fitZ + 1e-9);
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await page.keyboard.down('Control');
  await page.mouse.wheel(0, -100);
  await page.keyboard.up('Control');
  await page.waitForSelector(`#images[data-zoom="${next}"]`, WAIT);
  const g = await geometry(page);
  eq(g[0], g[1], 'original and reconstruction zoomed together');
  eq(g[2], g[1], 'difference zoomed together');
  eq(g[1][2], pd.width * next, 'CSS width is zoom × image width');
  // A plain wheel scrolls the page, it does not zoom.
  await page.mouse.wheel(0, -100);
  await page.waitForTimeout(100);
  eq(await page.getAttribute('#images', 'data-zoom'), String(next), 'plain wheel: no zoom');
  await vp.focus();
  await page.keyboard.press('=');
  const z2 = ZOOMS.find((z) => z > next);
  await page.waitForSelector(`#images[data-zoom="${z2}"]`, WAIT);
  await page.keyboard.press('1');
  await page.waitForSelector('#images[data-zoom="1"]', WAIT);
  await page.keyboard.press('0');
  await page.waitForSelector('#images[data-zoom="fit"]', WAIT);
  await page.click('#zoom-1');
  for (const z of [2, 3, 4]) { await page.click('#zoom-in'); await page.waitForSelector(`#images[data-zoom="${z}"]`, WAIT); }

  // At 4x each image pixel is a 4x4 block of exactly its gray on screen.
  const shot = decodeRgb(await page.screenshot({ clip: { x: Math.floor(b.x), y: Math.floor(b.y), width: Math.floor(b.width), height: Math.floor(b.height) } }));
  const cvRect = await page.$eval('#cv-recon', (c) => { const r = c.getBoundingClientRect(); return [r.left, r.top]; });
  const ox = cvRect[0] - Math.floor(b.x), oy = cvRect[1] - Math.floor(b.y);
  ok(Number.isInteger(ox) && Number.isInteger(oy), `image placed at whole pixels (${ox}, ${oy})`);
  const shown = await canvasGray(page, 'cv-recon');
  let bad = null, n = 0;
  for (let sy = 0; sy < shot.height && !bad; sy++) for (let sx = 0; sx < shot.width; sx++) {
    const ix = Math.floor((sx - ox) / 4), iy = Math.floor((sy - oy) / 4);
    if (ix < 0 || iy < 0 || ix >= pd.width || iy >= pd.height) continue;
    const want = shown.gray[iy * pd.width + ix], got = shot.rgb(sx, sy);
    n++;
    if (got[0] !== want || got[1] !== want || got[2] !== want) { bad = `screen (${sx},${sy}) = ${got} but image (${ix},${iy}) = ${want}`; break; }
  }
  eq(bad, null, `pixel-exact at 4x (${n} screen pixels)`);
  ok(n > 100000, `compared ${n} screen pixels`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer-zoom4.png') });
});

test('the value under the cursor is the raw value of the original and of the reconstruction', async () => {
  const g = (await geometry(page))[1], z = g[2] / pd.width;
  const b = await page.locator('#fig-recon .vp').boundingBox();
  const ix = Math.floor((b.width / 2 - g[0]) / z), iy = Math.floor((b.height / 3 - g[1]) / z);
  await page.mouse.move(b.x + g[0] + (ix + 0.5) * z, b.y + g[1] + (iy + 0.5) * z);
  await page.waitForSelector(`#readout[data-x="${ix}"][data-y="${iy}"]`, WAIT);
  const k = Number(await page.getAttribute('#cv-recon', 'data-k'));
  const orig = await getGray(server.base, `/slices/${pd.id}/original`);
  const recon = await getGray(server.base, new URL(await page.getAttribute('#cv-recon', 'data-src'), server.base).pathname + new URL(await page.getAttribute('#cv-recon', 'data-src'), server.base).search);
  const i = iy * pd.width + ix;
  const r = await page.$eval('#readout', (el) => ({ ...el.dataset, text: el.textContent }));
  eq([Number(r.orig), Number(r.recon), Number(r.k)], [orig.data[i], recon.data[i], k], `values at (${ix}, ${iy})`);
  ok(r.text.includes('gray levels') && r.text.includes(`difference`), `readout with units: ${r.text}`);
});

test('pan with the middle button, space+drag and arrow keys, all three views together', async () => {
  const vp = page.locator('#fig-recon .vp'), b = await vp.boundingBox();
  await vp.focus();
  await page.keyboard.press('1');
  for (const z of [2, 3, 4]) { await page.keyboard.press('='); await page.waitForSelector(`#images[data-zoom="${z}"]`, WAIT); }
  const cx = b.x + b.width / 2, cy = b.y + b.height / 2;
  const g0 = (await geometry(page))[1];
  const win0 = [await page.inputValue('#win-center'), await page.inputValue('#win-width')];
  await page.mouse.move(cx, cy);
  await page.mouse.down({ button: 'middle' });
  await page.mouse.move(cx + 30, cy + 20, { steps: 4 });
  await page.mouse.up({ button: 'middle' });
  let g = await geometry(page);
  eq([g[1][0], g[1][1]], [g0[0] + 30, g0[1] + 20], 'middle-button drag pans');
  eq(g[0], g[1], 'original panned with it');
  eq(g[2], g[1], 'difference panned with it');
  await page.keyboard.down('Space');
  await page.mouse.down();
  await page.mouse.move(cx - 10, cy - 40, { steps: 4 });
  await page.mouse.up();
  await page.keyboard.up('Space');
  g = await geometry(page);
  eq([g[1][0], g[1][1]], [g0[0] - 10, g0[1] - 40], 'space + left drag pans');
  eq([await page.inputValue('#win-center'), await page.inputValue('#win-width')], win0, 'and does not touch the window');
  await vp.focus();
  await page.keyboard.press('ArrowRight');
  g = await geometry(page);
  eq(g[1][0], g0[0] - 10 - 32, 'arrow key pans');
  await page.keyboard.press('0');
  await page.waitForSelector('#images[data-zoom="fit"]', WAIT);
});

test('window/level by left-dragging on an 8-bit image; both images windowed as the server does', async () => {
  const vp = page.locator('#fig-original .vp'), b = await vp.boundingBox();
  const c0 = Number(await page.inputValue('#win-center')), w0 = Number(await page.inputValue('#win-width'));
  const orig = await getGray(server.base, `/slices/${pd.id}/original`);
  let lo = Infinity, hi = -Infinity;
  for (const v of orig.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const sens = (hi - lo) / 400;
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await page.mouse.down();
  await page.mouse.move(b.x + b.width / 2 - 120, b.y + b.height / 2 + 40, { steps: 6 });
  await page.mouse.up();
  const c = Number(await page.inputValue('#win-center')), w = Number(await page.inputValue('#win-width'));
  eq([c, w], [Math.round(c0 + 40 * sens), Math.round(w0 - 120 * sens)], 'right/left: width, up/down: center');
  await waitIdle(page);
  await checkRecon(page, server.base);
  const got = await canvasGray(page, 'cv-original');
  eq(firstMismatch(got.gray, Array.from(orig.data, (v) => windowed(v, c, w))), -1, 'original through the new window');
  ok((await page.textContent('#win-range')).includes(`${c - w / 2}`), 'the window is said as black..white values');
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer-window-drag.png') });
  await page.click('#win-type');
  eq([await page.inputValue('#win-center'), await page.inputValue('#win-width')], ['127.5', '255'], '0-255 preset');
});

test('flick shows the original in the reconstruction\'s place and back (key F and button)', async () => {
  await page.locator('#fig-recon .vp').focus();
  await page.keyboard.press('f');
  eq(await page.getAttribute('#flick', 'aria-pressed'), 'true', 'flicked');
  const o = await canvasGray(page, 'cv-original'), r = await canvasGray(page, 'cv-recon');
  eq(firstMismatch(r.gray, o.gray), -1, 'the reconstruction pane shows the original');
  ok((await page.textContent('#recon-caption')).includes('Original'), 'and says so');
  await page.keyboard.press('f');
  eq(await page.getAttribute('#flick', 'aria-pressed'), 'false', 'back');
  await checkRecon(page, server.base);
  await page.click('#flick');
  eq(await page.getAttribute('#flick', 'aria-pressed'), 'true', 'the button flicks too');
  await page.click('#flick');
  await checkRecon(page, server.base);
});

/* The heat map's colours by definition: 5 stops interpolated over 256 entries. */
const STOPS = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
function heat(i) {
  const x = i / 255 * 4, j = Math.min(3, Math.floor(x)), f = x - j;
  return STOPS[j].map((v, c) => Math.round(v + (STOPS[j + 1][c] - v) * f));
}

async function checkDiffPixels(pg, origRaw, reconRaw, max) {
  const d = await canvasRgb(pg, 'cv-diff');
  let bad = -1;
  for (let i = 0; i < origRaw.length && bad < 0; i++) {
    const idx = Math.min(255, Math.round(Math.abs(reconRaw[i] - origRaw[i]) * 255 / max)), want = heat(idx);
    if (d.data[4 * i] !== want[0] || d.data[4 * i + 1] !== want[1] || d.data[4 * i + 2] !== want[2]) bad = i;
  }
  eq(bad, -1, `difference pixel ${bad} coloured by |raw difference| on the scale 0..${max}`);
}

test('the difference scale stays fixed as k moves (colour bar), and can follow k', async () => {
  // Fixed by default, at the largest difference of the first k shown (the 99.9 % energy k).
  ok(await page.isChecked('#diff-lock'), 'fixed by default');
  const sv = pd.singular_values, tot = sv.reduce((a, s) => a + s * s, 0);
  let k0 = pd.rank, acc = 0;
  for (let i = 0; i < pd.rank; i++) { acc += sv[i] * sv[i]; if (acc / tot >= 0.999) { k0 = i + 1; break; } }
  const orig = await getGray(server.base, `/slices/${pd.id}/original`);
  const maxAt = async (k) => {
    const r = await getGray(server.base, `/reconstruct?id=${pd.id}&k=${k}&backend=blas`);
    return [r, r.data.reduce((m, v, i) => Math.max(m, Math.abs(v - orig.data[i])), 0)];
  };
  const [, m0] = await maxAt(k0);
  eq(await page.getAttribute('#cv-diff', 'data-max'), String(m0), `scale = largest difference at k = ${k0}`);
  await atK(page, 5, () => page.fill('#k-number', '5'));
  eq(await page.getAttribute('#cv-diff', 'data-max'), String(m0), 'unchanged at k = 5');
  const [r5, m5] = await maxAt(5);
  await checkDiffPixels(page, orig.data, r5.data, m0);
  ok((await page.textContent('#diff-top')).startsWith('≥'), 'the colour bar says brighter pixels are clipped');
  const bar = await canvasRgb(page, 'diff-bar');
  eq([bar.width, bar.data.slice(0, 3), bar.data.slice(255 * 4, 255 * 4 + 3)], [256, heat(0), heat(255)], 'colour bar: the map\'s 256 colours');
  await page.uncheck('#diff-lock');
  await page.waitForSelector(`#cv-diff[data-max="${m5}"]`, WAIT);
  await checkDiffPixels(page, orig.data, r5.data, m5);
  await page.fill('#diff-max', '10');
  await page.waitForSelector('#cv-diff[data-max="10"]', WAIT);
  ok(await page.isChecked('#diff-lock'), 'typing a scale fixes it');
  await page.fill('#diff-max', '0');
  ok((await page.textContent('#diff-msg')).includes('keeping 10'), 'a bad scale is refused, next to the field');
  eq(await page.getAttribute('#cv-diff', 'data-max'), '10', 'scale kept');
  await page.click('#diff-fit');
  await page.waitForSelector(`#cv-diff[data-max="${m5}"]`, WAIT);
});

test('spectrum: energy left out on a log axis, k marked; the k for a PSNR, estimated and measured', async () => {
  eq(await page.locator('#spectrum polyline.residual').count(), 1, 'the 1 - energy curve');
  eq(await page.getAttribute('#spectrum', 'data-k'), '5', 'k marked');
  const labels = await page.$$eval('#spectrum text.res-t', (ts) => ts.map((t) => t.textContent));
  ok(labels.includes('100 %') && labels.includes('1 %') && labels.includes('0.01 %'), `log axis in %: ${labels}`);
  // The legend sits above the plot frame, not over the curves.
  const [legendBottom, frameTop] = await page.evaluate(() => {
    const s = document.getElementById('spectrum'), lg = [...s.querySelectorAll('g > g')].at(-1), fr = s.querySelector('rect.frame');
    return [lg.getBoundingClientRect().bottom, fr.getBoundingClientRect().top];
  });
  ok(legendBottom <= frameTop + 1, `legend above the plot (${legendBottom} <= ${frameTop})`);

  const P = 30, orig = await getGray(server.base, `/slices/${pd.id}/original`);
  let lo = Infinity, hi = -Infinity;
  for (const v of orig.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const R = hi - lo, sv = pd.singular_values, N = pd.width * pd.height;
  let kEst = 0;
  for (let k = 1; k <= pd.rank && !kEst; k++) {
    let tail = 0;
    for (let i = k; i < sv.length; i++) tail += sv[i] * sv[i];
    if (tail / N <= R * R / 10 ** (P / 10)) kEst = k;
  }
  await page.fill('#target-psnr', String(P));
  await page.waitForSelector(`#target-est[data-k="${kEst}"]`, WAIT);
  ok((await page.textContent('#target-est')).includes('estimate'), 'the estimate says it is one');
  await page.click('#target-measure');
  await page.waitForSelector('#target-measured[data-k]', { timeout: 120000 });
  const kM = Number(await page.getAttribute('#target-measured', 'data-k'));
  const psnr = async (k) => 10 * Math.log10(R * R / (await getJson(server.base, `/quality?id=${pd.id}&k=${k}&backend=blas`)).body.mse);
  ok(await psnr(kM) >= P, `k = ${kM} reaches ${P} dB`);
  if (kM > 1) ok(await psnr(kM - 1) < P, `k = ${kM - 1} does not`);
  console.log(`# PSNR ${P} dB over the data range: k ≈ ${kEst} estimated from the singular values, k = ${kM} measured`);
  await page.click('#target-go');
  await page.waitForSelector(`#cv-recon[data-k="${kM}"]`, WAIT);
});

test('the address keeps id, k, backend and window; opening it restores them', async () => {
  await atK(page, 40, () => page.fill('#k-number', '40'));
  await atK(page, 40, () => page.selectOption('#backend', 'blocked'));
  await page.click('#win-full');
  const c = await page.inputValue('#win-center'), w = await page.inputValue('#win-width');
  await page.waitForFunction(() => location.hash.includes('backend=blocked') && location.hash.includes('window-width'), null, WAIT);
  const hash = await page.evaluate(() => location.hash);
  const p = new URLSearchParams(hash.slice(1));
  eq([p.get('id'), p.get('k'), p.get('backend'), p.get('window-center'), p.get('window-width')], [pd.id, '40', 'blocked', c, w], `hash ${hash}`);
  const pg = await newPage(server.base, hash);
  await pg.waitForSelector('#cv-recon[data-k="40"]', WAIT);
  await pg.waitForSelector('#quality[data-k="40"]', WAIT);
  eq([await pg.inputValue('#k-range'), await pg.inputValue('#backend'), await pg.inputValue('#win-center'), await pg.inputValue('#win-width')],
     ['40', 'blocked', c, w], 'restored');
  eq(await pg.getAttribute('#cv-recon', 'data-backend'), 'blocked', 'the backend ran');
  await checkRecon(pg, server.base);
  await pg.goto(`${server.base}/#id=${pd.id}&k=999`);
  await pg.waitForSelector('#cv-recon[data-k]', WAIT);
  ok((await pg.textContent('#k-msg')).includes('999'), 'a k out of range in the address is said');
  await pg.close();
});

test('downloads: the reconstruction at k, and as shown', async () => {
  const href = await page.getAttribute('#dl-recon', 'href');
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#dl-recon')]);
  eq(dl.suggestedFilename(), 'pd-k40.png', 'file name with k');
  const saved = fs.readFileSync(await dl.path());
  eq(Buffer.compare(saved, (await get(server.base, href)).buf), 0, 'the file is /reconstruct\'s PNG');
  eq(decodeGray(saved).depth, 8, 'at the slice\'s depth');
  const [dl2] = await Promise.all([page.waitForEvent('download'), page.click('#dl-shown')]);
  const shown = decodeGray(fs.readFileSync(await dl2.path()));
  eq(firstMismatch(shown.data, (await canvasGray(page, 'cv-recon')).gray), -1, '"as shown" is what the page shows');
});

test('16-bit: an invalid window keeps the last valid one and says so; presets; histogram; raw difference', async () => {
  await page.click(`#slice-list li[data-id="${ph.id}"] button.pick`);
  await page.waitForFunction(() => document.getElementById('slice-title').textContent === 'phantom12', null, WAIT);
  await page.waitForSelector('#cv-recon[data-k]', WAIT);
  await waitIdle(page);
  const before = await Promise.all(['cv-original', 'cv-recon', 'cv-diff'].map((id) => canvasRgb(page, id)));
  const c0 = await page.inputValue('#win-center'), w0 = await page.inputValue('#win-width');
  for (const [val, said] of [['0', 'above 0'], ['', 'needs a number'], ['-5', 'above 0']]) {
    await page.fill('#win-width', val);
    const msg = await page.textContent('#win-msg');
    ok(msg.includes(said) && msg.includes(`keeping center ${c0}, width ${w0}`), `width "${val}": ${msg}`);
    eq(await page.getAttribute('#win-width', 'aria-invalid'), 'true', 'the field is marked');
    await page.waitForTimeout(50);
    const now = await Promise.all(['cv-original', 'cv-recon', 'cv-diff'].map((id) => canvasRgb(page, id)));
    eq(now.map((x) => firstMismatch(x.data, before[now.indexOf(x)].data)), [-1, -1, -1], `width "${val}": images unchanged`);
  }
  await page.keyboard.press('Tab');
  eq([await page.inputValue('#win-center'), await page.inputValue('#win-width')], [c0, w0], 'leaving the field restores the window');

  const orig = await getGray(server.base, `/slices/${ph.id}/original`);
  let lo = Infinity, hi = -Infinity;
  for (const v of orig.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  await page.click('#win-full');
  eq([Number(await page.inputValue('#win-center')), Number(await page.inputValue('#win-width'))], [(lo + hi) / 2, hi - lo], 'full range = min..max');
  await checkRecon(page, server.base);
  const shade = await page.$eval('#histogram rect.win', (r) => Number(r.getAttribute('width')));
  await page.click('#win-tissue');
  const shade2 = await page.$eval('#histogram rect.win', (r) => Number(r.getAttribute('width')));
  ok(shade2 < shade, `the histogram shades the window (${shade} → ${shade2})`);
  ok(await page.locator('#histogram rect.hbar').count() > 5, 'histogram bars');
  await checkRecon(page, server.base);

  // The difference map and its scale come from the raw 16-bit values.
  await page.uncheck('#diff-lock');
  const k = await page.getAttribute('#cv-recon', 'data-k');
  const r16 = await getGray(server.base, `/reconstruct?id=${ph.id}&k=${k}&backend=${await page.getAttribute('#cv-recon', 'data-backend')}`);
  eq(r16.depth, 16, '16-bit reconstruction');
  const m = r16.data.reduce((a, v, i) => Math.max(a, Math.abs(v - orig.data[i])), 0);
  await page.waitForSelector(`#cv-diff[data-max="${m}"]`, WAIT);
  await checkDiffPixels(page, orig.data, r16.data, m);
  const { body } = await checkQuality(page, server.base, ph.id, Number(k));
  const full = await page.textContent('#why-psnr');
  ok(full.includes('65535') && full.includes(`${Number((20 * Math.log10(65535 / (hi - lo))).toPrecision(3))} dB above`), `full-scale PSNR explained: ${full}`);
  ok(body.psnr > 0, 'quality answered');
  await page.screenshot({ path: path.join(ARTIFACTS, 'viewer-16bit.png') });
});

test('PSNR over the data range uses max - min of the original (a slice whose minimum is not 0)', async () => {
  // Some scanners store an offset: nothing is 0, and R = max - min differs from max.
  const off = await upload(server.base, encodeGray16(64, 48, phantom12(64, 48).map((v) => v + 700)), 'offset');
  await page.click('#refresh');
  await page.click(`#slice-list li[data-id="${off.id}"] button.pick`);
  await page.waitForFunction(() => document.getElementById('slice-title').textContent === 'offset', null, WAIT);
  await atK(page, 4, () => page.fill('#k-number', '4'));
  const { orig } = await checkQuality(page, server.base, off.id, 4);
  ok(Math.min(...orig.data) === 700, 'the original starts at 700');
  await checkRecon(page, server.base);
});

test('a slice deleted elsewhere: choosing it says so in a toast and the list refreshes', async () => {
  const extra = await upload(server.base, encodeGray16(40, 30, phantom12(40, 30)), 'extra');
  await page.click('#refresh');
  await page.waitForSelector(`#slice-list li[data-id="${extra.id}"]`, WAIT);
  eq((await fetch(`${server.base}/slices/${extra.id}`, { method: 'DELETE' })).status, 204, 'deleted through the API');
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.click(`#slice-list li[data-id="${extra.id}"] button.pick`);
  await page.waitForSelector(`#slice-list li[data-id="${extra.id}"]`, { state: 'detached', ...WAIT });
  const toast = page.locator('#status');
  ok((await toast.textContent()).includes('no longer on the server'), 'the toast says why');
  const tb = await toast.boundingBox();
  ok(tb.y >= 0 && tb.y + tb.height <= 900, `the toast is on screen wherever the page is scrolled (${tb.y})`);
  await page.click('#status-close');
  ok(await toast.isHidden(), 'dismissed');
  await page.evaluate(() => window.scrollTo(0, 0));
});

test('with the server gone, the image says it is stale and which k it shows', async () => {
  const other = await startServer();
  try {
    const s = await upload(other.base, fs.readFileSync(SLICE), 'pd');
    const pg = await newPage(other.base, `#id=${s.id}`);
    await pg.waitForSelector('#cv-recon[data-k]', WAIT);
    await waitIdle(pg);
    const shownK = await pg.getAttribute('#cv-recon', 'data-k');
    await other.stop();
    await pg.focus('#k-range');
    await pg.keyboard.press('End');
    await pg.waitForSelector('#fig-recon[data-state="failed"]', WAIT);
    const text = await pg.textContent('#recon-state');
    ok(text.includes(`k = ${s.rank} failed`) && text.includes(`still shows k = ${shownK}`), `said on the image: ${text}`);
    ok(await pg.isVisible('#recon-retry'), 'with a retry');
    eq(await pg.getAttribute('#cv-recon', 'data-k'), shownK, 'the image is the old one');
    eq(await pg.inputValue('#k-range'), String(s.rank), 'the slider where the user put it');
    await pg.screenshot({ path: path.join(ARTIFACTS, 'viewer-server-down.png') });
    await pg.close();
  } finally {
    await other.stop();
  }
});

test('no script errors on the pages', () => {
  eq(pageErrors, [], 'page errors');
});
