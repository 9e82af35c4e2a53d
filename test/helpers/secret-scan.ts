import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The whole suite's logs and posted messages are scanned for secrets after the run
 * (test/global-setup.ts). Test code registers the secrets it uses and records what
 * the bot wrote: log lines and the bodies it sent to the chat platforms.
 */
const dir = process.env.FAIRBOT_SECRET_SCAN_DIR;

function append(file: string, line: string) {
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  appendFileSync(join(dir, `${file}-${process.pid}.jsonl`), `${JSON.stringify(line)}\n`);
}

export function registerSecret(value: string | undefined): void {
  if (value && value.length >= 4) append('secrets', value);
}

/** `where` says what it was (e.g. "log", "slack chat.postMessage"), for the failure message. */
export function recordOutput(where: string, text: string): void {
  append('output', `${where}\t${text}`);
}
