// The app with its adapters (startApp, production timings, logs silent) against the Slack
// and Discord stand-ins; loaded by adapters.ts only once the adapters exist.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { IncomingMessage, Server } from 'node:http';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { startApp, type RunningApp } from '../../src/app.js';
import { tempDir } from '../../test/helpers/app.js';
import { snowflake, startDiscordStandin, type DiscordStandin } from '../../test/standins/discord.js';
import type { FairStandin } from '../../test/standins/fair.js';
import { startSlackStandin, type SlackStandin } from '../../test/standins/slack.js';
import { forkChild } from '../lib/ipc.js';
import { benchEnv, benchPng, MB, nullStream, platformEnv, startStandins, within, type PlatformsStarted, type StandinOptions } from '../lib/rig.js';
import { generationOf, overheadRun, type OverheadRun } from './core.js';

const here = dirname(fileURLToPath(import.meta.url));

export interface PlatformRig {
  app: RunningApp;
  fair: FairStandin;
  slack?: SlackStandin;
  discord?: DiscordStandin;
  eventsUrl: string;
  close(): Promise<void>;
}

export async function startPlatformRig(opts: StandinOptions & { slack?: boolean; discord?: boolean; env?: Record<string, string> }): Promise<PlatformRig> {
  const { fair, hostPort } = await startStandins(opts);
  const slack = opts.slack ? await startSlackStandin() : undefined;
  const discord = opts.discord ? await startDiscordStandin() : undefined;
  const dir = tempDir('fairbot-bench-app-');
  const env = benchEnv(fair, hostPort, dir.path, {
    ...(slack ? { SLACK_BOT_TOKEN: slack.botToken, SLACK_SIGNING_SECRET: slack.signingSecret, SLACK_PORT: '0', SLACK_API_URL: slack.apiUrl } : {}),
    ...(discord ? { DISCORD_TOKEN: discord.token, DISCORD_API_URL: discord.apiUrl, DISCORD_GUILD_ID: discord.guildId } : {}),
    ...opts.env,
  });
  const cleanup = async () => {
    await slack?.close();
    await discord?.close();
    await fair.close();
    dir.remove();
  };
  let app: RunningApp;
  try {
    app = await within(startApp({ env, logDestination: nullStream() }), 60_000, 'the app to start');
  } catch (error) {
    await cleanup();
    throw error;
  }
  return {
    app,
    fair,
    slack,
    discord,
    eventsUrl: `http://127.0.0.1:${app.slack?.port ?? 0}/slack/events`,
    async close() {
      await app.stop(0);
      await cleanup();
    },
  };
}

/** Waits until `count()` has not changed for `quietMs` (at most `capMs`): the job's trailing calls are done. */
async function quiet(count: () => number, quietMs = 25, capMs = 1_000): Promise<void> {
  const end = performance.now() + capMs;
  let last = count();
  let since = performance.now();
  while (performance.now() < end) {
    await new Promise((r) => setTimeout(r, 5));
    const now = count();
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) return;
  }
}

/** One job's moments: the stand-in starts sending, the command reaches the bot, the image is accepted. */
interface TimedJob {
  sentAt: number;
  arrivedAt: number;
  acceptedAt: number;
}

/**
 * Three warm-up jobs, then `jobs` timed ones, one at a time on a warm GPU. `oneJob` sends the
 * command, waits for the image, lets the job's trailing calls go out, checks the image's bytes
 * and has the stand-in let go of them (see releaseFiles).
 */
async function timeJobs(
  rig: PlatformRig,
  opts: { jobs: number; runTag: string },
  platform: string,
  oneJob: (prompt: string, i: number) => Promise<TimedJob>,
): Promise<OverheadRun & { fromSend: OverheadRun }> {
  await within(rig.app.services.lifecycle.ensureReady(), 30_000, 'cold start');
  const d = rig.fair.diffusion()!;
  const totals: number[] = [];
  const fromSend: number[] = [];
  const gens: number[] = [];
  for (let i = -3; i < opts.jobs; i++) {
    const prompt = `${opts.runTag} ${platform} ${i}`;
    const t = await oneJob(prompt, i);
    if (i < 0) continue;
    totals.push(t.acceptedAt - t.arrivedAt);
    fromSend.push(t.acceptedAt - t.sentAt);
    gens.push(generationOf(d, prompt));
  }
  return { ...overheadRun(totals, gens), fromSend: overheadRun(fromSend, gens) };
}

const damaged = (prompt: string) => new Error(`bench: the image for ${prompt} arrived damaged`);

/**
 * Slack: the signed `/imagine` POST reaching the bot's HTTP server (Node's
 * `http.server.request.start` diagnostics channel, filtered to the bot's port) → the file
 * shared in the channel (completeUploadExternal at the stand-in). `fromSend` times the same
 * jobs from before the stand-in builds and signs the request: the stand-in's own work then
 * counts too, as in earlier versions of this row.
 */
