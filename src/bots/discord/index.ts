import { once } from 'node:events';
import { Client, Events, GatewayIntentBits, MessageFlags, Status, type ButtonInteraction, type Interaction, type RepliableInteraction } from 'discord.js';
import { ConfigError } from '../../config.js';
import { discordMessages, messages, startupMessages } from '../../messages.js';
import type { Services } from '../../services.js';
import { buttons } from './buttons/index.js';
import { commands } from './commands/index.js';
import { parseCustomId } from './components.js';
import type { CommandContext } from './context.js';
import { Followers } from './follow.js';
import { syncCommands } from './register.js';
import { apiErrorReporter, errorFields, NO_MENTIONS, type ReplyTiming } from './reply.js';
import { restOptions } from './rest.js';

export { registerCommands } from './register.js';
export { commandDefinitions } from './definitions.js';

export interface DiscordBotOptions {
  /** At most one progress edit per message per this many ms. Default 2000. */
  progressIntervalMs?: number;
  /** The interaction token's life (Discord: 15 min). Default 15 min. */
  tokenLifetimeMs?: number;
  /** Register the slash commands at start when Discord's differ from ours. Default true. */
  registerOnStart?: boolean;
  /** How long to wait for the gateway to be ready at start. Default 60 s. */
  readyTimeoutMs?: number;
  /** On stop, how long commands and deliveries in flight may take before the client goes. Default 10 s. */
  stopGraceMs?: number;
}

export interface DiscordBot {
  client: Client;
  stop(): Promise<void>;
  /** Connected to the gateway (for /healthz): not ok, with the reason, while it is down. Deliveries do not need it; commands and clicks do. */
  health(): { ok: boolean; reason?: string };
}

/**
 * Logs in to Discord (REST at DISCORD_API_URL; the gateway is discovered through it),
 * registers the commands if they changed, and serves /imagine and /gpu and the
 * buttons (Re-roll, Cancel, the /gpu kill confirmation).
 */
