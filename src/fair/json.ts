import { isSafeNumber, parse } from 'lossless-json';

/**
 * Fair's ids (program_id, bucket_id, ...) are 64-bit and may exceed 2^53, so the
 * control plane's JSON is parsed losslessly: integers that a JS number would round
 * come back as their exact decimal string.
 */
export function parseFairJson(text: string): unknown {
  return parse(text, undefined, (value: string) => (isSafeNumber(value) ? Number(value) : value));
}

/** An id as the exact string Fair sent, whether it arrived as a number or a string. */
export function fairId(value: unknown): string | undefined {
  if (typeof value === 'string' && value.length > 0) return value;
  // parseFairJson gives a safe integer as a number, a larger one as its string.
  if (Number.isInteger(value)) return String(value);
  return undefined;
}
