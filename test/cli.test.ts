/**
 * `fairbot imagine | gpu status | gpu kill` end to end against the stand-ins: the file
 * holds exactly the bytes the diffusion server sent, progress goes to stderr, and the
 * exit code says whether an image was written.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { ConfigError } from '../src/config.js';
import { inTerminalWords, messages } from '../src/messages.js';
import { FAIR_EMAIL, FAIR_PASSWORD, tempDir } from './helpers/app.js';
import { recordOutput } from './helpers/secret-scan.js';
import { startDiffusionStandin, type DiffusionStandin } from './standins/diffusion.js';
import { freePort, startFairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    this.text += chunk.toString('utf8');
    done();
  }
}

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function setup() {
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, coldStartMs: 100 });
  cleanups.push(() => fair.close());
  const dir = tempDir('fairbot-cli-');
  cleanups.push(() => dir.remove());
  const env: Record<string, string> = {
    FAIR_SERVER_URL: fair.url,
    FAIR_EMAIL,
    FAIR_PASSWORD,
    FAIR_PORTS: `${await freePort()}:8080`,
    DATA_DIR: join(dir.path, 'data'),
    LOG_LEVEL: 'warn',
    IDLE_SHUTDOWN_MIN: '0',
  };
  return { fair, dir: dir.path, env };
}

async function cli(argv: string[], env: Record<string, string>) {
  const stdout = new Collect();
  const stderr = new Collect();
  const code = await runCli(argv, { env, stdout, stderr });
  recordOutput('cli stdout', stdout.text);
  recordOutput('cli stderr', stderr.text);
  return { code, stdout: stdout.text, stderr: stderr.text };
}

describe('fairbot imagine', () => {
  it("writes exactly the server's image to --out, exit 0, progress on stderr, the path on stdout", async () => {
    const { fair, dir, env } = await setup();
    const file = join(dir, 'fox.png');
    const { code, stdout, stderr } = await cli(['imagine', 'a red fox', '--out', file], env);
    expect(code).toBe(0);
    expect(readFileSync(file).equals(pngForPrompt('a red fox'))).toBe(true);
    expect(stdout).toBe(`${file}\n`);
    expect(stderr).toContain('Warming up the GPU');
    expect(stderr).toContain('Generating your image');
    expect(stderr).toMatch(new RegExp(`Wrote ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(${pngForPrompt('a red fox').length} bytes`));
    expect(fair.startPrograms()).toBe(1);
  });

  it('a second run uses the server the first one left running (recorded in DATA_DIR)', async () => {
    const { fair, dir, env } = await setup();
    expect((await cli(['imagine', 'first', '--out', join(dir, '1.png')], env)).code).toBe(0);
    expect((await cli(['imagine', 'second', '--out', join(dir, '2.png')], env)).code).toBe(0);
    expect(readFileSync(join(dir, '2.png')).equals(pngForPrompt('second'))).toBe(true);
    expect(fair.startPrograms()).toBe(1);
  });

  it('a failed generation exits 1 with the reason on stderr and writes no file', async () => {
    const { fair, dir, env } = await setup();
    fair.events.on('diffusion-listening', (d: DiffusionStandin) => d.setFault('500'));
    const file = join(dir, 'nothing.png');
    const { code, stdout, stderr } = await cli(['imagine', 'doomed', '--out', file], env);
    expect(code).toBe(1);
    expect(existsSync(file)).toBe(false);
    expect(stdout).toBe('');
    expect(stderr).toContain(`fairbot: ${inTerminalWords(messages.inferenceFailed('the GPU server answered HTTP 500 ("{"error":"CUDA out of memory"}")'))}`);
    // The terminal user is the admin: no "tell an admin", but what to check.
    expect(stderr).not.toMatch(/admin/i);
    expect(stderr).toContain('check the diffusion server ("fairbot gpu status"');
  });

  it('shows human lines only, no JSON logs, unless LOG_LEVEL is set', async () => {
    const { fair, dir, env } = await setup();
    fair.events.on('diffusion-listening', (d: DiffusionStandin) => d.setFault('500'));
    const { LOG_LEVEL: _level, ...unset } = env;
    const quiet = await cli(['imagine', 'doomed', '--out', join(dir, 'q.png')], unset);
    expect(quiet.code).toBe(1);
    const lines = quiet.stderr.trim().split('\n');
    expect(lines.length).toBeGreaterThan(1);
    for (const line of lines) expect(line).toMatch(/^(\[\w+\] |fairbot: )/);

    const verbose = await cli(['imagine', 'doomed', '--out', join(dir, 'v.png')], { ...env, LOG_LEVEL: 'info' });
    const json = verbose.stderr.split('\n').filter((line) => line.startsWith('{'));
    expect(json.map((line) => (JSON.parse(line) as { msg: string }).msg)).toContain('job failed');
  });

  it('without a GPU server configured (no Fair account, no INFERENCE_URL) is a configuration error', async () => {
    const dir = tempDir('fairbot-cli-');
    cleanups.push(() => dir.remove());
    await expect(cli(['imagine', 'a red fox'], { DATA_DIR: dir.path })).rejects.toThrow(ConfigError);
    await expect(cli(['gpu', 'status'], { DATA_DIR: dir.path })).rejects.toThrow(/^FAIR_EMAIL and FAIR_PASSWORD .* or INFERENCE_URL/);
  });

  it('an --out it cannot write exits 1 and says why before any GPU is started', async () => {
    const { fair, dir, env } = await setup();
    const notADir = join(dir, 'a-file');
    writeFileSync(notADir, 'not a directory');
    for (const [file, code] of [
      [join(dir, 'no-such-dir', 'x.png'), 'ENOENT'],
      [join(notADir, 'x.png'), 'ENOTDIR'],
      [dir, 'EISDIR'],
    ] as const) {
      const result = await cli(['imagine', 'nowhere to go', '--out', file], env);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(`fairbot: cannot write ${file} (${code}); nothing was generated\n`);
      expect(result.stdout).toBe('');
    }
    expect(fair.requests).toHaveLength(0);
    expect(fair.startPrograms()).toBe(0);
  });

  it('an --out that can be written is not left behind when the job fails', async () => {
    const { fair, dir, env } = await setup();
    fair.events.on('diffusion-listening', (d: DiffusionStandin) => d.setFault('500'));
    const file = join(dir, 'probe.png');
    expect((await cli(['imagine', 'doomed', '--out', file], env)).code).toBe(1);
    expect(existsSync(file)).toBe(false);
  });

  it('a refused prompt exits 1 in words, without touching Fair', async () => {
    const { fair, env } = await setup();
    const { code, stderr } = await cli(['imagine', '   '], env);
    expect(code).toBe(1);
    expect(stderr).toBe(`fairbot: ${inTerminalWords(messages.promptEmpty)}\n`);
    expect(stderr).toContain('e.g. fairbot imagine "a red fox in the snow"');
    expect(fair.requests).toHaveLength(0);
  });

  it('works without Fair credentials against INFERENCE_URL', async () => {
    const diffusion = await startDiffusionStandin();
    cleanups.push(() => diffusion.close());
    const dir = tempDir('fairbot-cli-');
    cleanups.push(() => dir.remove());
    const env = { INFERENCE_URL: diffusion.url, DATA_DIR: join(dir.path, 'data'), LOG_LEVEL: 'warn' };
    const file = join(dir.path, 'direct.png');
    expect((await cli(['imagine', 'direct', '--out', file], env)).code).toBe(0);
    expect(readFileSync(file).equals(pngForPrompt('direct'))).toBe(true);
    const kill = await cli(['gpu', 'kill'], env);
    expect(kill.code).toBe(1);
    expect(kill.stderr).toContain(messages.gpuKillNotManaged);
  });
});

describe('fairbot gpu', () => {
  it('status says so when the Fair control plane does not answer', async () => {
    const { fair, env } = await setup();
    fair.setFault('down');
    const status = await cli(['gpu', 'status'], env);
    expect(status.stdout).toMatch(/Fair control plane: not answering \(POST \/auth\/login: cannot reach 127\.0\.0\.1:\d+ \([A-Z_]+\)\)/);
  });

  it('status reports the server an earlier run started; kill stops it; then status says stopped', async () => {
    const { fair, dir, env } = await setup();
    expect((await cli(['imagine', 'warm it up', '--out', join(dir, 'w.png')], env)).code).toBe(0);
    const [container] = [...fair.containers.values()];

    const status = await cli(['gpu', 'status'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('GPU server: ready');
    expect(status.stdout).toContain('Node: node-1 (127.0.0.1)');
    expect(status.stdout).toContain(`Container: ${container!.id.slice(0, 12)}`);
    expect(status.stdout).toContain(`Program: ${container!.programId}`);
    expect(status.stdout).toContain('Jobs: 0 waiting, 0 running');
    // Checked, not remembered: Fair answered just now; the last generation is the earlier run's, from DATA_DIR.
    expect(status.stdout).toContain('Fair control plane: answering (1 node)');
    expect(status.stdout).toMatch(/Last generation: \d+ s ago \(\d+\.\d s\)/);

    const kill = await cli(['gpu', 'kill'], env);
    expect(kill.code).toBe(0);
    expect(kill.stdout).toBe(`${inTerminalWords(messages.gpuKilled(0))}\n`);
    expect(fair.killPrograms()).toEqual([{ node: 'node-1', containerId: container!.id }]);
    expect(fair.containers.get(container!.id)!.running).toBe(false);

    const after = await cli(['gpu', 'status'], env);
    expect(after.stdout).toContain('GPU server: stopped');
    expect(after.stdout).not.toContain('Container:');
    const again = await cli(['gpu', 'kill'], env);
    expect(again.stdout).toBe(`${messages.gpuNotRunning}\n`);
    expect(fair.killPrograms()).toHaveLength(1);
  });

  it('an unknown or missing subcommand is a usage error (exit 2) that touches nothing', async () => {
    const { fair, env } = await setup();
    const reboot = await cli(['gpu', 'reboot'], env);
    expect(reboot.code).toBe(2);
    expect(reboot.stderr).toContain('Unknown subcommand "reboot". Usage: fairbot gpu status or fairbot gpu kill.');
    const none = await cli(['gpu'], env);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('Usage:');
    expect(fair.requests).toHaveLength(0);
  });
});

describe('fairbot usage and configuration', () => {
  it('--help prints the usage on stdout and exits 0; no command is a usage error on stderr, exit 2', async () => {
    const help = await cli(['--help'], {});
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('fairbot imagine');
    expect(help.stderr).toBe('');
    expect((await cli(['-h'], {})).stdout).toBe(help.stdout);
    const none = await cli([], {});
    expect(none.code).toBe(2);
    expect(none.stdout).toBe('');
    expect(none.stderr).toContain('Usage:');
  });

  it('--version prints the version of package.json on stdout', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      const result = await cli([flag], {});
      expect(result).toEqual({ code: 0, stdout: `fairbot ${version}\n`, stderr: '' });
    }
  });

  it('an unknown command, an unknown flag or imagine without a prompt exit 2', async () => {
    const paint = await cli(['paint', 'x'], {});
    expect(paint.code).toBe(2);
    expect(paint.stderr).toContain('unknown command "paint"');
    const flag = await cli(['imagine', 'x', '--colour', 'red'], {});
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain("Unknown option '--colour'");
    const bare = await cli(['imagine'], {});
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('imagine needs a prompt');
  });

  it('a bad value throws a ConfigError naming it (the bin turns it into exit 2)', async () => {
    await expect(cli(['gpu', 'status'], { FAIR_PORTS: '5000' })).rejects.toThrow(ConfigError);
    await expect(cli(['gpu', 'status'], { FAIR_PORTS: '5000' })).rejects.toThrow('FAIR_PORTS must look like 5000:8080, got "5000"');
  });
});

describe('the fairbot bin as a child process', () => {
  it('node --import tsx src/cli/main.ts imagine writes the exact image and exits 0', async () => {
    const { fair, dir, env } = await setup();
    const file = join(dir, 'child.png');
    const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'imagine', 'a red fox', '--out', file], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
      child.on('error', reject);
      child.on('close', (c) => {
        clearTimeout(timer);
        resolve({ code: c, stdout: out, stderr: err });
      });
    });
    recordOutput('cli child stderr', stderr);
    expect(stderr).toContain('Generating your image');
    expect(code).toBe(0);
    expect(stdout).toBe(`${file}\n`);
    expect(readFileSync(file).equals(pngForPrompt('a red fox'))).toBe(true);
    expect(fair.startPrograms()).toBe(1);
  });
});
