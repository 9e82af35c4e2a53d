import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Scans every log line and message the suite captured for every secret it used. */
export default function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'fairbot-secret-scan-'));
  process.env.FAIRBOT_SECRET_SCAN_DIR = dir;
  return () => {
    const files = readdirSync(dir);
    const lines = (prefix: string) =>
      files
        .filter((f) => f.startsWith(prefix))
        .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean))
        .map((l) => JSON.parse(l) as string);
    const secrets = [...new Set(lines('secrets-'))];
    const outputs = lines('output-');
    rmSync(dir, { recursive: true, force: true });
    const leaks: string[] = [];
    for (const output of outputs) {
      for (const secret of secrets) {
        if (output.includes(secret)) leaks.push(`${output.split('\t')[0]}: contains a secret (${secret.slice(0, 3)}…)`);
      }
    }
    if (leaks.length > 0) {
      // A teardown error alone does not fail vitest's exit code.
      process.exitCode = 1;
      throw new Error(`secrets leaked into ${leaks.length} captured outputs:\n${[...new Set(leaks)].slice(0, 20).join('\n')}`);
    }
    if (secrets.length > 0) {
      console.log(`secret scan: ${outputs.length} captured log lines and messages, ${secrets.length} secrets, no leak`);
    }
  };
}
