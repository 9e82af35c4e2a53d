export const MAX_PROMPT_LENGTH = 1000;

// Zero-width characters and bidi overrides: invisible, and used to smuggle text past readers.
const INVISIBLE = /[\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\u00AD]/gu;
// Control characters (C0, DEL, C1); tabs and newlines become spaces first.
const CONTROL = /\p{Cc}/gu;

export type PromptCheck = { ok: true; prompt: string } | { ok: false; problem: 'empty' | 'too-long'; length: number };

/** Cleans a prompt the way users expect: trimmed, one line, nothing invisible; 1 to 1000 characters. */
export function cleanPrompt(raw: unknown): PromptCheck {
  const text = typeof raw === 'string' ? raw : '';
  const cleaned = text
    .normalize('NFC')
    .replace(/[\t\n\r\v\f]+/g, ' ')
    .replace(INVISIBLE, '')
    .replace(CONTROL, '')
    .replace(/\s+/gu, ' ')
    .trim();
  const length = [...cleaned].length;
  if (length === 0) return { ok: false, problem: 'empty', length };
  if (length > MAX_PROMPT_LENGTH) return { ok: false, problem: 'too-long', length };
  return { ok: true, prompt: cleaned };
}
