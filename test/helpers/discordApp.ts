/**
 * The whole bot as `npm start` runs it (startApp with an env), pointed at the
 * Discord, Fair and diffusion stand-ins.
 */
import { startApp, type RunningApp } from '../../src/app.js';
import { startDiscordStandin, type DiscordStandin, type DiscordStandinOptions, type StandinMessage } from '../standins/discord.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../standins/fair.js';
import { FAIR_EMAIL, FAIR_PASSWORD, FAST_TIMING, fairEnv, LogCapture, tempDir } from './app.js';
import { recordOutput, registerSecret } from './secret-scan.js';

/** For the suite-wide secret scan: the tokens in play and everything the bot posted. */
export function scanDiscord(discord: DiscordStandin): void {
  registerSecret(discord.token);
  for (const c of discord.callbacks) registerSecret(c.token);
  for (const m of discord.messages.values()) recordOutput(`discord ${m.source} message`, m.content);
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

export async function startDiscordRig(
  opts: { discord?: DiscordStandinOptions; fair?: FairOptions; env?: Record<string, string> } = {},
): Promise<DiscordRig> {
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
