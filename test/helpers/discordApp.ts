/**
 * The whole bot as `npm start` runs it (startApp with an env), pointed at the
 * Discord, Fair and diffusion stand-ins.
 */
import { startApp, type RunningApp } from '../../src/app.js';
import {
  ADMINISTRATOR_PERMISSIONS,
  buttonsOf,
  snowflake,
  startDiscordStandin,
  type DiscordStandin,
  type DiscordStandinOptions,
  type StandinMessage,
} from '../standins/discord.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../standins/fair.js';
import { FAIR_EMAIL, FAIR_PASSWORD, FAST_TIMING, fairEnv, LogCapture, tempDir } from './app.js';
import { recordOutput, registerSecret } from './secret-scan.js';

/** For the suite-wide secret scan: the tokens in play and everything the bot posted. */
export function scanDiscord(discord: DiscordStandin): void {
  registerSecret(discord.token);
  for (const c of discord.callbacks) registerSecret(c.token);
  for (const m of discord.messages.values()) {
    recordOutput(`discord ${m.source} message`, m.content);
    if (m.embeds.length) recordOutput(`discord ${m.source} message embeds`, JSON.stringify(m.embeds));
  }
}

export interface DiscordRig {
  discord: DiscordStandin;
  fair: FairStandin;
  app: RunningApp;
  logs: LogCapture;
  env: Record<string, string>;
  dataDir: string;
  /** Stops the app (as SIGTERM would) and starts it again on the same stand-ins and DATA_DIR. */
  restart(): Promise<RunningApp>;
  close(): Promise<void>;
}

export async function startDiscordRig(opts: { discord?: DiscordStandinOptions; fair?: FairOptions; env?: Record<string, string> } = {}): Promise<DiscordRig> {
  const discord = await startDiscordStandin(opts.discord);
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, ...opts.fair });
  const hostPort = await freePort();
  const dir = tempDir('fairbot-discord-');
  const env = fairEnv(fair, hostPort, dir.path, {
    DISCORD_TOKEN: discord.token,
    DISCORD_API_URL: discord.apiUrl,
    DISCORD_GUILD_ID: discord.guildId,
    ...opts.env,
  });
  const logs = new LogCapture();
  const start = () => startApp({ env, logDestination: logs, timing: FAST_TIMING });
  let app: RunningApp;
  try {
    app = await start();
  } catch (error) {
    await discord.close();
    await fair.close();
    dir.remove();
    throw error;
  }
  const rig: DiscordRig = {
    discord,
    fair,
    app,
    logs,
    env,
    dataDir: dir.path,
    async restart() {
      await rig.app.stop(1_000);
      rig.app = await start();
      return rig.app;
    },
    async close() {
      await rig.app.stop(0);
      scanDiscord(discord);
      await discord.close();
      await fair.close();
      dir.remove();
    },
  };
  return rig;
}

/** Waits until the interaction's reply shows an image; returns the message. */
export function imageInReply(rig: DiscordRig, interactionId: string, timeoutMs = 15_000): Promise<StandinMessage> {
  return rig.discord.waitFor(
    () => {
      const m = rig.discord.originalMessage(interactionId);
      return m && m.attachments.length > 0 ? m : undefined;
    },
    timeoutMs,
    `an image in the reply to ${interactionId}`,
  );
}

/** Waits until the reply reads exactly `content` (a final text outcome). */
export function replyReads(rig: DiscordRig, interactionId: string, content: string, timeoutMs = 15_000): Promise<StandinMessage> {
  return rig.discord.waitFor(
    () => {
      const m = rig.discord.originalMessage(interactionId);
      return m && m.content === content ? m : undefined;
    },
    timeoutMs,
    () => `the reply to ${interactionId} to read "${content}" (it reads "${rig.discord.originalMessage(interactionId)?.content ?? '(no reply)'}")`,
  );
}

/** The custom ids of a message's buttons, in order. */
export function buttonIds(message: StandinMessage | undefined): string[] {
  return buttonsOf(message).map((b) => b.customId ?? '');
}

/** Waits until the interaction's reply carries a button whose custom id starts with `prefix`; returns the message. */
export function replyWithButton(rig: DiscordRig, interactionId: string, prefix: string, timeoutMs = 15_000): Promise<StandinMessage> {
  return rig.discord.waitFor(
    () => {
      const m = rig.discord.originalMessage(interactionId);
      return m && buttonIds(m).some((id) => id.startsWith(prefix)) ? m : undefined;
    },
    timeoutMs,
    () => `a "${prefix}" button on the reply to ${interactionId} (it has: ${buttonIds(rig.discord.originalMessage(interactionId)).join(', ') || 'none'})`,
  );
}

/** A user clicks the button with `prefix` on `message` (a real component interaction, type 3). */
export function click(rig: DiscordRig, message: StandinMessage, prefix: string, user: { userId: string; userName: string; permissions?: string }) {
  const customId = buttonIds(rig.discord.messages.get(message.id)).find((id) => id.startsWith(prefix));
  if (!customId) throw new Error(`no "${prefix}" button on message ${message.id}`);
  return { customId, ...rig.discord.dispatchInteraction({ type: 'component', customId, messageId: message.id, ...user }) };
}

/** GET on the ops server (METRICS_PORT=0 in the env): status and body. */
export async function ops(rig: DiscordRig, path: '/healthz' | '/metrics'): Promise<{ status: number; text: string }> {
  const port = rig.app.metricsPort;
  if (port === undefined) throw new Error('METRICS_PORT is not set for this rig');
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, text: await res.text() };
}

/** Polls /healthz (a real HTTP GET each time) until it answers `status`, within the deadline. */
export async function healthzAnswers(rig: DiscordRig, status: number, timeoutMs = 10_000): Promise<{ status: number; text: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = await ops(rig, '/healthz');
  while (last.status !== status) {
    if (Date.now() > deadline) throw new Error(`/healthz still answers ${last.status} ${last.text} after ${timeoutMs} ms (waiting for ${status})`);
    await new Promise((r) => setTimeout(r, 25));
    last = await ops(rig, '/healthz');
  }
  return last;
}

/** The bot's PATCHes of one interaction's reply (or of a clicked message, by id), in order, with their text. */
export function edits(rig: DiscordRig, interactionId: string) {
  return rig.discord.webhookMessages
    .filter((w) => w.interactionId === interactionId && w.method === 'PATCH')
    .map((w) => {
      const body = (w.body ?? {}) as { content?: string; components?: unknown };
      return { at: w.at, status: w.status, text: body.content, files: w.files.length, components: body.components };
    });
}

/** The people of the Discord end-to-end suites (admin has Administrator; ADMIN_IDS is up to each test). */
export const users = {
  alice: { userId: snowflake(Date.now() - 9e9), userName: 'alice' },
  bob: { userId: snowflake(Date.now() - 8e9), userName: 'bob' },
  carol: { userId: snowflake(Date.now() - 7e9), userName: 'carol' },
  admin: { userId: snowflake(Date.now() - 6e9), userName: 'root', permissions: ADMINISTRATOR_PERMISSIONS },
};

/** `/imagine prompt` from a user, on the gateway. */
export function imagine(r: DiscordRig, prompt: string, user: { userId: string; userName: string } = users.alice) {
  return r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...user });
}
