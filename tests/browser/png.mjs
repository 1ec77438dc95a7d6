// png.mjs - a minimal grayscale PNG decoder and encoder on node:zlib, independent of the page's code
import zlib from 'node:zlib';

const SIG = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

/* Decodes a non-interlaced grayscale PNG (color type 0, bit depth 8 or 16).
 * Returns {width, height, depth, data} with data a Uint8Array or Uint16Array. */
export function decodeGray(buf) {
  if (buf.length < 8 || !buf.subarray(0, 8).equals(SIG)) throw new Error('not a PNG');
  let off = 8, ihdr = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off), type = buf.toString('latin1', off + 4, off + 8);
    const body = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      ihdr = { width: body.readUInt32BE(0), height: body.readUInt32BE(4), depth: body[8], ctype: body[9], interlace: body[12] };
    } else if (type === 'IDAT') {
      idat.push(body);
    } else if (type === 'IEND') {
      break;
    }
    off += 12 + len;
  }
  if (!ihdr) throw new Error('PNG without IHDR');
  const { width, height, depth, ctype, interlace } = ihdr;
  if (ctype !== 0 || interlace !== 0 || (depth !== 8 && depth !== 16))
    throw new Error(`unexpected PNG layout: color type ${ctype}, depth ${depth}, interlace ${interlace}`);
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const bpp = depth / 8, stride = width * bpp;
  if (raw.length !== height * (stride + 1)) throw new Error('PNG data size mismatch');
  const out = depth === 16 ? new Uint16Array(width * height) : new Uint8Array(width * height);
  let prev = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? line[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let p;
      switch (filter) {
        case 0: p = 0; break;
        case 1: p = a; break;
        case 2: p = b; break;
        case 3: p = Math.floor((a + b) / 2); break;
        case 4: {
          const q = a + b - c, pa = Math.abs(q - a), pb = Math.abs(q - b), pc = Math.abs(q - c);
          p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw new Error(`bad PNG filter ${filter}`);
      }
      line[i] = (line[i] + p) & 0xff;
    }
    for (let x = 0; x < width; x++)
      out[y * width + x] = depth === 16 ? line.readUInt16BE(2 * x) : line[x];
    prev = line;
  }
  return { width, height, depth, data: out };
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, body) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(body.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), body])), 0);
  return Buffer.concat([head, body, crc]);
}

/* Encodes width x height gray values (0..65535) as a 16-bit grayscale PNG. */
export function encodeGray16(width, height, values) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 16; // bit depth; color type 0, compression 0, filter 0, interlace 0
  const raw = Buffer.alloc(height * (2 * width + 1));
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) raw.writeUInt16BE(values[y * width + x], y * (2 * width + 1) + 1 + 2 * x);
  return Buffer.concat([SIG, chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
