import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { App, HTTPReceiver, SocketModeReceiver, type webApi } from '@slack/bolt';
import type { Services } from '../../services.js';
import type { SlackContext } from './context.js';
import { describeSlackError } from './errors.js';
import { registerListeners } from './listeners/index.js';
import { boltLogger } from './logger.js';
import { Inflight } from './reply.js';

/** Slash commands and interactive payloads are small; anything bigger is refused (413). */
export const SLACK_BODY_LIMIT_BYTES = 256 * 1024;
/** Where Slack sends commands in HTTP mode (the manifest's request URLs). */
export const SLACK_EVENTS_PATH = '/slack/events';
/** How long stop() lets final messages and uploads finish. */
const STOP_GRACE_MS = 5_000;

/**
 * Web API retries: a few quick ones for 5xx, network errors and 429 (the WebClient
 * waits Retry-After before each), none for a 4xx (a refused upload will not change its
 * mind). The default policy retries for about 30 minutes: far too long for a user waiting.
 */
const retryConfig = {
  retries: 3,
  factor: 2,
  minTimeout: 500,
  maxTimeout: 5_000,
  randomize: true,
  // p-retry (used by the WebClient) aborts the retries when this throws.
  onFailedAttempt: (error: { code?: string; statusCode?: number }) => {
    if (error.code === 'slack_webapi_http_error' && typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
      throw error;
    }
  },
} as webApi.RetryOptions;

export interface SlackBot {
  stop(): Promise<void>;
  /** The bound HTTP port in HTTP mode (SLACK_PORT=0 picks a free one). */
  port?: number;
}

/**
 * Starts the Slack adapter: Socket Mode when SLACK_APP_TOKEN is set, otherwise HTTP
 * on SLACK_PORT at POST /slack/events (signatures and the 5-minute window checked by
 * Bolt). Verifies the bot token (auth.test) before taking commands.
 */
export async function startSlackBot(services: Services): Promise<SlackBot> {
  const { config } = services;
  const log = services.logger.child({ component: 'slack' });
  const token = config.slackBotToken;
  if (!token) throw new Error('SLACK_BOT_TOKEN is not set');
  const logger = boltLogger(log);
  const clientOptions: webApi.WebClientOptions = { slackApiUrl: config.slackApiUrl, retryConfig, timeout: 30_000 };
  const socketMode = Boolean(config.slackAppToken);

  let receiver: HTTPReceiver | SocketModeReceiver;
  if (socketMode) {
    receiver = new SocketModeReceiver({
      appToken: config.slackAppToken!,
      logger,
      // apps.connections.open goes to the same Web API base; the Socket Mode client keeps
      // its own (patient) retry policy for (re)connecting.
      installerOptions: { clientOptions: { slackApiUrl: config.slackApiUrl } },
    });
  } else {
    if (!config.slackSigningSecret) throw new Error('SLACK_SIGNING_SECRET must be set for Slack HTTP mode (or set SLACK_APP_TOKEN)');
    receiver = new HTTPReceiver({
      signingSecret: config.slackSigningSecret,
      endpoints: SLACK_EVENTS_PATH,
      port: config.slackPort,
      logger,
      bodyLimit: SLACK_BODY_LIMIT_BYTES,
    });
  }

  const app = new App({
    token,
    receiver,
    logger,
    clientOptions,
    convoStore: false,
    deferInitialization: true,
  });
  app.error(async (error) => {
    log.error({ err: error }, 'unhandled error in a Slack listener');
  });

  const ctx: SlackContext = {
    services,
    log,
    client: app.client,
    inflight: new Inflight(),
    reporters: new Set(),
    gpuAckBudgetMs: 2_000,
  };
  registerListeners(app, ctx);

  try {
    await app.init(); // auth.test: a wrong token stops the start here, with the reason
  } catch (error) {
    throw new Error(`Slack refused SLACK_BOT_TOKEN (auth.test: ${describeSlackError(error).code})`);
  }

  let port: number | undefined;
  if (receiver instanceof SocketModeReceiver) {
    try {
      await app.start();
    } catch (error) {
      throw new Error(`Slack Socket Mode could not connect (apps.connections.open: ${describeSlackError(error).code}); check SLACK_APP_TOKEN`);
    }
    log.info('Slack adapter connected (Socket Mode)');
  } else {
    const server = (await app.start(config.slackPort)) as Server;
    port = (server.address() as AddressInfo).port;
    log.info({ port, path: SLACK_EVENTS_PATH }, 'Slack adapter listening (HTTP mode)');
  }

  let stopping: Promise<void> | undefined;
  return {
    port,
    stop() {
      stopping ??= (async () => {
        for (const r of ctx.reporters) r.dispose();
        if (receiver instanceof SocketModeReceiver) {
          // App#stop() does not wait for the WebSocket to close; this does.
          await receiver.client.disconnect();
        } else {
          await app.stop().catch((error: unknown) => log.warn({ err: error }, 'stopping the Slack HTTP receiver'));
        }
        await ctx.inflight.settle(STOP_GRACE_MS);
        log.info('Slack adapter stopped');
      })();
      return stopping;
    },
  };
}
