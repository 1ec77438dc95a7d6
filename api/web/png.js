/* png.js - decodes the server's grayscale PNGs to their raw 8- or 16-bit values.
 * Browsers reduce 16-bit PNGs to 8 bits (and may colour-manage 8-bit ones), but
 * windowing, the difference map and the value under the cursor need the values
 * the server stored. */

async function inflate(parts) {
  const stream = new Blob(parts).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/* Color type 0, bit depth 8 or 16, not interlaced (what the server writes).
 * Returns {width, height, depth, data, min, max}; data is a Uint8Array or Uint16Array. */
export async function decodeGrayPng(buf) {
  const b = new Uint8Array(buf), dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const sig = [137, 80, 78, 71, 13, 10, 26, 10];
  if (b.length < 8 || sig.some((v, i) => b[i] !== v)) throw new Error('not a PNG');
  let off = 8, width = 0, height = 0, depth = 0, ctype = -1, interlace = 0;
  const idat = [];
  while (off + 8 <= b.length) {
    const len = dv.getUint32(off), type = String.fromCharCode(...b.subarray(off + 4, off + 8));
    if (type === 'IHDR') {
      width = dv.getUint32(off + 8); height = dv.getUint32(off + 12);
      depth = b[off + 16]; ctype = b[off + 17]; interlace = b[off + 20];
    } else if (type === 'IDAT') idat.push(b.subarray(off + 8, off + 8 + len));
    else if (type === 'IEND') break;
    off += 12 + len;
  }
  if (ctype !== 0 || (depth !== 8 && depth !== 16) || interlace) throw new Error('unsupported PNG layout');
  const raw = await inflate(idat);
  const bpp = depth / 8, stride = width * bpp;
  if (raw.length < height * (stride + 1)) throw new Error('truncated PNG');
  const data = depth === 16 ? new Uint16Array(width * height) : new Uint8Array(width * height);
  let prev = new Uint8Array(stride), min = Infinity, max = -Infinity;
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    // Unfiltered in place: raw is ours, and the previous row stays readable.
    const cur = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    if (f === 1) for (let i = bpp; i < stride; i++) cur[i] = cur[i] + cur[i - bpp];
    else if (f === 2) for (let i = 0; i < stride; i++) cur[i] = cur[i] + prev[i];
    else if (f === 3) for (let i = 0; i < stride; i++) cur[i] = cur[i] + (((i >= bpp ? cur[i - bpp] : 0) + prev[i]) >> 1);
    else if (f === 4) {
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? cur[i - bpp] : 0, up = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
        const p = a + up - c, pa = Math.abs(p - a), pb = Math.abs(p - up), pc = Math.abs(p - c);
        cur[i] = cur[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? up : c);
      }
    } else if (f !== 0) throw new Error(`bad PNG filter ${f}`);
    const o = y * width;
    for (let x = 0; x < width; x++) {
      const v = depth === 16 ? (cur[2 * x] << 8) | cur[2 * x + 1] : cur[x];
      data[o + x] = v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    prev = cur;
  }
  return { width, height, depth, data, min, max };
}
