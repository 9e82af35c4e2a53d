import {
  DiscordAPIError,
  GuildPremiumTier,
  HTTPError,
  MessageFlags,
  RateLimitError,
  Routes,
  type APIActionRowComponent,
  type APIComponentInMessageActionRow,
  type BaseInteraction,
  type REST,
  type RepliableInteraction,
} from 'discord.js';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger } from 'pino';
import { discordMessages } from '../../messages.js';
import type { Metrics } from '../../metrics.js';
import { messageRequest } from './rest.js';

/** On every message: prompts and captions never ping anyone. */
export const NO_MENTIONS = { parse: [] as [] };

/** Discord's limit on message content. */
export const CONTENT_MAX = 2000;

const MiB = 1024 * 1024;

/** The guild's upload limit: Discord sends it in the interaction; else by boost tier (10 / 50 / 100 MiB). */
export function uploadLimitFor(interaction: Pick<BaseInteraction, 'attachmentSizeLimit' | 'guild'>): number {
  const advertised = interaction.attachmentSizeLimit;
  if (typeof advertised === 'number' && advertised > 0) return advertised;
  switch (interaction.guild?.premiumTier) {
    case GuildPremiumTier.Tier2:
      return 50 * MiB;
    case GuildPremiumTier.Tier3:
      return 100 * MiB;
    default:
      return 10 * MiB;
  }
}

export const DEFAULT_UPLOAD_LIMIT = 10 * MiB;

/** Error codes meaning the interaction token no longer works for this reply. */
const TOKEN_GONE = new Set([10008 /* Unknown Message */, 10015 /* Unknown Webhook */, 10062 /* Unknown interaction */, 50027 /* Invalid Webhook Token */]);

export function isTooLarge(error: unknown): boolean {
  return error instanceof DiscordAPIError && (error.code === 40005 || error.status === 413);
}

/** Discord answered (4xx): the request certainly did not take effect. */
export function isDefinitive(error: unknown): boolean {
  return error instanceof DiscordAPIError;
}

/**
 * Log fields for an error. Never the whole error object: discord.js errors carry the
 * request URL and body, and a webhook URL holds the interaction token.
 */
export function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof DiscordAPIError) return { code: error.code, status: error.status, discordMessage: error.message, method: error.method };
  if (error instanceof HTTPError) return { status: error.status, method: error.method };
  if (error instanceof Error) return { error: `${error.name}: ${error.message}`, stack: error.stack };
  return { error: String(error) };
}

/**
 * The label of a failed Discord API call for the platform-errors metric: Discord's
 * error code, else the HTTP status, or how the request failed (timeout, unreachable).
 * Undefined for errors that are not about a call to Discord (a bug of ours).
 */
function apiErrorCode(error: unknown): string | undefined {
  if (error instanceof DiscordAPIError) return typeof error.code === 'number' && error.code > 0 ? String(error.code) : `http_${error.status}`;
  if (error instanceof HTTPError) return `http_${error.status}`;
  if (error instanceof RateLimitError) return 'rate_limited';
  if (!(error instanceof Error)) return undefined;
  if (error.name === 'AbortError' || error.name === 'TimeoutError') return 'timeout';
  // undici: "fetch failed" / socket errors, with the system error (ECONNREFUSED, ...) as the cause.
  const code = (error as { code?: unknown }).code ?? (error.cause as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && (/^E[A-Z]+$/.test(code) || code.startsWith('UND_ERR'))) return 'unreachable';
  return undefined;
}

/**
 * Called where a Discord API call failed: counts it for /metrics
 * (fairbot_platform_api_errors_total{platform="discord"}) and returns the log fields.
 */
export type ApiErrorReporter = (error: unknown) => Record<string, unknown>;

export function apiErrorReporter(metrics: Pick<Metrics, 'platformError'>): ApiErrorReporter {
  return (error) => {
    try {
      const code = apiErrorCode(error);
      if (code !== undefined) metrics.platformError('discord', code);
    } catch {
      // Counting must never turn a handled failure into a crash.
    }
    return errorFields(error);
  };
}

/** The reason a user reads after "could not be posted: ". */
export function describeError(error: unknown): string {
  if (error instanceof DiscordAPIError) {
    const raw = error.rawError as { message?: unknown };
    return discordMessages.refused(typeof raw?.message === 'string' ? raw.message : `code ${String(error.code)}`);
  }
  if (error instanceof HTTPError) return discordMessages.refused(`HTTP ${error.status}`);
  return discordMessages.unreachable;
}

