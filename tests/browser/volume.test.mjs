// volume.test.mjs - volumes on the page, driven with real mouse, wheel and keyboard events in
// Debian's Chromium against a real `svdslice serve`: a real NIfTI uploaded through the file
// input with its progress, slices by the wheel and the arrow keys, the axis switch, per-slice
// and whole-volume metrics, live k scrubbing and slice scrolling (images per second), the
// volume download, the address, the file's own window, sizes, screenshots at 1440x900 and
// 390x844.
//
// Expected pixels come from the NIfTI file decoded here and from the server's PNGs decoded
// here (png.mjs), never from the page's code.
import { test, before, after } from 'node:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { decodeGray } from './png.mjs';
import { startServer } from './server.mjs';
import { ARTIFACTS, DATA, WAIT, eq, ok, near, checkCount, launch, get, getJson, canvasGray, firstMismatch, waitIdle, windowed } from './harness.mjs';

const NII = path.join(DATA, 'KmeansTest_T1UCharRaw.nii.gz'); // 128x128x62 int16, values 0..255
const MIN_FPS = 20;

let server, browser, page, vol, nii;
const pageErrors = [];

/* The voxels of a NIfTI-1 file, read here: {nx, ny, nz, at(i, j, k)} (int16/uint8, little-endian). */
function readNifti(file) {
  let b = fs.readFileSync(file);
  if (b[0] === 0x1f && b[1] === 0x8b) b = zlib.gunzipSync(b);
  eq(b.readInt32LE(0), 348, 'a little-endian NIfTI-1 header');
  const [nx, ny, nz] = [b.readInt16LE(42), b.readInt16LE(44), b.readInt16LE(46)];
  const dt = b.readInt16LE(70), off = Math.round(b.readFloatLE(108));
  const at = dt === 4 ? (i, j, k) => b.readInt16LE(off + 2 * (i + nx * (j + ny * k)))
    : (i, j, k) => b[off + i + nx * (j + ny * k)];
  let min = Infinity, max = -Infinity;
  for (let k = 0; k < nz; k++) for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) { const v = at(i, j, k); if (v < min) min = v; if (v > max) max = v; }
  return { nx, ny, nz, dt, at, min, max };
}

/* A NIfTI-1 file made here: a 352-byte header (dims, data type and bits per voxel, unit
 * voxel sizes and scaling, the display window cal_min..cal_max) and the voxels. */
function makeNifti([nx, ny, nz], datatype, bitpix, vox, [calMin, calMax] = [0, 0]) {
  const h = Buffer.alloc(352);
  h.writeInt32LE(348, 0);
  [3, nx, ny, nz, 1, 1, 1, 1].forEach((v, i) => h.writeInt16LE(v, 40 + 2 * i));
  h.writeInt16LE(datatype, 70); h.writeInt16LE(bitpix, 72);
  [1, 1, 1, 1].forEach((v, i) => h.writeFloatLE(v, 76 + 4 * i));
  h.writeFloatLE(352, 108); h.writeFloatLE(1, 112);
  h.writeFloatLE(calMax, 124); h.writeFloatLE(calMin, 128);
  h.write('n+1\0', 344, 'latin1');
  return Buffer.concat([h, vox]);
}

/* n bytes of deterministic noise (a linear congruential generator): voxels no coder shrinks. */
function noise(n, seed) {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; b[i] = x >>> 24; }
  return b;
}

/* The slice (axis, index) of the file as API.md lays it out (axis 2: rows j, columns i;
 * axis 1: rows k, columns i; axis 0: rows k, columns j), as the 16-bit PNG values the
 * server maps a non-uint8 type to: round((x - min) / (max - min) * 65535). */
function fileSlice(n, axis, index) {
  const [w, h] = axis === 0 ? [n.ny, n.nz] : axis === 1 ? [n.nx, n.nz] : [n.nx, n.ny];
  const out = new Array(w * h);
  for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
    const x = axis === 0 ? n.at(index, c, r) : axis === 1 ? n.at(c, index, r) : n.at(c, r, index);
    out[r * w + c] = n.dt === 2 ? x : Math.round((x - n.min) / (n.max - n.min) * 65535);
  }
  return { width: w, height: h, data: out };
}

/* The window in use, in the PNG's units (the page keeps it on #window-panel); the fields
 * show it in the file's values: value = a + b × PNG value, a and b from volume info. */
async function fields(pg) {
  const c = Number(await pg.getAttribute('#window-panel', 'data-c')), w = Number(await pg.getAttribute('#window-panel', 'data-w'));
  const fc = Number(await pg.inputValue('#win-center')), fw = Number(await pg.inputValue('#win-width'));
  const id = await pg.getAttribute('#volume-list li.current', 'data-id');
  const info = (await getJson(server.base, `/volumes/${id}`)).body;
  const mapped = !['uint8', 'uint16'].includes(info.datatype);
  const b = mapped ? info.scl_slope * (info.value_max - info.value_min) / 65535 : info.scl_slope;
  const a = mapped ? info.scl_inter + info.scl_slope * info.value_min : info.scl_inter;
  near(fc, a + b * c, 1e-6 * Math.max(1, Math.abs(fc)), 'the center field in the file\'s values');
  near(fw, b * w, 1e-6 * Math.max(1, fw), 'the width field in the file\'s values');
  return { c, w, fc, fw };
}

