import { randomBytes } from 'node:crypto';
import type { GeneratedImage } from '../jobs/types.js';

/** The largest image fairbot accepts from the server (Discord and Slack refuse far less anyway). */
export const MAX_IMAGE_BYTES = 25 * 1024 * 1024;

/** Identifies PNG, JPEG or WebP by magic bytes; anything else is not an image we post. */
export function sniffImage(bytes: Buffer): Omit<GeneratedImage, 'bytes'> | undefined {
  if (bytes.length >= 8 && bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    return { mime: 'image/png', extension: 'png' };
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return { mime: 'image/jpeg', extension: 'jpg' };
  }
  if (bytes.length >= 12 && bytes.toString('latin1', 0, 4) === 'RIFF' && bytes.toString('latin1', 8, 12) === 'WEBP') {
    return { mime: 'image/webp', extension: 'webp' };
  }
  return undefined;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Decodes base64 or says it is not. Node's decoder skips what it does not know, so the
 * strict check is needed — but a regex over a 1.4 MB string costs ~8 ms inside the GPU
 * slot. Canonical base64 decodes to exactly 3/4 of its length less the padding, which
 * nothing else does: only input failing that cheap test gets the strict (slow) look.
 */
function decodeBase64(payload: string): Buffer | undefined {
  const padding = payload.endsWith('==') ? 2 : payload.endsWith('=') ? 1 : 0;
  if (payload.length % 4 === 0) {
    const bytes = Buffer.from(payload, 'base64');
    // Same length is not yet proof: '-' and '_' (base64url) decode silently too.
    if (bytes.length === (payload.length / 4) * 3 - padding && !payload.includes('-') && !payload.includes('_')) {
      return bytes;
    }
  }
  const stripped = payload.replace(/\s+/g, '');
  if (stripped.length % 4 === 1 || !BASE64.test(stripped)) return undefined;
  return Buffer.from(stripped, 'base64');
}

/**
 * Parses the body of `POST /infer` (the diffusion server's answer, `{"output":{"image_b64":...}}`). Returns the image or a sentence that
 * says what the server did wrong; never throws, whatever the body.
 */
export function parseInferAnswer(body: string): { image: GeneratedImage } | { problem: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    const start = body.trim().slice(0, 60).replace(/\s+/g, ' ');
    return { problem: `the GPU server answered something that is not JSON${start ? ` ("${start}")` : ''}` };
  }
  const output = (parsed as { output?: unknown } | null)?.output;
  const b64 = (output as { image_b64?: unknown } | null | undefined)?.image_b64;
  if (typeof b64 !== 'string' || b64.length === 0) {
    return { problem: 'the GPU server answered without an image (no output.image_b64)' };
  }
  // Some servers send a data: URL; the payload after the comma is the same base64.
  const payload = b64.replace(/^data:[^,]*;base64,/, '');
  if (Math.floor((payload.length * 3) / 4) > MAX_IMAGE_BYTES + 3) {
    return { problem: `the GPU server sent an image larger than ${MAX_IMAGE_BYTES / 1024 / 1024} MB` };
  }
  const bytes = decodeBase64(payload);
  if (!bytes) return { problem: 'the GPU server sent an image that is not valid base64' };
  if (bytes.length > MAX_IMAGE_BYTES) {
    return { problem: `the GPU server sent an image larger than ${MAX_IMAGE_BYTES / 1024 / 1024} MB` };
  }
  const kind = sniffImage(bytes);
  if (!kind) return { problem: 'the GPU server sent bytes that are not a PNG, JPEG or WebP image' };
  return { image: { bytes, ...kind } };
}

const IMAGE_KEY = Buffer.from('"image_b64"');
/** Base64 characters decoded per step: small strings, which die young. */
const DECODE_STEP = 64 * 1024;

/**
 * parseInferAnswer for the body as it arrives, in bytes, with the same results. The usual
 * answer (one `"image_b64"` holding plain, canonical base64) is decoded straight from the
 * bytes, a step at a time, into the image's buffer: no 1.4× copy of the image as a string
 * (the body as text, then the JSON string value), which for a 5 MB image meant two 6.7 MB
 * strings per answer, often promoted to the old generation and kept until a full GC.
 * The JSON around it is still parsed as a whole, with the value swapped for a one-off
 * marker that must come back as `output.image_b64`; anything else (escapes, whitespace,
 * a second key, odd base64, a problem to report) goes through parseInferAnswer.
 */
export function parseInferAnswerBytes(body: Buffer): { image: GeneratedImage } | { problem: string } {
  return decodeInPlace(body) ?? parseInferAnswer(body.toString('utf8'));
}

function decodeInPlace(body: Buffer): { image: GeneratedImage } | undefined {
  const at = body.indexOf(IMAGE_KEY);
  if (at < 0 || body.indexOf(IMAGE_KEY, at + 1) >= 0) return undefined;
  let i = skipJsonSpace(body, at + IMAGE_KEY.length);
  if (body[i] !== 0x3a /* : */) return undefined;
  i = skipJsonSpace(body, i + 1);
  if (body[i] !== 0x22 /* " */) return undefined;
  const start = i + 1;
  const end = body.indexOf(0x22, start);
  if (end < 0 || within(body, 0x5c /* \ */, start, end)) return undefined;
  let from = start;
  if (body.toString('latin1', start, Math.min(end, start + 5)) === 'data:') {
    const comma = body.indexOf(0x2c /* , */, start);
    if (comma < 0 || comma > end || comma - start > 256) return undefined;
    if (!/^data:[^,]*;base64,$/.test(body.toString('latin1', start, comma + 1))) return undefined;
    from = comma + 1;
  }
  const length = end - from;
  if (length === 0 || length % 4 !== 0 || (length / 4) * 3 > MAX_IMAGE_BYTES) return undefined;
  // Canonical base64 only: no base64url, padding only at the very end.
  if (within(body, 0x2d /* - */, from, end) || within(body, 0x5f /* _ */, from, end) || within(body, 0x3d /* = */, from, end - 2)) return undefined;
  const padding = body[end - 1] === 0x3d ? (body[end - 2] === 0x3d ? 2 : 1) : 0;
  const bytes = Buffer.allocUnsafeSlow((length / 4) * 3 - padding);
  let written = 0;
  for (let p = from; p < end; p += DECODE_STEP) {
    const q = Math.min(end, p + DECODE_STEP);
    const n = bytes.write(body.toString('latin1', p, q), written, 'base64');
    // Node skips what is not base64: anything short of 3 bytes per 4 characters was not.
    if (n !== ((q - p) / 4) * 3 - (q === end ? padding : 0)) return undefined;
    written += n;
  }
  // Not something a server can send by chance (or on purpose: it is new each time).
  const marker = `\u0000fairbot-image-${randomBytes(8).toString('hex')}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8', 0, start) + JSON.stringify(marker).slice(1, -1) + body.toString('utf8', end));
  } catch {
    return undefined;
  }
  const b64 = ((parsed as { output?: unknown } | null)?.output as { image_b64?: unknown } | null | undefined)?.image_b64;
  if (b64 !== marker) return undefined;
  const kind = sniffImage(bytes);
  if (!kind) return undefined;
  return { image: { bytes, ...kind } };
}

function skipJsonSpace(body: Buffer, i: number): number {
  while (body[i] === 0x20 || body[i] === 0x09 || body[i] === 0x0a || body[i] === 0x0d) i++;
  return i;
}

/** Whether byte `c` occurs in body[from, to). */
function within(body: Buffer, c: number, from: number, to: number): boolean {
  if (to <= from) return false;
  const i = body.indexOf(c, from);
  return i >= 0 && i < to;
}
