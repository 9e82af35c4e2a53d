/**
 * `fairbot imagine | gpu status | gpu kill` end to end against the stand-ins: the file
 * holds exactly the bytes the diffusion server sent, progress goes to stderr, and the
 * exit code says whether an image was written.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { ConfigError } from '../src/config.js';
import { messages } from '../src/messages.js';
import { FAIR_EMAIL, FAIR_PASSWORD, tempDir } from './helpers/app.js';
import { recordOutput } from './helpers/secret-scan.js';
import { startDiffusionStandin, type DiffusionStandin } from './standins/diffusion.js';
import { freePort, startFairStandin, type FairStandin } from './standins/fair.js';
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
  it('writes exactly the server\'s image to --out, exit 0, progress on stderr, the path on stdout', async () => {
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
    expect(stderr).toContain(`fairbot: ${messages.inferenceFailed('the GPU server answered HTTP 500 ("{"error":"CUDA out of memory"}")')}`);
  });

  it('an unwritable --out exits 1 and says why', async () => {
    const { dir, env } = await setup();
    const file = join(dir, 'no-such-dir', 'x.png');
    const { code, stderr } = await cli(['imagine', 'nowhere to go', '--out', file], env);
    expect(code).toBe(1);
    expect(stderr).toContain('Your image was generated but could not be posted');
    expect(stderr).toContain('ENOENT');
  });

  it('a refused prompt exits 1 in words, without touching Fair', async () => {
    const { fair, env } = await setup();
    const { code, stderr } = await cli(['imagine', '   '], env);
    expect(code).toBe(1);
    expect(stderr).toContain(messages.promptEmpty);
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
    expect(kill.stdout).toBe(`${messages.gpuKilled(0)}\n`);
    expect(fair.killPrograms()).toEqual([{ node: 'node-1', containerId: container!.id }]);
    expect(fair.containers.get(container!.id)!.running).toBe(false);

    const after = await cli(['gpu', 'status'], env);
    expect(after.stdout).toContain('GPU server: stopped');
    expect(after.stdout).not.toContain('Container:');
    const again = await cli(['gpu', 'kill'], env);
    expect(again.stdout).toBe(`${messages.gpuNotRunning}\n`);
    expect(fair.killPrograms()).toHaveLength(1);
  });

  it('an unknown subcommand exits 1 with the usage', async () => {
    const { env } = await setup();
    const { code, stderr } = await cli(['gpu', 'reboot'], env);
    expect(code).toBe(1);
    expect(stderr).toContain(messages.gpuUnknownSubcommand('reboot'));
  });
});

describe('fairbot usage and configuration', () => {
  it('no command prints the usage and exits 1; --help exits 0', async () => {
    const none = await cli([], {});
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('Usage:');
    const help = await cli(['--help'], {});
    expect(help.code).toBe(0);
    expect(help.stderr).toContain('fairbot imagine');
  });

  it('an unknown command exits 1', async () => {
    const { code, stderr } = await cli(['paint', 'x'], {});
    expect(code).toBe(1);
    expect(stderr).toContain('unknown command "paint"');
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