export async function slackOverhead(opts: { jobs: number; runTag: string; generationMs: number }): Promise<OverheadRun & { fromSend: OverheadRun }> {
  const rig = await startPlatformRig({ slack: true, imageBytes: MB, generationMs: opts.generationMs });
  const slack = rig.slack!;
  let arrivedAt: number | undefined;
  const onRequest = (message: unknown) => {
    const { request, server } = message as { request: IncomingMessage; server: Server };
    const address = server.address();
    if (typeof address === 'object' && address?.port === rig.app.slack?.port && request.url?.startsWith('/slack/events')) {
      arrivedAt ??= performance.now();
    }
  };
  subscribe('http.server.request.start', onRequest);
  try {
    return await timeJobs(rig, opts, 'slack', async (prompt, i) => {
      const shares = slack.fileShares.length;
      arrivedAt = undefined;
      const sentAt = performance.now();
      const res = await slack.sendSlashCommand(rig.eventsUrl, { command: '/imagine', text: prompt, user_id: `U0BENCH${i + 3}` });
      if (res.status !== 200) throw new Error(`bench: Slack answered ${res.status}`);
      // Jobs run one at a time: the next file shared in the channel is this job's image.
      await slack.waitFor(() => slack.fileShares.length > shares, 30_000, `the image for ${prompt}`);
      const acceptedAt = performance.now();
      if (arrivedAt === undefined) throw new Error('bench: never saw the command reach the bot');
      // Let the job's last messages (status edit, buttons) go out before the next one starts.
      await quiet(() => slack.calls.length);
      if (!slack.fileShares[shares]!.files[0]?.bytes.equals(benchPng(MB))) throw damaged(prompt);
      slack.releaseFiles();
      return { sentAt, arrivedAt, acceptedAt };
    });
  } finally {
    unsubscribe('http.server.request.start', onRequest);
    await rig.close();
  }
}

/**
 * Discord: INTERACTION_CREATE handed to the gateway socket (the stand-in's dispatch has returned:
 * `ws` writes the frame synchronously, uncompressed) → the reply carries the attachment.
 * `fromSend` times the same jobs from before the stand-in builds the interaction (its own
 * ~0.3 ms of work then counts too, as in earlier versions of this row).
 */
export async function discordOverhead(opts: { jobs: number; runTag: string; generationMs: number }): Promise<OverheadRun & { fromSend: OverheadRun }> {
  const rig = await startPlatformRig({ discord: true, imageBytes: MB, generationMs: opts.generationMs });
  const discord = rig.discord!;
  try {
    return await timeJobs(rig, opts, 'discord', async (prompt, i) => {
      const sentAt = performance.now();
      const { id } = discord.dispatchInteraction({
        name: 'imagine',
        options: { prompt },
        userId: snowflake(Date.now() - 1e9 - i * 1e6),
        userName: `bench${i + 3}`,
      });
      const arrivedAt = performance.now();
      await discord.waitFor(() => (discord.originalMessage(id)?.attachments.length ?? 0) > 0, 30_000, `the image for ${prompt}`);
      const acceptedAt = performance.now();
      await quiet(() => discord.requests.length);
      if (!discord.originalMessage(id)!.attachments[0]!.bytes.equals(benchPng(MB))) throw damaged(prompt);
      discord.releaseFiles();
      return { sentAt, arrivedAt, acceptedAt };
    });
  } finally {
    await rig.close();
  }
}

/** (4) `commands` commands at once, half Slack half Discord, interleaved, GPU cold; the platform
 * stand-ins run in their own process (bench/platform-child.ts), the bot in this one. */
export async function ackBurst(opts: {
  commands: number;
  runTag: string;
  beforeBurst?: () => Promise<void>;
  afterBurst?: () => Promise<void>;
}): Promise<{ slack: number[]; discord: number[]; all: number[]; refused: number }> {
  const child = forkChild(join(here, '..', 'platform-child.ts'), { tsx: true });
  const next = <T>(op: string, ms: number) => child.next<T>(op, ms);
  let rig: Awaited<ReturnType<typeof startStandins>> | undefined;
  let app: RunningApp | undefined;
  const dir = tempDir('fairbot-bench-ack-');
  try {
    const started = await next<PlatformsStarted>('started', 30_000);
    // The cold start outlasts the acks; the jobs are stopped with the app afterwards.
    rig = await startStandins({ coldStartMs: 60_000 });
    const env = benchEnv(rig.fair, rig.hostPort, dir.path, { ...platformEnv(started), QUEUE_MAX: String(opts.commands + 10) });
    app = await within(startApp({ env, logDestination: nullStream() }), 60_000, 'the app to start');
    await opts.beforeBurst?.();
    const done = next<{ slack: number[]; discord: number[]; refused: number }>('burst-done', 60_000);
    child.send({ op: 'burst', eventsUrl: `http://127.0.0.1:${app.slack?.port ?? 0}/slack/events`, commands: opts.commands, tag: opts.runTag });
    const r = await done;
    await opts.afterBurst?.();
    return { slack: r.slack, discord: r.discord, all: [...r.slack, ...r.discord], refused: r.refused };
  } finally {
    await app?.stop(0);
    await child.end();
    await rig?.fair.close();
    dir.remove();
  }
}
