/**
 * Start-up failures that point at the fix: the platform, the variable, and whether it
 * could not be reached (the address or the network: exit 1, a restart may help) or
 * refused the token (a configuration error: exit 2). Against the Discord and Slack
 * stand-ins with a wrong token, and a closed port where their API should be.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { startApp } from '../src/app.js';
import { ConfigError } from '../src/config.js';
import { LogCapture, tempDir } from './helpers/app.js';
import { startDiscordStandin } from './standins/discord.js';
import { freePort } from './standins/fair.js';
import { startSlackStandin } from './standins/slack.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** A GPU configured (a server of our own), so only the platform can fail the start. */
function baseEnv(): Record<string, string> {
  const dir = tempDir('fairbot-startup-');
  cleanups.push(() => dir.remove());
  return { INFERENCE_URL: 'http://127.0.0.1:9', DATA_DIR: dir.path, LOG_LEVEL: 'warn' };
}

async function startFailure(env: Record<string, string>): Promise<Error> {
  const app = await startApp({ env, logDestination: new LogCapture() }).catch((error: unknown) => error as Error);
  if (!(app instanceof Error)) {
    await app.stop(0);
    throw new Error('the bot started');
  }
  return app;
}

describe('Discord start-up failures', () => {
  it('a wrong token: Discord refused DISCORD_TOKEN, a configuration error', async () => {
    const discord = await startDiscordStandin();
    cleanups.push(() => discord.close());
    const error = await startFailure({ ...baseEnv(), DISCORD_TOKEN: 'not.the.token', DISCORD_API_URL: discord.apiUrl });
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toMatch(/^Discord refused DISCORD_TOKEN \(An invalid token was provided\.\): copy the bot token again/);
  });

  it('nothing at DISCORD_API_URL: could not reach Discord at that address, not a refused token', async () => {
    const discord = await startDiscordStandin();
    cleanups.push(() => discord.close());
    const apiUrl = `http://127.0.0.1:${await freePort()}/api`;
    const error = await startFailure({ ...baseEnv(), DISCORD_TOKEN: discord.token, DISCORD_API_URL: apiUrl });
    expect(error).not.toBeInstanceOf(ConfigError);
    expect(error.message).toMatch(new RegExp(`^could not reach Discord at DISCORD_API_URL=${apiUrl} \\(connect ECONNREFUSED [^)]+\\): check the address`));
    expect(error.message).not.toContain('refused DISCORD_TOKEN');
  });
});

describe('Slack start-up failures', () => {
  it('a wrong bot token: Slack refused SLACK_BOT_TOKEN, a configuration error', async () => {
    const slack = await startSlackStandin();
    cleanups.push(() => slack.close());
    const error = await startFailure({
      ...baseEnv(),
      SLACK_BOT_TOKEN: 'xoxb-not-the-token',
      SLACK_SIGNING_SECRET: slack.signingSecret,
      SLACK_API_URL: slack.apiUrl,
      SLACK_PORT: '0',
    });
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toMatch(/^Slack refused SLACK_BOT_TOKEN \(auth\.test: invalid_auth\): copy the Bot User OAuth Token/);
  });

  it('nothing at SLACK_API_URL: could not reach Slack at that address, not a refused token', async () => {
    const slack = await startSlackStandin();
    cleanups.push(() => slack.close());
    const apiUrl = `http://127.0.0.1:${await freePort()}/api/`;
    const error = await startFailure({
      ...baseEnv(),
      SLACK_BOT_TOKEN: slack.botToken,
      SLACK_SIGNING_SECRET: slack.signingSecret,
      SLACK_API_URL: apiUrl,
      SLACK_PORT: '0',
    });
    expect(error).not.toBeInstanceOf(ConfigError);
    expect(error.message).toBe(`could not reach Slack at SLACK_API_URL=${apiUrl} (auth.test got no answer): check the address and this machine's network`);
  });
});

describe('npm start with a refused token', () => {
  it('exits 2 with one line naming the platform and the variable', async () => {
    const discord = await startDiscordStandin();
    cleanups.push(() => discord.close());
    const env = { ...baseEnv(), DISCORD_TOKEN: 'not.the.token', DISCORD_API_URL: discord.apiUrl, LOG_LEVEL: 'silent' };
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 80_000);
      child.on('error', reject);
      child.on('close', (c) => {
        clearTimeout(timer);
        resolve({ code: c, stderr: err });
      });
    });
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([
      expect.stringMatching(/^fairbot: configuration error: Discord refused DISCORD_TOKEN \(An invalid token was provided\.\)/),
    ]);
  }, 90_000);
});