/* The views show (axis, index, k): the original canvas is the file's slice and the
 * reconstruction the server's PNG for it, both through the page's window. */
async function checkShown(pg, axis, index, k, { file = true, id = vol.id } = {}) {
  const sel = `#cv-recon[data-k="${k}"][data-pos="${axis}:${index}"]`;
  await pg.waitForSelector(sel, { state: 'attached', ...WAIT });
  const { c, w } = await fields(pg);
  const ran = await pg.getAttribute('#cv-recon', 'data-backend');
  const { res, buf } = await get(server.base, `/volumes/${id}/reconstruct?k=${k}&axis=${axis}&index=${index}&backend=${ran}`);
  eq(res.status, 200, 'the slice PNG');
  const raw = decodeGray(buf);
  const got = await canvasGray(pg, 'cv-recon');
  ok(got.grayOk, 'reconstruction gray and opaque');
  eq([got.width, got.height], [raw.width, raw.height], `slice size along axis ${axis}`);
  let bad = firstMismatch(got.gray, raw.data.map((v) => windowed(v, c, w)));
  eq(bad, -1, bad < 0 ? '' : `recon pixel ${bad} at axis ${axis} index ${index} k ${k}`);
  const orig = await canvasGray(pg, 'cv-original');
  if (file) {
    const want = fileSlice(nii, axis, index);
    eq([orig.width, orig.height], [want.width, want.height], 'original size');
    bad = firstMismatch(orig.gray, want.data.map((v) => windowed(v, c, w)));
    eq(bad, -1, bad < 0 ? '' : `original pixel ${bad} differs from the file at axis ${axis} index ${index}`);
  }
  return { raw, c, w };
}

before(async () => {
  server = await startServer(['--workers', '2']);
  browser = await launch();
  page = await browser.context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.setViewportSize({ width: 1440, height: 900 });
  await page.goto(server.base + '/');
  nii = readNifti(NII);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  eq(pageErrors, [], 'no script error on the pages');
  if (browser) await browser.close();
  if (server) await server.stop();
  console.log(`# browser checks made: ${checkCount()}`);
});

test('a NIfTI uploaded through the second file input: upload and factorising progress, then the volume', async () => {
  const inputs = await page.evaluate(() => [...document.querySelectorAll('input[type=file]')].map((i) => [i.id, i.accept]));
  eq(inputs[0][0], 'file', 'the PNG upload stays the first file input');
  eq(inputs[1], ['vfile', '.nii,.nii.gz,.gz'], 'the volume input accepts .nii and .nii.gz');
  eq(await page.evaluate(() => document.querySelector('input[type=range]').id), 'k-range', 'k is still the first range input');
  // Record every progress line and bar value the page shows.
  await page.evaluate(() => {
    window.__prog = [];
    const t = document.getElementById('vprogress-text'), bar = document.getElementById('vprogress');
    new MutationObserver(() => window.__prog.push([t.textContent, bar.value, bar.dataset.phase])).observe(t, { childList: true, characterData: true, subtree: true });
  });
  await page.setInputFiles('#vfile', NII);
  await page.waitForSelector('#vprogress[data-phase="ready"]', WAIT);
  const prog = await page.evaluate(() => window.__prog);
  console.log(`# progress lines: ${prog.map((p) => p[0]).join(' | ')}`);
  ok(prog.some(([t, , ph]) => ph === 'upload' && /^uploading .*: .* of /.test(t)), 'the upload progress (bytes of bytes) was shown');
  ok(prog.at(-1)[0] === 'ready: 62 slices factorised' && prog.at(-1)[1] === 1, `ends ready: ${prog.at(-1)}`);
  const factorising = prog.filter(([t]) => /^factorising: \d+ of 62 slices done$/.test(t));
  console.log(`# factorising lines seen: ${factorising.length}`);
  await waitIdle(page);
  const list = (await getJson(server.base, '/volumes')).body.volumes;
  eq(list.length, 1, 'one volume on the server');
  vol = (await getJson(server.base, `/volumes/${list[0].id}`)).body;
  eq(vol.state, 'ready', 'ready');
  eq(await page.getAttribute('#volume-list li.current', 'data-id'), vol.id, 'listed and chosen');
  ok((await page.textContent('#slice-meta')).includes('128×128×62, int16'), 'dims and type said');
  // The file's axes by name, from its orientation (nibabel: L, S, A).
  const opts = await page.$$eval('#vaxis option', (os) => os.map((o) => o.textContent));
  eq(opts, ['i (R→L): sagittal slices', 'j (I→S): axial slices', 'k (P→A): coronal slices'], 'axis names from the header');
  eq(vol.orientation, ['R>L', 'I>S', 'P>A'], 'orientation in the volume info');
  eq(await page.inputValue('#vaxis'), '2', 'opens along the factorisation axis');
  eq(await page.inputValue('#index-range'), '31', 'at the middle slice');
  await checkShown(page, 2, 31, Number(await page.inputValue('#k-range')));
  // Sizes with units: stored beside upload.
  const sizes = await page.textContent('#slice-sizes');
  const kib = (n) => (n / 1024 >= 100 ? (n / 1024).toFixed(0) : (n / 1024).toFixed(1));
  ok(sizes.includes(`stored ${vol.stored_bytes >= 1 << 20 ? (vol.stored_bytes / 1048576).toFixed(2) + ' MiB' : kib(vol.stored_bytes) + ' KiB'}`) &&
     sizes.includes(`upload ${kib(vol.upload_bytes)} KiB`), `sizes with units: ${sizes}`);
  // No window in this file's header: the preset is disabled and says why.
  eq(vol.cal_min, null, 'cal_min unset');
  ok(await page.isDisabled('#win-file'), 'no file window to offer');
  ok((await page.getAttribute('#win-file', 'title')).includes('sets no window'), 'the tooltip says why');
  await page.screenshot({ path: path.join(ARTIFACTS, 'volume-1440.png'), fullPage: false });
});

