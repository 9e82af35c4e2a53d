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
 * Parses the body of `POST /infer` (SPEC §4). Returns the image or a sentence that
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
