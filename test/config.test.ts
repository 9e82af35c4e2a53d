/**
 * Configuration (the README's configuration reference): the defaults, and a bad value stopping the process with
 * one line that names the variable.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import dotenv from 'dotenv';
import { describe, expect, it } from 'vitest';
import { ConfigError, canManageServer, loadConfig, requireBotSetup, requireGpu } from '../src/config.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('applies the documented defaults to an empty environment', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      fairServerUrl: 'https://faircompute.com:8000',
      fairNode: 'any',
      fairImage: 'faircompute/diffusion-octo:v1',
      fairRuntime: 'nvidia',
      fairPorts: { host: 5000, container: 8080 },
      startupTimeoutMs: 600_000,
      inferTimeoutMs: 120_000,
      idleShutdownMs: 20 * 60_000,
      queueConcurrency: 1,
      queueMax: 100,
      userMaxPending: 3,
      adminIds: [],
      discordApiUrl: 'https://discord.com/api',
      slackPort: 3000,
      slackApiUrl: 'https://slack.com/api/',
      dataDir: './data',
      logLevel: 'info',
      secrets: [],
    });
    expect(config.fairEmail).toBeUndefined();
    expect(config.fairPassword).toBeUndefined();
    expect(config.inferenceUrl).toBeUndefined();
    expect(config.discordToken).toBeUndefined();
    expect(config.slackBotToken).toBeUndefined();
    expect(canManageServer(config)).toBe(false);
  });

  it('treats empty values as unset (as `VAR=` in .env or --env-file gives them)', () => {
    const config = loadConfig({
      FAIR_SERVER_URL: '',
      FAIR_IMAGE: '  ',
      FAIR_PORTS: '',
      DATA_DIR: '',
      STARTUP_TIMEOUT_S: '',
      IDLE_SHUTDOWN_MIN: ' ',
      LOG_LEVEL: '',
      FAIR_EMAIL: '',
      INFERENCE_URL: '',
    });
    expect(config.fairServerUrl).toBe('https://faircompute.com:8000');
    expect(config.fairImage).toBe('faircompute/diffusion-octo:v1');
    expect(config.fairPorts).toEqual({ host: 5000, container: 8080 });
    expect(config.dataDir).toBe('./data');
    expect(config.startupTimeoutMs).toBe(600_000);
    expect(config.idleShutdownMs).toBe(20 * 60_000);
    expect(config.logLevel).toBe('info');
    expect(config.fairEmail).toBeUndefined();
    expect(config.inferenceUrl).toBeUndefined();
  });

  it('parses every variable it is given', () => {
    const config = loadConfig({
      FAIR_SERVER_URL: 'http://fair.internal:8000/',
      FAIR_EMAIL: 'me@example.com',
      FAIR_PASSWORD: 'hunter2-long',
      FAIR_NODE: 'node-7',
      FAIR_PORTS: ' 5001:8081 ',
      INFERENCE_URL: 'http://10.0.0.5:5000/',
      STARTUP_TIMEOUT_S: '90',
      INFER_TIMEOUT_S: '2.5',
      QUEUE_CONCURRENCY: '2',
      QUEUE_MAX: '7',
      USER_MAX_PENDING: '1',
      DISCORD_TOKEN: 'discord-token-value',
      SLACK_BOT_TOKEN: 'xoxb-slack-token',
      SLACK_SIGNING_SECRET: 'signing-secret',
      SLACK_PORT: '0',
      SLACK_API_URL: 'http://127.0.0.1:9/api',
      LOG_LEVEL: 'debug',
    });
    expect(config.fairServerUrl).toBe('http://fair.internal:8000');
    expect(config.fairPorts).toEqual({ host: 5001, container: 8081 });
    expect(config.inferenceUrl).toBe('http://10.0.0.5:5000');
    expect(config.startupTimeoutMs).toBe(90_000);
    expect(config.inferTimeoutMs).toBe(2_500);
    expect(config.queueConcurrency).toBe(2);
    expect(config.queueMax).toBe(7);
    expect(config.userMaxPending).toBe(1);
    expect(config.slackPort).toBe(0);
    expect(config.slackApiUrl).toBe('http://127.0.0.1:9/api/');
    expect(config.logLevel).toBe('debug');
    expect(canManageServer(config)).toBe(true);
    // Every secret is known to the logger's scrubber.
    expect(config.secrets).toEqual(expect.arrayContaining(['hunter2-long', 'discord-token-value', 'xoxb-slack-token', 'signing-secret']));
  });

  it('allows decimals for IDLE_SHUTDOWN_MIN (0.05 is 3 s) and 0 for never', () => {
    expect(loadConfig({ IDLE_SHUTDOWN_MIN: '0.05' }).idleShutdownMs).toBe(3_000);
    expect(loadConfig({ IDLE_SHUTDOWN_MIN: '0.002' }).idleShutdownMs).toBe(120);
    expect(loadConfig({ IDLE_SHUTDOWN_MIN: '0' }).idleShutdownMs).toBe(0);
    expect(loadConfig({ IDLE_SHUTDOWN_MIN: '1.5' }).idleShutdownMs).toBe(90_000);
  });

  it('parses ADMIN_IDS as a comma list of platform:id, spaces and empty entries ignored', () => {
    expect(loadConfig({ ADMIN_IDS: 'discord:123456789012345678, slack:U0123ABC ,,' }).adminIds).toEqual(['discord:123456789012345678', 'slack:U0123ABC']);
    expect(loadConfig({ ADMIN_IDS: '' }).adminIds).toEqual([]);
    expect(configError({ ADMIN_IDS: 'discord:1,bob' }).message).toBe('ADMIN_IDS entries must look like discord:<user id> or slack:<user id>, got "bob"');
    expect(configError({ ADMIN_IDS: 'teams:42' }).message).toMatch(/^ADMIN_IDS .*"teams:42"/);
  });

  it('names FAIR_PORTS and what it expected', () => {
    expect(configError({ FAIR_PORTS: '5000' }).message).toBe('FAIR_PORTS must look like 5000:8080, got "5000"');
    expect(configError({ FAIR_PORTS: '5000:99999' }).message).toBe('FAIR_PORTS must look like 5000:8080, got "5000:99999"');
    expect(configError({ FAIR_PORTS: '0:8080' }).message).toBe('FAIR_PORTS must look like 5000:8080, got "0:8080"');
    expect(configError({ FAIR_PORTS: 'http:8080' }).message).toBe('FAIR_PORTS must look like 5000:8080, got "http:8080"');
  });

  const bad: Array<[variable: string, value: string, says: RegExp]> = [
    ['FAIR_SERVER_URL', 'faircompute.com:8000', /http\(s\) URL/],
    ['INFERENCE_URL', '10.0.0.5:5000', /http\(s\) URL/],
    ['DISCORD_API_URL', 'discord', /http\(s\) URL/],
    ['SLACK_API_URL', 'ftp://slack.com/api', /http\(s\) URL/],
    ['STARTUP_TIMEOUT_S', 'ten', /number/],
    ['STARTUP_TIMEOUT_S', '0', /at least 1/],
    ['INFER_TIMEOUT_S', '-5', /at least 1/],
    ['IDLE_SHUTDOWN_MIN', '-1', /at least 0/],
    ['IDLE_SHUTDOWN_MIN', 'soon', /number/],
    ['QUEUE_CONCURRENCY', '1.5', /whole number/],
    ['QUEUE_CONCURRENCY', '0', /at least 1/],
    ['QUEUE_MAX', '0', /at least 1/],
    ['QUEUE_MAX', 'lots', /number/],
    ['USER_MAX_PENDING', '0', /at least 1/],
    ['SLACK_PORT', '70000', /at most 65535/],
    ['LOG_LEVEL', 'verbose', /one of fatal, error, warn, info, debug, trace, silent/],
  ];

  it.each(bad)('refuses %s=%j with one line naming it', (variable, value, says) => {
    const error = configError({ [variable]: value });
    expect(error.message.startsWith(`${variable} `)).toBe(true);
    expect(error.message).toMatch(says);
    expect(error.message).not.toContain('\n');
  });

  it('wants FAIR_EMAIL and FAIR_PASSWORD together', () => {
    expect(configError({ FAIR_EMAIL: 'me@example.com' }).message).toMatch(/^FAIR_PASSWORD .*FAIR_EMAIL/);
    expect(configError({ FAIR_PASSWORD: 'pw-pw-pw' }).message).toMatch(/^FAIR_EMAIL .*FAIR_PASSWORD/);
  });

  it('wants SLACK_SIGNING_SECRET for Slack HTTP mode, not for Socket Mode', () => {
    expect(configError({ SLACK_BOT_TOKEN: 'xoxb-1' }).message).toMatch(/^SLACK_SIGNING_SECRET /);
    expect(loadConfig({ SLACK_BOT_TOKEN: 'xoxb-1', SLACK_APP_TOKEN: 'xapp-1' }).slackAppToken).toBe('xapp-1');
  });

  it('reports every bad variable together, one line each, naming it', () => {
    const lines = configError({ FAIR_PORTS: '5000', QUEUE_MAX: 'lots', LOG_LEVEL: 'loud', FAIR_EMAIL: 'me@example.com' }).message.split('\n');
    expect(lines).toEqual([
      'FAIR_PORTS must look like 5000:8080, got "5000"',
      'QUEUE_MAX must be a number',
      'LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent',
      'FAIR_PASSWORD must be set together with FAIR_EMAIL',
    ]);
  });

  it('wants a GPU server: a Fair account or INFERENCE_URL (the bot also wants a chat platform)', () => {
    expect(() => requireGpu(loadConfig({}))).toThrow(
      new ConfigError('FAIR_EMAIL and FAIR_PASSWORD (to start a GPU server on Fair) or INFERENCE_URL (a diffusion server already running) must be set'),
    );
    expect(() => requireGpu(loadConfig({ INFERENCE_URL: 'http://10.0.0.5:5000' }))).not.toThrow();
    expect(() => requireGpu(loadConfig({ FAIR_EMAIL: 'me@example.com', FAIR_PASSWORD: 'pw-pw-pw' }))).not.toThrow();
    expect(() => requireBotSetup(loadConfig({ DISCORD_TOKEN: 'discord-token' }))).toThrow(/^FAIR_EMAIL and FAIR_PASSWORD .* or INFERENCE_URL .* must be set$/);
    try {
      requireBotSetup(loadConfig({}));
    } catch (error) {
      expect((error as Error).message.split('\n').map((line) => line.split(' ')[0])).toEqual(['DISCORD_TOKEN', 'FAIR_EMAIL']);
    }
  });

  it('accepts .env.example as it ships, with the defaults it documents', () => {
    const example = dotenv.parse(readFileSync(new URL('../.env.example', import.meta.url)));
    const config = loadConfig(example);
    const defaults = loadConfig({});
    expect({ ...config, secrets: [] }).toEqual({ ...defaults, secrets: [] });
  });
});

/** Runs `node --import tsx <entry>` from the repository root and collects its output. */
function runEntry(entry: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

describe('a bad value stops the process', () => {
  it('npm start (src/main.ts) with FAIR_PORTS=5000 exits 2 with one stderr line naming FAIR_PORTS', async () => {
    const { code, stderr } = await runEntry('src/main.ts', [], { FAIR_PORTS: '5000' });
    expect(code).toBe(2);
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('FAIR_PORTS must look like 5000:8080, got "5000"');
  });

  it('npm start with several bad values exits 2 with one line for each', async () => {
    const { code, stderr } = await runEntry('src/main.ts', [], { FAIR_PORTS: '5000', SLACK_PORT: 'http' });
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([
      'fairbot: configuration error: FAIR_PORTS must look like 5000:8080, got "5000"',
      'fairbot: configuration error: SLACK_PORT must be a number',
    ]);
  });

  it('npm start with a chat platform but no GPU server exits 2 with one line naming the variables', async () => {
    const { code, stderr } = await runEntry('src/main.ts', [], { DISCORD_TOKEN: 'discord-token', DATA_DIR: '/nonexistent/fairbot' });
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toEqual([
      'fairbot: configuration error: FAIR_EMAIL and FAIR_PASSWORD (to start a GPU server on Fair) or INFERENCE_URL (a diffusion server already running) must be set',
    ]);
  });

  it('the fairbot CLI with a bad value exits 2 the same way', async () => {
    const { code, stderr, stdout } = await runEntry('src/cli/main.ts', ['gpu', 'status'], { QUEUE_MAX: 'lots' });
    expect(code).toBe(2);
    const lines = stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/QUEUE_MAX must be a number/);
    expect(stdout).toBe('');
  });
});