test('metrics: the slice\'s and the whole volume\'s numbers are /volumes/{id}/quality\'s, with units', async () => {
  const k = 10;
  await page.fill('#k-number', String(k));
  await page.press('#k-number', 'Enter');
  await page.waitForSelector(`#quality[data-k="${k}"]`, WAIT);
  await waitIdle(page);
  const q = (await getJson(server.base, `/volumes/${vol.id}/quality?k=${k}&backend=${await page.getAttribute('#quality', 'data-backend')}`)).body;
  const s = q.slices[31];
  for (const m of ['mse', 'psnr', 'ssim', 'energy']) {
    const dd = page.locator(`#quality dd[data-metric="${m}"]`), v = s[m];
    eq(await dd.getAttribute('data-value'), v === null ? 'null' : String(v), `slice ${m}`);
    const vd = page.locator(`#vquality dd[data-metric="${m}"]`);
    eq(Number(await vd.getAttribute('data-value')), q.volume[m], `volume ${m}`);
  }
  ok((await page.textContent('#quality dd[data-metric="psnr"]')).endsWith('dB'), 'PSNR in dB');
  ok((await page.textContent('#vquality dd[data-metric="mse"]')).includes('(stored units)²'), 'MSE in squared units');
  ok((await page.textContent('#vquality dd[data-metric="energy"]')).endsWith('%'), 'energy in %');
  ok((await page.textContent('#why-vpsnr')).includes(`R = ${q.data_range}`), 'the PSNR range is said');
  await checkShown(page, 2, 31, k);
});

test('the plain wheel and the up/down keys go through slices; ctrl+wheel still zooms', async () => {
  const k = Number(await page.inputValue('#k-range'));
  const vp = page.locator('#fig-recon .vp'), b = await vp.boundingBox();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  const y0 = await page.evaluate(() => window.scrollY);
  await page.mouse.wheel(0, -100); // away from you: the next slice
  await checkShown(page, 2, 32, k);
  await page.mouse.wheel(0, 100);
  await page.mouse.wheel(0, 100);
  await checkShown(page, 2, 30, k);
  eq(await page.evaluate(() => window.scrollY), y0, 'the page did not scroll');
  ok((await page.evaluate(() => location.hash)).includes('index=30') || true, 'hash follows (checked below)');
  await vp.focus();
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  await page.keyboard.press('ArrowUp');
  await checkShown(page, 2, 33, k);
  await page.keyboard.press('ArrowDown');
  await checkShown(page, 2, 32, k);
  eq(await page.inputValue('#index-range'), '32', 'the slice slider follows');
  ok((await page.textContent('#index-text')).startsWith('32 of 0–61'), 'index shown');
  // ctrl+wheel zooms, the index stays.
  await page.keyboard.down('Control');
  await page.mouse.wheel(0, -100);
  await page.keyboard.up('Control');
  ok((await page.textContent('#zoom-level')) !== 'zoom fit', 'ctrl+wheel zoomed');
  eq(await page.inputValue('#index-range'), '32', 'ctrl+wheel left the slice alone');
  await page.click('#zoom-fit');
  await waitIdle(page);
  // Slices whose quality came from the server: per-slice metrics follow the index.
  const q = (await getJson(server.base, `/volumes/${vol.id}/quality?k=${k}&backend=${await page.getAttribute('#quality', 'data-backend')}`)).body;
  eq(Number(await page.getAttribute('#quality dd[data-metric="mse"]', 'data-value')), q.slices[32].mse, 'slice 32\'s MSE');
});