/** Cuts text to Discord's content limit (callers shorten prompts first; this is the last guard). */
export function clip(text: string): string {
  return text.length <= CONTENT_MAX ? text : `${text.slice(0, CONTENT_MAX - 1)}…`;
}

export type DeferResult =
  /** The reply exists; edit it. */
  | 'acknowledged'
  /** Too late (10062) or someone else answered (40060): Discord shows its own failure; do nothing more. */
  | 'lost'
  /** No answer from Discord (network, 5xx): carry on, answer through the channel. */
  | 'uncertain';

/**
 * Acknowledges at once ("thinking…"); the 3 s rule. `update` acknowledges a button
 * click without a new message (the clicked message is edited afterwards).
 */
export async function acknowledge(
  interaction: RepliableInteraction,
  mode: 'public' | 'ephemeral' | 'update',
  log: Logger,
  report: ApiErrorReporter,
): Promise<DeferResult> {
  try {
    if (mode === 'update') {
      if (!interaction.isMessageComponent()) throw new TypeError('only a component interaction can be acknowledged as an update');
      await interaction.deferUpdate();
    } else {
      await interaction.deferReply(mode === 'ephemeral' ? { flags: MessageFlags.Ephemeral } : {});
    }
    return 'acknowledged';
  } catch (error) {
    if (error instanceof DiscordAPIError && (error.code === 10062 || error.code === 40060)) {
      log.warn({ ...report(error), ageMs: Date.now() - interaction.createdTimestamp }, 'could not acknowledge the interaction');
      return 'lost';
    }
    log.warn({ ...report(error) }, 'acknowledging the interaction failed; will answer in the channel');
    return 'uncertain';
  }
}

/**
 * What a job needs to answer on Discord, stored with it (job.reply) so that a
 * restarted bot can answer too. The interaction token works for 15 minutes.
 */
export interface DiscordReplyData {
  applicationId?: string;
  interactionId?: string;
  interactionToken?: string;
  /** When the interaction arrived (ms since the epoch). */
  interactionAt?: number;
  /** The deferred reply exists (the acknowledgement succeeded). */
  acknowledged?: boolean;
  channelId?: string;
  guildId?: string;
  /** The guild's upload limit in bytes, as Discord said in the interaction. */
  attachmentSizeLimit?: number;
}

export function readReplyData(raw: Record<string, unknown>): DiscordReplyData {
  const str = (v: unknown) => (typeof v === 'string' && v.length > 0 ? v : undefined);
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  return {
    applicationId: str(raw.applicationId),
    interactionId: str(raw.interactionId),
    interactionToken: str(raw.interactionToken),
    interactionAt: num(raw.interactionAt),
    acknowledged: raw.acknowledged === true,
    channelId: str(raw.channelId),
    guildId: str(raw.guildId),
    attachmentSizeLimit: num(raw.attachmentSizeLimit),
  };
}

export interface ReplyTiming {
  /** At most one progress edit per this many ms per message (the final one is never held back). */
  progressIntervalMs: number;
  /** How long the interaction token works (15 min on Discord). */
  tokenLifetimeMs: number;
}

export interface UploadFile {
  name: string;
  data: Buffer;
  contentType: string;
}

/** Message components as sent: action rows of buttons. */
export type Rows = APIActionRowComponent<APIComponentInMessageActionRow>[];

function messageBody(content: string, file: UploadFile | undefined, allowedMentions: Record<string, unknown>, components?: Rows) {
  const body: Record<string, unknown> = { content: clip(content), allowed_mentions: allowedMentions };
  if (file) body.attachments = [{ id: '0', filename: file.name }];
  // Absent: the message keeps its buttons; [] removes them.
  if (components) body.components = components;
  return messageRequest(body, file ? [{ name: file.name, data: file.data, contentType: file.contentType }] : undefined);
}

/**
 * The deferred reply of one job, reached through the interaction webhook (REST
 * only: no gateway, no interaction object, so it works after a restart too).
 * Throttled progress edits, then one final edit. Knows when the token is gone,
 * by the clock or because Discord said so, so callers fall back to the channel.
 */
export class WebhookReply {
  private tokenGone = false;
  private finished = false;
  /** When the last edit was sent (the acknowledgement counts as the first write). */
  private lastEditAt = Date.now();
  private lastText: string | undefined;
  private pendingText: string | undefined;
  private pendingComponents: Rows | undefined;
  private loop: Promise<void> | undefined;
  private readonly settled = new AbortController();

  constructor(
    private readonly rest: REST,
    private readonly data: DiscordReplyData,
    private readonly timing: ReplyTiming,
    private readonly log: Logger,
    private readonly report: ApiErrorReporter,
  ) {}

