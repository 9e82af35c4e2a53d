/**
 * The production install an operator runs outside Docker, in a copy of the project
 * (tracked and new files, as a fresh clone has them), with npm and the npm registry:
 *
 *   npm ci && npm prune --omit=dev     # builds dist/ (prepare), then drops the dev tools
 *   npm ci --omit=dev                  # later reinstalls: dist/ is already built
 *
 * The result starts with `npm start` (a configuration error here, exit 2, one line) and
 * `fairbot --version`; without dist/, `prepare` says how to install instead of failing on tsc.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/app.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const dir = tempDir('fairbot-install-');
afterAll(() => dir.remove());

/** better-sqlite3 built from this Node's headers (no prebuilt binary from GitHub needed), on every core. */
const npmEnv = {
  ...process.env,
  npm_config_build_from_source: 'true',
  JOBS: 'max',
  npm_config_fund: 'false',
  npm_config_audit: 'false',
  npm_config_update_notifier: 'false',
};

function run(command: string, args: string[], env: Record<string, string | undefined> = npmEnv) {
  process.stderr.write(`test:install: ${command} ${args.join(' ')}\n`);
  const result = spawnSync(command, args, { cwd: dir.path, env, encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function copyProject(): void {
  const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], { cwd: ROOT });
  execFileSync('tar', ['--null', '-T', '-', '-cf', join(dir.path, '.project.tar')], { cwd: ROOT, input: files });
  execFileSync('tar', ['-xf', '.project.tar'], { cwd: dir.path });
  rmSync(join(dir.path, '.project.tar'));
}

describe('a production install outside Docker', () => {
  it('npm ci && npm prune --omit=dev: built, no dev tools, starts; npm ci --omit=dev then works; prepare explains a missing dist/', () => {
    copyProject();
    const install = run('npm', ['ci']);
    expect(install.code, install.stderr).toBe(0);
    const prune = run('npm', ['prune', '--omit=dev']);
    expect(prune.code, prune.stderr).toBe(0);
    expect(existsSync(join(dir.path, 'dist/main.js'))).toBe(true);
    expect(existsSync(join(dir.path, 'node_modules/typescript'))).toBe(false);
    expect(existsSync(join(dir.path, 'node_modules/vitest'))).toBe(false);

    // No chat platform configured: the one-line configuration error, from the installed build.
    const start = run('npm', ['start', '--silent'], { PATH: process.env.PATH, HOME: dir.path, INFERENCE_URL: 'http://127.0.0.1:9' });
    expect(start.code).toBe(2);
    expect(start.stderr).toMatch(/^fairbot: configuration error: DISCORD_TOKEN or SLACK_BOT_TOKEN must be set/m);
    const version = run('node', ['dist/cli/main.js', '--version']);
    expect(version.stdout.trim()).toMatch(/^fairbot \d+\.\d+\.\d+$/);

    // A reinstall without dev dependencies keeps the build (this failed on tsc before).
    const reinstall = run('npm', ['ci', '--omit=dev']);
    expect(reinstall.code, reinstall.stderr).toBe(0);
    expect(existsSync(join(dir.path, 'node_modules/better-sqlite3'))).toBe(true);
    expect(run('node', ['dist/cli/main.js', '--version']).code).toBe(0);

    // Without dist/ and without TypeScript, prepare says what to run instead.
    rmSync(join(dir.path, 'dist'), { recursive: true });
    const prepare = run('npm', ['run', 'prepare', '--silent']);
    expect(prepare.code).not.toBe(0);
    expect(prepare.stderr).toContain('install with `npm ci && npm prune --omit=dev` instead');
  });
});