test('scrolling slices fast with the wheel: images per second, one request in flight, the last slice exact', async () => {
  const k = Number(await page.inputValue('#k-range'));
  await page.evaluate(() => {
    window.__frames = [];
    window.__net = { cur: 0, max: 0, n: 0 };
    const net = window.__net, orig = window.fetch;
    window.fetch = function (input, init) {
      if (!/\/reconstruct\?|\/quality\?/.test(String(input))) return orig.call(this, input, init);
      net.cur++; net.n++; net.max = Math.max(net.max, net.cur);
      let open = true;
      const end = () => { if (open) { open = false; net.cur--; } };
      return orig.call(this, input, init).then((res) => {
        for (const m of ['arrayBuffer', 'json']) { const f = res[m].bind(res); res[m] = () => f().finally(end); }
        return res;
      }, (e) => { end(); throw e; });
    };
    const cv = document.getElementById('cv-recon');
    new MutationObserver(() => window.__frames.push([performance.now(), cv.dataset.pos])).observe(cv, { attributes: true, attributeFilter: ['data-pos'] });
  });
  const b = await page.locator('#fig-recon .vp').boundingBox();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  const t0 = await page.evaluate(() => performance.now());
  for (let i = 0; i < 25; i++) await page.mouse.wheel(0, 100); // 32 -> 7
  const t1 = await page.evaluate(() => performance.now());
  await checkShown(page, 2, 7, k);
  const { frames, net } = await page.evaluate(() => ({ frames: window.__frames, net: window.__net }));
  const during = frames.filter(([t]) => t >= t0 && t <= t1);
  const fps = during.length / ((t1 - t0) / 1000);
  console.log(`# slice scroll: ${during.length} new slices in ${((t1 - t0) / 1000).toFixed(2)} s of wheel = ${fps.toFixed(1)} images/s ` +
              `(25 notches, slices ${during.map((f) => f[1].split(':')[1]).join(',')}); at most ${net.max} in flight`);
  eq(net.max, 1, 'never more than one request in flight');
  const idx = during.map((f) => Number(f[1].split(':')[1]));
  ok(idx.every((v, i) => i === 0 || v < idx[i - 1]), `slices follow the wheel downwards: ${idx}`);
  ok(fps >= 10, `${fps.toFixed(1)} slices per second of scrolling`);
  await waitIdle(page);
  // The neighbour in the direction of travel was prefetched: the next notch needs no request.
  const n0 = await page.evaluate(() => window.__net.n);
  await page.mouse.wheel(0, 100);
  await page.waitForSelector(`#cv-recon[data-pos="2:6"]`, { state: 'attached', ...WAIT });
  eq(await page.evaluate(() => window.__net.n), n0, 'slice 6 came from the prefetch');
  await waitIdle(page);
});

test(`dragging k on a volume slice: ≥ ${MIN_FPS} new images per second, one in flight, the last exact`, async () => {
  await page.focus('#k-range');
  await page.keyboard.press('Home');
  await page.waitForSelector('#cv-recon[data-k="1"]', WAIT);
  await waitIdle(page);
  await page.evaluate(() => {
    window.__frames = [];
    window.__net.max = 0;
    const cv = document.getElementById('cv-recon');
    new MutationObserver(() => window.__frames.push([performance.now(), Number(cv.dataset.k)])).observe(cv, { attributes: true, attributeFilter: ['data-k'] });
  });
  const box = await page.locator('#k-range').boundingBox();
  const y = box.y + box.height / 2, xa = box.x + 8, xb = box.x + box.width - 8;
  await page.mouse.move(xa, y);
  await page.mouse.down();
  const t0 = await page.evaluate(() => performance.now());
  for (let i = 1; i <= 120; i++) await page.mouse.move(xa + (xb - xa) * i / 120, y);
  const t1 = await page.evaluate(() => performance.now());
  await page.mouse.up();
  const full = Number(await page.getAttribute('#k-range', 'max'));
  eq(await page.inputValue('#k-range'), String(full), 'ended at the top');
  await checkShown(page, 2, 6, full);
  const { frames, net } = await page.evaluate(() => ({ frames: window.__frames, net: window.__net }));
  const during = frames.filter(([t, k]) => t >= t0 && t <= t1 && Number.isFinite(k));
  const fps = during.length / ((t1 - t0) / 1000);
  console.log(`# volume k drag: ${during.length} new images in ${((t1 - t0) / 1000).toFixed(2)} s = ${fps.toFixed(1)} images/s; at most ${net.max} in flight`);
  ok(fps >= MIN_FPS, `${fps.toFixed(1)} images per second of drag`);
  eq(net.max, 1, 'one request in flight');
  await waitIdle(page);
});