  /** Whether the reply can still be edited (with a margin before the token's end). */
  tokenAlive(): boolean {
    const { acknowledged, applicationId, interactionToken, interactionAt } = this.data;
    if (!acknowledged || !applicationId || !interactionToken || interactionAt === undefined || this.tokenGone) return false;
    const margin = Math.min(30_000, this.timing.tokenLifetimeMs / 10);
    return Date.now() - interactionAt < this.timing.tokenLifetimeMs - margin;
  }

  /**
   * Shows a progress text (with its buttons, e.g. Cancel): edits start at least
   * progressIntervalMs apart; only the latest text is sent; none once the job has ended.
   */
  progress(text: string, components?: Rows): void {
    if (this.finished || !this.tokenAlive()) return;
    this.pendingText = text;
    this.pendingComponents = components;
    this.loop ??= this.editLoop().finally(() => (this.loop = undefined));
  }

  private async editLoop(): Promise<void> {
    while (this.pendingText !== undefined && !this.finished && this.tokenAlive()) {
      const wait = this.lastEditAt + this.timing.progressIntervalMs - Date.now();
      if (wait > 0) {
        try {
          await delay(wait, undefined, { signal: this.settled.signal });
        } catch {
          return; // settled: the final outcome takes over
        }
      }
      const text = this.pendingText;
      const components = this.pendingComponents;
      this.pendingText = undefined;
      if (text === undefined || text === this.lastText || this.finished || !this.tokenAlive()) continue;
      this.lastText = text;
      this.lastEditAt = Date.now();
      try {
        await this.patch(text, undefined, components);
      } catch (error) {
        this.noteFailure(error, 'progress edit failed');
      }
    }
  }

  /** No more progress: cancels a pending edit and waits for the one in flight. */
  async settle(): Promise<void> {
    this.finished = true;
    this.settled.abort();
    await this.loop;
  }

  /** One last text that is not an outcome (e.g. "restarting"), if the reply can still be edited. */
  async note(text: string): Promise<void> {
    await this.settle();
    if (!this.tokenAlive()) return;
    try {
      await this.patch(text);
    } catch (error) {
      this.noteFailure(error, 'note edit failed');
    }
  }

  /**
   * The final edit, with the message's last buttons (Re-roll under an image, none
   * after a failure). Throws what Discord answered; marks the token gone when that is the reason.
   */
  async editFinal(content: string, file?: UploadFile, components: Rows = []): Promise<void> {
    await this.settle();
    try {
      await this.patch(content, file, components);
    } catch (error) {
      this.noteFailure(error, 'final edit failed');
      throw error;
    }
  }

  /**
   * Whether Discord shows the deferred reply, asked with the interaction token: false when
   * Discord says it has none or the token no longer works, undefined when it did not answer.
   */
  async exists(): Promise<boolean | undefined> {
    if (!this.data.applicationId || !this.data.interactionToken) return false;
    try {
      await this.rest.get(this.route(), { auth: false });
      return true;
    } catch (error) {
      this.report(error);
      return error instanceof DiscordAPIError && TOKEN_GONE.has(Number(error.code)) ? false : undefined;
    }
  }

  /** After an ambiguous failure (no answer), whether the reply carries an attachment after all. */
  async hasAttachment(): Promise<boolean> {
    try {
      const message = (await this.rest.get(this.route(), { auth: false })) as { attachments?: unknown[] };
      return (message.attachments?.length ?? 0) > 0;
    } catch (error) {
      this.report(error);
      return false;
    }
  }

  private route() {
    return Routes.webhookMessage(this.data.applicationId!, this.data.interactionToken!, '@original');
  }

  private async patch(content: string, file?: UploadFile, components?: Rows): Promise<void> {
    await this.rest.patch(this.route(), { ...messageBody(content, file, NO_MENTIONS, components), auth: false });
  }

  private noteFailure(error: unknown, what: string): void {
    if (error instanceof DiscordAPIError && TOKEN_GONE.has(Number(error.code))) this.tokenGone = true;
    this.log.warn({ ...this.report(error), ageMs: Date.now() - (this.data.interactionAt ?? Date.now()) }, what);
  }
}

/** A message in a channel with the bot token (works when the interaction token no longer does). */
export async function postToChannel(
  rest: REST,
  channelId: string,
  message: { content: string; allowedUserIds: string[]; file?: UploadFile; components?: Rows },
): Promise<void> {
  await rest.post(
    Routes.channelMessages(channelId),
    messageBody(message.content, message.file, { parse: [], users: message.allowedUserIds }, message.components),
  );
}
