import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { App, HTTPReceiver, SocketModeReceiver, type webApi } from '@slack/bolt';
import { ConfigError } from '../../config.js';
import { startupMessages } from '../../messages.js';
import type { Services } from '../../services.js';
import type { SlackContext } from './context.js';
import { describeSlackError } from './errors.js';
import { registerListeners } from './listeners/index.js';
import { boltLogger } from './logger.js';
import { SlackFollowers } from './follow.js';
import { Inflight } from './reply.js';
import { slackFetch } from './fetch.js';

/** Slash commands and interactive payloads are small; anything bigger is refused (413). */
const SLACK_BODY_LIMIT_BYTES = 256 * 1024;
/** Where Slack sends commands in HTTP mode (the manifest's request URLs). */
const SLACK_EVENTS_PATH = '/slack/events';
/**
 * How long stop() lets messages under way go out. Short: the core already gave
 * deliveries their grace (jobs.shutdown), and docker stop allows 10 s in all.
 */
const STOP_GRACE_MS = 1_000;

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

/** Slack's answers to a token it will not take (auth.test, apps.connections.open). */
const TOKEN_REFUSALS = new Set(['invalid_auth', 'not_authed', 'account_inactive', 'token_revoked', 'token_expired', 'not_allowed_token_type', 'invalid_token']);

const socketRetryConfig: webApi.RetryOptions = { retries: 10_000, factor: 1.5, minTimeout: 1_000, maxTimeout: 30_000, randomize: true };

export interface SlackBot {
  stop(): Promise<void>;
  /** The bound HTTP port in HTTP mode (SLACK_PORT=0 picks a free one). */
  port?: number;
  /** For /healthz: Socket Mode connected, or the HTTP receiver listening. */
  health(): { ok: boolean; reason?: string };
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
  const clientOptions: webApi.WebClientOptions = { slackApiUrl: config.slackApiUrl, retryConfig, timeout: 30_000, fetch: slackFetch };
  const socketMode = Boolean(config.slackAppToken);

  let receiver: HTTPReceiver | SocketModeReceiver;
  if (socketMode) {
    receiver = new SocketModeReceiver({
      appToken: config.slackAppToken!,
      logger,
      // apps.connections.open goes to the same Web API base. (Re)connecting is patient:
      // keep trying through an outage, at most 30 s apart (the SDK's own default lets
      // the gaps grow without bound).
      installerOptions: { clientOptions: { slackApiUrl: config.slackApiUrl, retryConfig: socketRetryConfig, timeout: 30_000, fetch: slackFetch } },
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

  const inflight = new Inflight();
  const report = (code: string) => services.metrics.platformError('slack', code);
  const followers = new SlackFollowers({ services, client: app.client, log, inflight, report });
  const ctx: SlackContext = { services, log, client: app.client, inflight, followers, gpuAckBudgetMs: 2_000, report };
  registerListeners(app, ctx);

  /**
   * Why Slack did not start, pointing at the fix: no answer from SLACK_API_URL is the
   * address or the network; a refused token is a configuration error (exit 2: restarting
   * will not help); anything else names the call and Slack's answer.
   */
  const startFailure = (error: unknown, call: string, variable: string, fix: string): Error => {
    const { code } = describeSlackError(error);
    report(code);
    if (code === 'request_error') {
      return new Error(startupMessages.unreachable('Slack', 'SLACK_API_URL', config.slackApiUrl, `${call} got no answer`));
    }
    if (TOKEN_REFUSALS.has(code)) return new ConfigError(startupMessages.refused('Slack', variable, `${call}: ${code}`, fix));
    return new Error(startupMessages.failed('Slack', `${call} answered ${code}`));
  };

  try {
    await app.init(); // auth.test: a wrong token stops the start here, with the reason
  } catch (error) {
    throw startFailure(error, 'auth.test', 'SLACK_BOT_TOKEN', startupMessages.slackBotTokenFix);
  }

  let port: number | undefined;
  let connected = false;
  let stopped = false;
  if (receiver instanceof SocketModeReceiver) {
    receiver.client.on('connected', () => (connected = true));
    receiver.client.on('disconnected', () => (connected = false));
    receiver.client.on('reconnecting', () => (connected = false));
    receiver.client.on('close', () => (connected = false)); // the WebSocket closed; a reconnect follows
    try {
      await app.start();
    } catch (error) {
      throw startFailure(error, 'apps.connections.open', 'SLACK_APP_TOKEN', startupMessages.slackAppTokenFix);
    }
    connected = true;
    log.info('Slack adapter connected (Socket Mode)');
  } else {
    const server = (await app.start(config.slackPort)) as Server;
    port = (server.address() as AddressInfo).port;
    log.info({ port, path: SLACK_EVENTS_PATH }, 'Slack adapter listening (HTTP mode)');
  }
  // Jobs of an earlier run (DATA_DIR) come back here once startApp calls jobs.recover().
  services.jobs.onRecovered('slack', (job) => followers.follow(job));

  let stopping: Promise<void> | undefined;
  return {
    port,
    health() {
      if (stopped) return { ok: false, reason: 'stopped' };
      if (socketMode && !connected) return { ok: false, reason: 'Socket Mode not connected' };
      return { ok: true };
    },
    stop() {
      stopping ??= (async () => {
        stopped = true;
        if (receiver instanceof SocketModeReceiver) {
          // App#stop() does not wait for the WebSocket to close; this does.
          await receiver.client.disconnect();
        } else {
          await app.stop().catch((error: unknown) => log.warn({ err: error }, 'stopping the Slack HTTP receiver'));
        }
        await followers.stop(STOP_GRACE_MS);
        log.info('Slack adapter stopped');
      })();
      return stopping;
    },
  };
}