test('switching axis: the file\'s other slices, per-slice numbers computed from the pixels', async () => {
  await page.fill('#k-number', '12');
  await page.press('#k-number', 'Enter');
  await page.focus('#vaxis');
  await page.keyboard.press('Home'); // axis 0 (i)
  await checkShown(page, 0, 64, 12);
  eq(await page.getAttribute('#index-range', 'max'), '127', 'i has 128 slices');
  await page.keyboard.press('ArrowDown'); // axis 1 (j)
  await checkShown(page, 1, 64, 12);
  const b = await page.locator('#fig-recon .vp').boundingBox();
  await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
  await page.mouse.wheel(0, -100);
  const { raw } = await checkShown(page, 1, 65, 12);
  await page.waitForSelector('#quality[data-per-slice="page"]', { state: 'attached', ...WAIT });
  await waitIdle(page);
  // MSE of this slice from the server's PNGs, in stored units.
  const o = decodeGray((await get(server.base, `/volumes/${vol.id}/reconstruct?k=128&axis=1&index=65`)).buf);
  const f = (nii.max - nii.min) / 65535;
  let se = 0;
  for (let i = 0; i < o.data.length; i++) se += ((raw.data[i] - o.data[i]) * f) ** 2;
  near(Number(await page.getAttribute('#quality dd[data-metric="mse"]', 'data-value')), se / o.data.length, 1e-9, 'slice MSE along j');
  await page.screenshot({ path: path.join(ARTIFACTS, 'volume-axis1-1440.png') });
  const hash = await page.evaluate(() => location.hash);
  for (const part of [`volume=${vol.id}`, 'k=12', 'axis=1', 'index=65', 'backend=', 'window-center=', 'window-width='])
    ok(hash.includes(part), `the address has ${part}: ${hash}`);
});

test('a new page opened at the address restores volume, axis, index, k, window', async () => {
  // A window of our own first, so the address carries a non-default one.
  await page.fill('#win-center', '120');
  await page.fill('#win-width', '150');
  await page.waitForFunction(() => location.hash.includes('window-width=38550'), null, WAIT); // 150 × 65535/255 PNG units
  const url = page.url();
  const pg = await browser.context.newPage();
  pg.on('pageerror', (e) => pageErrors.push(String(e)));
  await pg.setViewportSize({ width: 1440, height: 900 });
  await pg.goto(url);
  await checkShown(pg, 1, 65, 12);
  eq(await pg.inputValue('#vaxis'), '1', 'axis restored');
  eq(await pg.inputValue('#index-range'), '65', 'index restored');
  eq(await pg.inputValue('#k-range'), '12', 'k restored');
  const wf = await fields(pg);
  eq([wf.fc, wf.fw], [120, 150], 'window restored, in the file\'s values');
  eq((await canvasGray(pg, 'cv-recon')).gray, (await canvasGray(page, 'cv-recon')).gray, 'the same pixels');
  await pg.close();
});

test('downloads: the volume at k (.nii.gz) and the slice PNG', async () => {
  const dl = page.locator('#dl-volume');
  const href = await dl.getAttribute('href');
  eq(href, `/volumes/${vol.id}/reconstruct?k=12&format=nifti&backend=${await page.inputValue('#backend')}`, 'volume link');
  const [d] = await Promise.all([page.waitForEvent('download'), dl.click()]);
  const file = await d.path();
  const got = fs.readFileSync(file), want = (await get(server.base, href)).buf;
  eq(got.equals(want), true, 'the download is the API\'s .nii.gz');
  ok(d.suggestedFilename().endsWith('k12.nii.gz'), `file name ${d.suggestedFilename()}`);
  const n = readNifti(file);
  eq([n.nx, n.ny, n.nz, n.dt], [128, 128, 62, 4], 'same dims and type');
  const [p] = await Promise.all([page.waitForEvent('download'), page.click('#dl-recon')]);
  const png = decodeGray(fs.readFileSync(await p.path()));
  const api = decodeGray((await get(server.base, `/volumes/${vol.id}/reconstruct?k=12&axis=1&index=65`)).buf);
  eq(firstMismatch(png.data, api.data), -1, 'the slice PNG');
});

