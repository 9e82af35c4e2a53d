// An end-to-end rig for the Slack adapter: the real app (startApp, as `npm start` runs
// it) with its Slack side pointed at the Slack stand-in and its GPU side at the Fair
// stand-in (which spawns the diffusion stand-in on the host port).
import { afterEach } from 'vitest';
import { startApp, type RunningApp, type ServiceOptions } from '../../src/app.js';
import { messages } from '../../src/messages.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../standins/fair.js';
import { renderSlackMessage, startSlackStandin, type FileShare, type RenderedMessage, type SlackStandin, type SlackStandinOptions } from '../standins/slack.js';
import { FAIR_EMAIL, FAIR_PASSWORD, FAST_TIMING, fairEnv, LogCapture, tempDir } from './app.js';

export const SLACK_ADMIN = 'UADMIN01';

/** The caption of an image as the channel sees it (the file message's blocks, or its comment). */
export function captionOf(share: FileShare): RenderedMessage {
  return renderSlackMessage({ text: share.initialComment, blocks: share.blocks });
}

export interface SlackRig {
  slack: SlackStandin;
  fair: FairStandin;
  app: RunningApp;
  logs: LogCapture;
  /** POST /slack/events of the running app (HTTP mode). */
  eventsUrl: string;
  /** Stops the app (as SIGTERM does, with graceMs) and starts it again on the same DATA_DIR. */
  restart(graceMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startSlackRig(
  opts: {
    fair?: FairOptions;
    slack?: SlackStandinOptions;
    env?: Record<string, string>;
    socketMode?: boolean;
    /** Service options besides the env (e.g. a small heldImageBytesMax). */
    app?: Pick<ServiceOptions, 'heldImageBytesMax'>;
  } = {},
): Promise<SlackRig> {
  const slack = await startSlackStandin(opts.slack);
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, ...opts.fair });
  const hostPort = await freePort();
  const dir = tempDir('fairbot-slack-');
  const logs = new LogCapture();
  const env = fairEnv(fair, hostPort, dir.path, {
    SLACK_BOT_TOKEN: slack.botToken,
    SLACK_API_URL: slack.apiUrl,
    ADMIN_IDS: `slack:${SLACK_ADMIN},discord:123456789012345678`,
    ...(opts.socketMode ? { SLACK_APP_TOKEN: slack.appToken } : { SLACK_SIGNING_SECRET: slack.signingSecret, SLACK_PORT: '0' }),
    ...opts.env,
  });
  const start = () => startApp({ env, logDestination: logs, timing: FAST_TIMING, ...opts.app });
  let app: RunningApp;
  try {
    app = await start();
  } catch (error) {
    await slack.close();
    await fair.close();
    dir.remove();
    throw error;
  }
  const events = (a: RunningApp) => `http://127.0.0.1:${a.slack?.port ?? 0}/slack/events`;
  const rig: SlackRig = {
    slack,
    fair,
    app,
    logs,
    eventsUrl: events(app),
    async restart(graceMs = 0) {
      await rig.app.stop(graceMs);
      rig.app = await start();
      rig.eventsUrl = events(rig.app);
    },
    async close() {
      await rig.app.stop(0);
      await slack.close();
      await fair.close();
      dir.remove();
    },
  };
  return rig;
}

/** Channel posts carrying a Re-roll button, oldest first. */
export function rerollPosts(slack: SlackStandin, channel = slack.channelId) {
  return slack.posts.filter((p) => p.channel === channel && !p.deleted && slack.buttons(p).some((b) => b.action_id === 'fairbot_reroll'));
}

/** The last message a user sees (ephemeral). */
export function lastSeen(slack: SlackStandin, user: string) {
  return slack.userView(user).at(-1);
}

/** The status text a user reads once their image is posted. */
export const DONE_TEXT = messages.progress({ type: 'done', image: { bytes: Buffer.alloc(0), mime: 'image/png', extension: 'png' }, generationMs: 0 });

/** A rig starter for one test file: every rig it starts is closed after each test. */
export function slackRigs(): (opts?: Parameters<typeof startSlackRig>[0]) => Promise<SlackRig> {
  const rigs: SlackRig[] = [];
  afterEach(async () => {
    for (const r of rigs.splice(0).reverse()) await r.close();
  });
  return async (opts = {}) => {
    const r = await startSlackRig(opts);
    rigs.push(r);
    return r;
  };
}