export async function startDiscordBot(services: Services, options: DiscordBotOptions = {}): Promise<DiscordBot> {
  const { config } = services;
  const logger = services.logger.child({ component: 'discord' });
  if (!config.discordToken) throw new Error('DISCORD_TOKEN is not set');
  const timing: ReplyTiming = {
    progressIntervalMs: options.progressIntervalMs ?? 2_000,
    tokenLifetimeMs: options.tokenLifetimeMs ?? 15 * 60_000,
  };

  const client = new Client({
    intents: [GatewayIntentBits.Guilds],
    rest: restOptions(config.discordApiUrl),
    allowedMentions: NO_MENTIONS,
  });
  const report = apiErrorReporter(services.metrics);
  const followers = new Followers({ services, rest: client.rest, logger, timing, report });
  const ctx: CommandContext = { services, client, logger, follow: (job) => followers.follow(job), report };
  // After a restart the core hands back the Discord jobs the last run left unfinished.
  services.jobs.onRecovered('discord', (job) => followers.recover(job));
  const inFlight = new Set<Promise<void>>();
  let stopping = false;

  // Nothing Discord sends or answers may take the process down: log it.
  client.on(Events.Error, (error) => logger.error(errorFields(error), 'discord client error'));
  // When the gateway went away, for /healthz (cleared when a shard is ready again).
  let gatewayLostAt: number | undefined;
  const lost = () => (gatewayLostAt ??= Date.now());
  const back = () => (gatewayLostAt = undefined);
  client.on(Events.ShardError, (error, shardId) => {
    // Counted with the API errors (code "gateway"): a refused or broken gateway connection.
    services.metrics.platformError('discord', 'gateway');
    logger.warn({ ...errorFields(error), shardId }, 'gateway connection error');
  });
  client.on(Events.ShardReconnecting, (shardId) => {
    lost();
    logger.info({ shardId }, 'gateway reconnecting');
  });
  client.on(Events.ShardResume, (shardId, replayed) => {
    back();
    logger.info({ shardId, replayed }, 'gateway resumed');
  });
  client.on(Events.ShardReady, back);
  client.on(Events.ShardDisconnect, (event, shardId) => {
    lost();
    logger.error({ code: event.code, shardId }, 'gateway closed for good');
  });
  client.on(Events.Warn, (message) => logger.warn({ message }, 'discord client warning'));
  client.on(Events.Debug, (message) => logger.trace({ message }, 'discord debug'));
  client.rest.on('rateLimited', (info) => logger.debug({ route: info.route, retryAfter: info.retryAfter }, 'rate limited'));

  client.on(Events.InteractionCreate, (interaction) => {
    const task = handle(interaction).catch((error: unknown) =>
      logger.error({ ...errorFields(error), interactionId: interaction.id }, 'interaction handler failed'),
    );
    inFlight.add(task);
    void task.finally(() => inFlight.delete(task));
  });

  async function handle(interaction: Interaction): Promise<void> {
    if (interaction.isButton()) {
      await click(interaction);
      return;
    }
    if (!interaction.isChatInputCommand()) {
      if (interaction.isRepliable()) {
        await interaction
          .reply({ content: discordMessages.unsupportedInteraction, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS })
          .catch((error: unknown) => logger.warn({ ...report(error) }, 'could not answer an interaction'));
      }
      return;
    }
    logger.info(
      { interactionId: interaction.id, command: interaction.commandName, userId: interaction.user.id, channelId: interaction.channelId },
      'command received',
    );
    const command = commands.get(interaction.commandName);
    if (!command || stopping) {
      await answerPrivately(interaction, command ? messages.shuttingDown : discordMessages.unknownCommand(interaction.commandName));
      return;
    }
    try {
      await command.execute(interaction, ctx);
    } catch (error) {
      logger.error({ ...report(error), interactionId: interaction.id }, 'command failed');
      await answerPrivately(interaction, discordMessages.internalError);
    }
  }

  /** A button: `fairbot:<action>:<argument>` (the job id for Re-roll and Cancel). */
  async function click(interaction: ButtonInteraction): Promise<void> {
    const action = parseCustomId(interaction.customId);
    const button = action && buttons.get(action.action);
    logger.info(
      { interactionId: interaction.id, customId: interaction.customId.slice(0, 100), userId: interaction.user.id, channelId: interaction.channelId },
      'button clicked',
    );
    if (!action || !button || stopping) {
      await answerPrivately(interaction, button ? messages.shuttingDown : discordMessages.unknownButton);
      return;
    }
    try {
      await button.execute(interaction, action as never, ctx);
    } catch (error) {
      logger.error({ ...report(error), interactionId: interaction.id }, 'button failed');
      await answerPrivately(interaction, discordMessages.internalError);
    }
  }

  /**
   * One visible answer whatever state the interaction is in; never throws. (A click is
   * deferred as an update only by the /gpu kill question, which the answer then replaces.)
   */
  async function answerPrivately(interaction: RepliableInteraction, content: string): Promise<void> {
    try {
      if (interaction.deferred || interaction.replied) {
        await interaction.editReply({ content, components: [], allowedMentions: NO_MENTIONS });
      } else {
        await interaction.reply({ content, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS });
      }
    } catch (error) {
      logger.warn({ ...report(error), interactionId: interaction.id }, 'could not answer the interaction');
    }
  }

  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  const readyDeadline = new AbortController();
  const readyTimer = setTimeout(() => readyDeadline.abort(), readyTimeoutMs);
  try {
    const ready = once(client, Events.ClientReady, { signal: readyDeadline.signal }).catch((error: unknown) => {
      throw new GatewayNotReady(`the Discord gateway was not ready within ${readyTimeoutMs / 1000} s`, { cause: error });
    });
    // Whichever fails first (a refused token, no gateway) fails the start; neither is left dangling.
    await Promise.all([client.login(config.discordToken), ready]);
  } catch (error) {
    await client.destroy().catch(() => undefined);
    throw loginFailure(error, config.discordApiUrl);
  } finally {
    clearTimeout(readyTimer);
    readyDeadline.abort();
  }
  logger.info({ user: client.user?.tag, applicationId: client.application?.id, guilds: client.guilds.cache.size }, 'discord bot ready');

  if (options.registerOnStart ?? true) {
    const applicationId = config.discordAppId ?? client.application?.id;
    if (config.discordAppId && client.application && config.discordAppId !== client.application.id) {
      logger.warn({ configured: config.discordAppId, actual: client.application.id }, "DISCORD_APP_ID is not this bot's application");
    }
    if (applicationId) {
      await syncCommands(client.rest, { applicationId, guildId: config.discordGuildId }, logger).catch((error: unknown) =>
        logger.warn({ ...report(error) }, 'could not register the slash commands; run "fairbot register-commands"'),
      );
    }
  }

  let stopped: Promise<void> | undefined;
  return {
    client,
    health() {
      const shards = [...client.ws.shards.values()];
      const down = shards.filter((shard) => shard.status !== Status.Ready);
      if (shards.length > 0 && down.length === 0) return { ok: true };
      const states = down.map((shard) => `shard ${shard.id} ${Status[shard.status] ?? shard.status}`).join(', ') || 'no gateway connection';
      const since = gatewayLostAt === undefined ? '' : `, for ${Math.round((Date.now() - gatewayLostAt) / 1000)} s`;
      return { ok: false, reason: discordMessages.gatewayDown(`${stopping ? 'stopping' : states}${since}`) };
    },
    stop() {
      stopped ??= (async () => {
        stopping = true;
        const grace = options.stopGraceMs ?? 10_000;
        const started = Date.now();
        // Commands being acknowledged, then images already generated reaching their users
        // (REST only: no gateway needed). Jobs still queued stay recorded for the next start.
        if (inFlight.size > 0) {
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([Promise.allSettled([...inFlight]), new Promise<void>((resolve) => (timer = setTimeout(resolve, grace)))]);
          clearTimeout(timer);
        }
        await followers.stop(Math.max(0, grace - (Date.now() - started)));
        await client.destroy();
        logger.info('discord bot stopped');
      })();
      return stopped;
    },
  };
}

class GatewayNotReady extends Error {}

/** Errors of a connection that never got an answer (undici and Node's socket codes). */
const UNREACHABLE = /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|UND_ERR_\w+)$/;

/**
 * Why Discord did not start, pointing at the fix: a refused token is a configuration
 * error (exit 2: restarting will not help); no answer from DISCORD_API_URL (or no
 * gateway) is the address or the network.
 */
function loginFailure(error: unknown, apiUrl: string): Error {
  const e = (error ?? {}) as { code?: unknown; status?: unknown; message?: unknown; cause?: { code?: unknown } };
  const detail = typeof e.message === 'string' ? e.message : String(error);
  if (e.code === 'TokenInvalid' || e.status === 401) {
    return new ConfigError(startupMessages.refused('Discord', 'DISCORD_TOKEN', detail, startupMessages.discordTokenFix));
  }
  const code = String(e.code ?? e.cause?.code ?? '');
  if (UNREACHABLE.test(code) || error instanceof GatewayNotReady) {
    return new Error(startupMessages.unreachable('Discord', 'DISCORD_API_URL', apiUrl, detail));
  }
  return new Error(startupMessages.failed('Discord', detail));
}