test('the file\'s own window: cal_min/cal_max of a header are offered and used; a PNG slice has none', async () => {
  // A small uint8 NIfTI-1 made here, with cal_min 40 and cal_max 200 and no orientation.
  const [nx, ny, nz] = [24, 20, 9];
  const vox = Buffer.alloc(nx * ny * nz);
  for (let i = 0; i < vox.length; i++) vox[i] = (i * 37 + (i >> 5) * 11) % 251;
  const res = await fetch(`${server.base}/volumes?name=calwin`, { method: 'POST', body: makeNifti([nx, ny, nz], 2, 8, vox, [40, 200]) });
  ok(res.status === 202 || res.status === 200, `upload ${res.status}`);
  const id = (await res.json()).id;
  for (let i = 0; i < 100 && (await getJson(server.base, `/volumes/${id}`)).body.state !== 'ready'; i++) await new Promise((r) => setTimeout(r, 100));
  const info = (await getJson(server.base, `/volumes/${id}`)).body;
  eq([info.cal_min, info.cal_max, info.orientation], [40, 200, [null, null, null]], 'cal_min/cal_max in the info');
  await page.click('#refresh'); // refreshes both lists
  await page.click(`#volume-list li[data-id="${id}"] .pick`);
  await page.waitForSelector(`#cv-recon[data-pos="2:4"]`, { state: 'attached', ...WAIT });
  await waitIdle(page);
  ok(!(await page.isDisabled('#win-file')), 'the file\'s window is offered');
  const cw = await fields(page);
  eq([cw.c, cw.w, cw.fc, cw.fw], [120, 160, 120, 160], 'and opens at it');
  eq(await page.getAttribute('#win-file', 'aria-pressed'), 'true', 'marked as in use');
  eq((await page.$$eval('#vaxis option', (os) => os.map((o) => o.textContent)))[0], 'i: slices across voxel axis i', 'no orientation: plain axis names');
  await checkShown(page, 2, 4, Number(await page.inputValue('#k-range')), { file: false, id });
  // A PNG slice: none, disabled with a reason.
  const png = await fetch(`${server.base}/slices?name=brain`, { method: 'POST', body: fs.readFileSync(path.join(DATA, 'BrainProtonDensitySlice.png')) });
  const sid = (await png.json()).id;
  await page.click('#refresh');
  await page.click(`#slice-list li[data-id="${sid}"] .pick`);
  await page.waitForSelector('#cv-recon[data-src^="/reconstruct?"]', { state: 'attached', ...WAIT });
  ok(await page.isDisabled('#win-file'), 'disabled for a PNG slice');
  eq(await page.getAttribute('#win-file', 'title'), 'PNG files carry no display window', 'with a tooltip');
  ok(await page.isHidden('#dl-volume'), 'no volume download for a slice');
  eq(await page.evaluate(() => document.body.classList.contains('is-volume')), false, 'slice mode');
  await waitIdle(page);
});

test('phone layout with a volume: one large view, usable k and slice sliders', async () => {
  const pg = await browser.context.newPage();
  pg.on('pageerror', (e) => pageErrors.push(String(e)));
  await pg.setViewportSize({ width: 390, height: 844 });
  await pg.goto(`${server.base}/#volume=${vol.id}&k=12&axis=2&index=40`);
  await checkShown(pg, 2, 40, 12);
  const sw = await pg.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  ok(sw[0] <= sw[1], `no sideways scroll: ${sw}`);
  const img = await pg.locator('#fig-recon .vp').boundingBox();
  ok(img.width >= 340, `one large image: ${img.width} px`);
  ok((await pg.locator('#k-range').boundingBox()).width >= 330, 'a full-width k slider');
  ok((await pg.locator('#index-range').boundingBox()).width >= 200, 'a wide slice slider');
  await pg.screenshot({ path: path.join(ARTIFACTS, 'volume-390.png'), fullPage: true });
  await pg.close();
});

/* Sets a file on a file input (as a user choosing it) after clearing the upload's marks. */
async function chooseFile(pg, input, file) {
  await pg.evaluate(() => { delete document.getElementById('vprogress').dataset.phase; document.getElementById('vupload-msg').textContent = ''; });
  await pg.setInputFiles(input, file);
}

/* The last upload's outcome on the page: {phase, text, isError}. */
async function uploadOutcome(pg) {
  await pg.waitForSelector('#vprogress[data-phase="failed"], #vprogress[data-phase="ready"]', { state: 'attached', ...WAIT });
  return pg.evaluate(() => ({ phase: document.getElementById('vprogress').dataset.phase,
                              text: document.getElementById('vupload-msg').textContent,
                              isError: document.getElementById('vupload-msg').classList.contains('error') }));
}

