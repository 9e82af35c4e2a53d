// Deterministic, valid PNGs for the stand-ins: the bytes depend only on the prompt
// (and minBytes), so tests can check that the bot posts exactly what the server returned.
import { createCipheriv, createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

// Table CRC-32 (zlib.crc32 only exists from Node 20.15).
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(...parts: Buffer[]): number {
  let c = 0xffffffff;
  for (const buf of parts) for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(head.subarray(4), data), 0);
  return Buffer.concat([head, data, crc]);
}

function encodePng(width: number, height: number, rgbRows: Buffer, level = 6): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, deflate, no filter method extras, no interlace
  return Buffer.concat([PNG_SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rgbRows, { level })), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * A PNG whose pixels derive from sha256(prompt). Without minBytes: a 64x64 two-colour
 * checker with a gradient. With minBytes: AES-CTR noise seeded from the prompt, stored
 * uncompressed (deflate level 0), so the size is predictable and just above minBytes.
 */
export function pngForPrompt(prompt: string, opts: { minBytes?: number } = {}): Buffer {
  const seed = createHash('sha256').update(prompt).digest();
  const minBytes = opts.minBytes ?? 0;
  if (minBytes > 0) {
    const width = 512;
    const stride = 1 + width * 3;
    const height = Math.max(1, Math.ceil(minBytes / stride));
    const rows = createCipheriv('aes-256-ctr', seed, Buffer.alloc(16)).update(Buffer.alloc(stride * height));
    for (let y = 0; y < height; y++) rows[y * stride] = 0; // filter type None on every row
    return encodePng(width, height, rows, 0);
  }
  const size = 64;
  const stride = 1 + size * 3;
  const rows = Buffer.alloc(stride * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const base = ((x >> 3) + (y >> 3)) % 2 === 0 ? 0 : 3; // colour A = seed[0..2], B = seed[3..5]
      const o = y * stride + 1 + x * 3;
      rows[o] = seed[base]! ^ (x * 2);
      rows[o + 1] = seed[base + 1]! ^ (y * 2);
      rows[o + 2] = seed[base + 2]! ^ seed[6 + ((x + y) % 26)]!;
    }
  }
  return encodePng(size, size, rows);
}
