/**
 * `docker stop` against the image's own start command. The Dockerfile's CMD (read from the
 * file, in its runtime stage) is run as it is in the container: from the image's WORKDIR,
 * on a fresh `tsc` build of src/ beside package.json and node_modules, as the image holds
 * them. With a generation on the GPU it gets SIGTERM, as PID 1 does from `docker stop`,
 * and must shut down gracefully: the image posted, "fairbot stopped" logged, exit 0.
 * (No Docker engine here: what this checks is that the command is node itself, receiving
 * the signal, not npm or a shell that would leave node to be SIGKILLed.)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { fairEnv, FAIR_EMAIL, FAIR_PASSWORD, tempDir } from './helpers/app.js';
import { spawnBot } from './helpers/faults-process.js';
import { freePort, startFairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';
import { startSlackStandin } from './standins/slack.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** The last stage's WORKDIR and CMD, continuation lines joined. */
function runtimeCommand(dockerfile: string): { workdir: string; cmd: string } {
  const instructions = dockerfile
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const lastStage = instructions.slice(instructions.findLastIndex((line) => /^FROM\s/i.test(line)));
  const last = (keyword: string) => {
    const line = lastStage.findLast((l) => new RegExp(`^${keyword}\\s`, 'i').test(l));
    if (!line) throw new Error(`the Dockerfile's last stage has no ${keyword}`);
    return line.slice(keyword.length).trim();
  };
  return { workdir: last('WORKDIR'), cmd: last('CMD') };
}

describe('the Dockerfile CMD under docker stop', () => {
  it('is node itself in exec form, and on SIGTERM mid-generation posts the image, logs "fairbot stopped" and exits 0', async () => {
    const { workdir, cmd } = runtimeCommand(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
    // Shell form (`CMD npm start`) runs under /bin/sh -c; npm would stand between too.
    expect(cmd.startsWith('['), `CMD must be in exec form, got ${cmd}`).toBe(true);
    const argv = JSON.parse(cmd) as string[];
    expect(argv[0]).toBe('node');

    // The image's /app: package.json, node_modules and a build of src/ (no tsx, no sources).
    const dir = tempDir('fairbot-image-');
    cleanups.push(() => dir.remove());
    const app = join(dir.path, workdir);
    mkdirSync(app, { recursive: true });
    copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
    execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', join(app, 'dist')], {
      stdio: 'inherit',
    });

    const slack = await startSlackStandin();
    cleanups.push(() => slack.close());
    const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, coldStartMs: 50, diffusion: { generationMs: 1_500 } });
    cleanups.push(() => fair.close());
    const env = fairEnv(fair, await freePort(), join(dir.path, 'data'), {
      SLACK_BOT_TOKEN: slack.botToken,
      SLACK_SIGNING_SECRET: slack.signingSecret,
      SLACK_API_URL: slack.apiUrl,
      SLACK_PORT: '0',
      LOG_LEVEL: 'info',
      NODE_ENV: 'production',
    });
    const bot = spawnBot(env, { argv, cwd: app });
    cleanups.push(() => bot.kill());
    const listening = await bot.waitForLog((e) => e.msg === 'Slack adapter listening (HTTP mode)', 30_000, 'the Slack port');
    await bot.waitForLog((e) => e.msg === 'fairbot started', 10_000, 'that it started');

    const prompt = 'on the GPU at docker stop';
    await slack.sendSlashCommand(`http://127.0.0.1:${String(listening.port)}/slack/events`, { command: '/imagine', text: prompt, user_id: 'U0STOP' });
    const diffusion = await fair.waitForDiffusion(15_000);
    await slack.waitFor(() => diffusion.infers.length === 1, 15_000, 'the generation to start');

    bot.child.kill('SIGTERM');
    expect(await bot.exit(10_000)).toEqual({ code: 0, signal: null });
    expect(bot.entries.some((e) => e.msg === 'fairbot stopped')).toBe(true);
    expect(slack.channelFiles().map((share) => share.files[0]!.bytes.equals(pngForPrompt(prompt)))).toEqual([true]);
    expect(bot.stderr()).toBe('');
  }, 90_000);
});