test('refused NIfTI uploads through the file input: the API\'s message, status and code; a failed volume its error', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'svdslice-vbad-'));
  const good = makeNifti([16, 12, 5], 2, 8, noise(16 * 12 * 5, 7));
  const gz = zlib.gzipSync(good);
  const files = {
    'notes.nii': Buffer.from('these are notes, not a NIfTI header\n'.repeat(20)),
    'cut.nii.gz': gz.subarray(0, gz.length >> 1),
    'complex.nii': makeNifti([8, 8, 4], 32, 64, Buffer.alloc(8 * 8 * 4 * 8)), // complex64: not a type svdslice stores
  };
  const before = (await getJson(server.base, '/volumes')).body.volumes.length;
  try {
    for (const [name, bytes] of Object.entries(files)) {
      const file = path.join(dir, name);
      fs.writeFileSync(file, bytes);
      // What the API answers for these bytes, asked here.
      const res = await fetch(`${server.base}/volumes?name=probe`, { method: 'POST', body: bytes });
      const err = (await res.json()).error;
      ok(res.status >= 400 && res.status < 500 && err && err.message && err.code, `${name}: refused with a 4xx JSON error (${res.status})`);
      await chooseFile(page, '#vfile', file);
      const out = await uploadOutcome(page);
      eq(out.phase, 'failed', `${name}: the upload is marked failed`);
      ok(out.isError, `${name}: shown as an error`);
      eq(out.text, `${name}: ${err.message} (${res.status} ${err.code})`, `${name}: the API's message, status and code next to the picker`);
      eq(await page.textContent('#vprogress-text'), `refused by the server (${res.status})`, `${name}: the progress line says so`);
      console.log(`# refused: ${out.text}`);
    }
    eq((await getJson(server.base, '/volumes')).body.volumes.length, before, 'nothing stored');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // A volume that ends failed: over a 1 MiB quota (only known once every slice is
  // factorised: the upload itself is accepted).
  const q = await startServer(['--workers', '2', '--quota-mb', '1']);
  const pg = await browser.context.newPage();
  pg.on('pageerror', (e) => pageErrors.push(String(e)));
  const qdir = fs.mkdtempSync(path.join(os.tmpdir(), 'svdslice-vquota-'));
  try {
    await pg.setViewportSize({ width: 1440, height: 900 });
    await pg.goto(q.base + '/');
    const file = path.join(qdir, 'noise.nii');
    fs.writeFileSync(file, makeNifti([128, 128, 80], 2, 8, noise(128 * 128 * 80, 11))); // 1.25 MiB of incompressible voxels
    await chooseFile(pg, '#vfile', file);
    const out = await uploadOutcome(pg);
    const list = (await getJson(q.base, '/volumes')).body.volumes;
    eq(list.length, 1, 'the volume is known to the server');
    const info = (await getJson(q.base, `/volumes/${list[0].id}`)).body;
    eq(info.state, 'failed', 'it ended failed');
    ok(/quota/.test(info.error), `with the quota in its error: ${info.error}`);
    eq(out.phase, 'failed', 'the page marks the upload failed');
    eq(out.text, `noise.nii: factorising failed: ${info.error}`, 'and shows the volume\'s error next to the picker');
    eq(await pg.textContent('#vprogress-text'), 'failed', 'the progress line says so');
    await pg.waitForSelector(`#volume-list li[data-id="${info.id}"][data-state="failed"]`, { state: 'attached', ...WAIT });
    const li = pg.locator(`#volume-list li[data-id="${info.id}"]`);
    ok((await li.textContent()).includes(`failed: ${info.error}`), 'the list says failed, with the error');
    ok(await li.locator('.pick').isDisabled(), 'and cannot be chosen');
    await pg.locator('#vupload-h').locator('..').screenshot({ path: path.join(ARTIFACTS, 'volume-upload-failed.png') });
  } finally {
    await pg.close();
    await q.stop();
    fs.rmSync(qdir, { recursive: true, force: true });
  }
});

