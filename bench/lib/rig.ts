// Shared set-up for the benchmark: the Fair and diffusion stand-ins on loopback, the
// real core services pointed at them, logs discarded (so they cost nothing to time).
import { Writable } from 'node:stream';
import { createServices, type ServiceOptions } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { Services } from '../../src/services.js';
import { fairEnv, tempDir } from '../../test/helpers/app.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../../test/standins/fair.js';
import { pngForPrompt } from '../../test/standins/png.js';

export const MB = 1024 * 1024;

/** A sink for logs and CLI progress: nothing is formatted past pino's level check. */
export function nullStream(): Writable {
  return new Writable({
    write(_chunk, _enc, done) {
      done();
    },
  });
}

const pngCache = new Map<number, Buffer>();
/**
 * One valid PNG of at least `bytes`, built once: the stand-in then only base64-encodes it,
 * so its own CPU time per /infer stays small (and is inside its generation record anyway).
 */
export function benchPng(bytes: number): Buffer {
  let png = pngCache.get(bytes);
  if (!png) {
    png = pngForPrompt(`fairbot bench ${bytes}`, { minBytes: bytes });
    pngCache.set(bytes, png);
  }
  return png;
}

export interface StandinOptions {
  coldStartMs?: number;
  loadDelayMs?: number;
  generationMs?: number;
  imageBytes?: number;
  fair?: FairOptions;
}

export async function startStandins(opts: StandinOptions = {}): Promise<{ fair: FairStandin; hostPort: number }> {
  const image = opts.imageBytes ? benchPng(opts.imageBytes) : undefined;
  const fair = await startFairStandin({
    email: 'admin@example.com',
    password: 'test-password-s3cret',
    coldStartMs: opts.coldStartMs ?? 20,
    ...opts.fair,
    diffusion: {
      loadDelayMs: opts.loadDelayMs ?? 0,
      generationMs: opts.generationMs ?? 0,
      ...(image ? { imageFor: () => image } : {}),
      ...opts.fair?.diffusion,
    },
  });
  return { fair, hostPort: await freePort() };
}

/** The bot's environment against the stand-ins: logs silent, no idle stop unless asked. */
export function benchEnv(fair: FairStandin, hostPort: number, dataDir: string, extra: Record<string, string> = {}) {
  return fairEnv(fair, hostPort, dataDir, { LOG_LEVEL: 'silent', IDLE_SHUTDOWN_MIN: '0', ...extra });
}

export interface CoreRig {
  fair: FairStandin;
  services: Services;
  env: Record<string, string>;
  dataDir: string;
  close(): Promise<void>;
}

/** Stand-ins plus the real services (default production timings unless `timing` says otherwise). */
export async function startCoreRig(
  opts: StandinOptions & { env?: Record<string, string>; durable?: boolean; timing?: ServiceOptions['timing'] } = {},
): Promise<CoreRig> {
  const { fair, hostPort } = await startStandins(opts);
  const dir = tempDir('fairbot-bench-');
  const env = benchEnv(fair, hostPort, dir.path, opts.env);
  const services = createServices(loadConfig(env), { logDestination: nullStream(), durable: opts.durable ?? true, timing: opts.timing });
  return {
    fair,
    services,
    env,
    dataDir: dir.path,
    async close() {
      await services.jobs.shutdown(0);
      await services.lifecycle.close();
      await services.inference.close();
      services.jobs.close();
      await fair.close();
      dir.remove();
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Races a promise against a deadline, so no scenario can hang the run. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`bench: ${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** What bench/platform-child.ts reports once its Slack and Discord stand-ins listen. */
export interface PlatformsStarted {
  slack: { apiUrl: string; botToken: string; signingSecret: string };
  discord: { apiUrl: string; token: string; guildId: string };
}

/** The bot's settings for those stand-ins. */
export function platformEnv(started: PlatformsStarted): Record<string, string> {
  return {
    SLACK_BOT_TOKEN: started.slack.botToken,
    SLACK_SIGNING_SECRET: started.slack.signingSecret,
    SLACK_PORT: '0',
    SLACK_API_URL: started.slack.apiUrl,
    DISCORD_TOKEN: started.discord.token,
    DISCORD_API_URL: started.discord.apiUrl,
    DISCORD_GUILD_ID: started.discord.guildId,
  };
}