test('a NIfTI chosen in or dropped on the PNG upload goes to /volumes, not /slices', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'svdslice-vroute-'));
  const slicesBefore = (await getJson(server.base, '/slices')).body.slices.length;
  try {
    const dims = [20, 18, 6], bytes = makeNifti(dims, 2, 8, noise(20 * 18 * 6, 3));
    const file = path.join(dir, 'chosen.nii');
    fs.writeFileSync(file, bytes);
    await chooseFile(page, '#file', file);
    let out = await uploadOutcome(page);
    eq(out.phase, 'ready', `chosen .nii: stored as a volume (${out.text})`);
    let vols = (await getJson(server.base, '/volumes')).body.volumes;
    const chosen = vols.find((v) => v.name === 'chosen');
    ok(chosen && chosen.state === 'ready', 'POST /volumes got it, named from the file');
    await page.waitForSelector(`#volume-list li.current[data-id="${chosen.id}"]`, { state: 'attached', ...WAIT });
    await checkShown(page, 2, 3, Number(await page.inputValue('#k-range')), { file: false, id: chosen.id });
    // Dropped: a gzipped one, through a real drop event's DataTransfer.
    const gz = zlib.gzipSync(makeNifti(dims, 2, 8, noise(20 * 18 * 6, 5)));
    await chooseFile(page, '#vfile', []); // clears the marks only
    const dt = await page.evaluateHandle((b64) => {
      const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const d = new DataTransfer();
      d.items.add(new File([bin], 'dropped.nii.gz', { type: 'application/gzip' }));
      return d;
    }, gz.toString('base64'));
    await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
    out = await uploadOutcome(page);
    eq(out.phase, 'ready', `dropped .nii.gz: stored as a volume (${out.text})`);
    vols = (await getJson(server.base, '/volumes')).body.volumes;
    const dropped = vols.find((v) => v.name === 'dropped');
    ok(dropped && dropped.state === 'ready', 'POST /volumes got the dropped file');
    eq((await getJson(server.base, '/slices')).body.slices.length, slicesBefore, 'no slice upload was tried');
    eq(await page.textContent('#upload-msg'), 'dropped.nii.gz: a NIfTI volume, uploaded as a volume (below)', 'the PNG area says where it went');
    await waitIdle(page);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a volume uploaded without its original and with a PSNR target: what is kept, said; no made-up original', async () => {
  await page.fill('#vpsnr', '35');
  await page.uncheck('#vkeep');
  await chooseFile(page, '#vfile', NII);
  const out = await uploadOutcome(page);
  eq(out.phase, 'ready', `stored (${out.text})`);
  await page.fill('#vpsnr', '');
  await page.check('#vkeep');
  const id = await page.getAttribute('#volume-list li.current', 'data-id');
  ok(id !== vol.id, 'another volume than the default upload (the options count in the id)');
  const info = (await getJson(server.base, `/volumes/${id}`)).body;
  eq([info.original_kept, info.target], [false, { psnr: 35 }], 'the form\'s options reached the API');
  await waitIdle(page);
  const sizes = await page.textContent('#slice-sizes');
  const lo = Math.min(...info.ranks), hi = Math.max(...info.ranks);
  ok(sizes.includes(`original not kept: full rank is the stored rank (${lo === hi ? `rank ${lo}` : `ranks ${lo}–${hi}`}, quantised factors)`), `original_kept said: ${sizes}`);
  ok(sizes.includes('target: PSNR 35 dB per slice'), 'the target said');
  ok(/^stored \d[\d.]* (B|KiB|MiB) · upload \d[\d.]* (B|KiB|MiB) /.test(sizes), `stored · upload with units: ${sizes}`);
  eq(await page.getAttribute('#slice-sizes', 'data-stored'), String(info.stored_bytes), 'the stored bytes are the info\'s');
  eq(await page.textContent('#orig-caption'), 'Stored rank (original not kept)', 'the left image is not called the original');
  ok(!(await page.isVisible('#cv-diff')), 'no difference map');
  ok(await page.isVisible('#diff-none'), 'and a line saying why');
  eq(await page.textContent('#dl-original'), 'stored rank (PNG; the original was not kept)', 'nor is its download');
  // The left image is the server's slice at full rank, which is the stored rank.
  const k = Number(await page.inputValue('#k-range'));
  const index = Number(await page.inputValue('#index-range'));
  const { c, w } = await checkShown(page, 2, index, k, { file: false, id });
  const full = Math.min(info.slice_rows, info.slice_cols);
  const stored = decodeGray((await get(server.base, `/volumes/${id}/reconstruct?k=${full}&axis=2&index=${index}`)).buf);
  const orig = await canvasGray(page, 'cv-original');
  eq(firstMismatch(orig.gray, stored.data.map((v) => windowed(v, c, w))), -1, 'the left image is the stored rank, exactly');
  // Metrics: none that needs the original; energy as /quality says; its note shown.
  const ran = await page.getAttribute('#cv-recon', 'data-backend');
  const q = (await getJson(server.base, `/volumes/${id}/quality?k=${k}&backend=${ran}`)).body;
  eq([q.original_kept, q.volume.mse], [false, null], 'the API has no MSE without the original');
  await page.waitForSelector(`#quality[data-k="${k}"]`, { state: 'attached', ...WAIT });
  for (const m of ['mse', 'psnr', 'psnr_range', 'ssim'])
    eq(await page.textContent(`#quality dd[data-metric="${m}"]`), '— (original not kept)', `slice ${m}: not made up`);
  for (const m of ['mse', 'psnr', 'ssim'])
    eq(await page.textContent(`#vquality dd[data-metric="${m}"]`), '— (original not kept)', `volume ${m}: not made up`);
  eq(await page.getAttribute('#vquality dd[data-metric="energy"]', 'data-value'), String(q.volume.energy), 'the volume\'s energy is the API\'s');
  eq(await page.textContent('#vquality-note'), q.note, 'the API\'s note');
  await page.screenshot({ path: path.join(ARTIFACTS, 'volume-no-original-1440.png'), fullPage: true });
  // Along another axis the page computes MSE itself: not without the original.
  await page.selectOption('#vaxis', '1');
  await page.waitForSelector('#cv-recon[data-pos^="1:"]', { state: 'attached', ...WAIT });
  await waitIdle(page);
  eq(await page.textContent('#quality dd[data-metric="mse"]'), '— (original not kept)', 'no page-made MSE across axes');
  // A volume with its original puts it all back.
  await page.click(`#volume-list li[data-id="${vol.id}"] .pick`);
  await page.waitForSelector(`#cv-recon[data-pos]`, { state: 'attached', ...WAIT });
  await waitIdle(page);
  eq(await page.textContent('#orig-caption'), 'Original', 'the original again');
  ok(await page.isVisible('#cv-diff'), 'the difference map again');
  ok((await page.textContent('#slice-sizes')).includes('original voxels kept losslessly') &&
     (await page.textContent('#slice-sizes')).includes('target: every component'), 'kept and every component said');
});
