import {
  DiscordAPIError,
  GuildPremiumTier,
  HTTPError,
  MessageFlags,
  Routes,
  type ChatInputCommandInteraction,
  type InteractionEditReplyOptions,
  type REST,
} from 'discord.js';
import type { Logger } from 'pino';
import { discordMessages } from '../../messages.js';

/** On every message: prompts and captions never ping anyone. */
export const NO_MENTIONS = { parse: [] as [] };

/** Discord's limit on message content. */
export const CONTENT_MAX = 2000;

/** Upload limit by server boost tier (Discord, 2024-): 10 MiB, 50 MiB at tier 2, 100 MiB at tier 3. */
const MiB = 1024 * 1024;
export function uploadLimitFor(interaction: ChatInputCommandInteraction): number {
  // Discord now tells us in the interaction itself.
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

/** Error codes meaning the interaction token no longer works for this reply. */
const TOKEN_GONE = new Set([10008 /* Unknown Message */, 10015 /* Unknown Webhook */, 10062 /* Unknown interaction */, 50027 /* Invalid Webhook Token */]);

export function isTooLarge(error: unknown): boolean {
  return error instanceof DiscordAPIError && (error.code === 40005 || error.status === 413);
}

/** Discord answered (4xx): the request certainly did not take effect. */
export function isDefinitive(error: unknown): boolean {
  return error instanceof DiscordAPIError;
}

export function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof DiscordAPIError) return { code: error.code, status: error.status, discordMessage: error.message, method: error.method };
  if (error instanceof HTTPError) return { status: error.status, method: error.method };
  return { err: error instanceof Error ? error.message : String(error) };
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

export interface ReplyTiming {
  /** At most one progress edit per this many ms per message (the final one is never held back). */
  progressIntervalMs: number;
  /** How long the interaction token works (15 min on Discord). */
  tokenLifetimeMs: number;
}

export type DeferResult =
  /** The reply exists; edit it. */
  | 'acknowledged'
  /** Too late (10062) or someone else answered (40060): Discord shows its own failure; do nothing. */
  | 'lost'
  /** No answer from Discord (network, 5xx): carry on, deliver through the channel. */
  | 'uncertain';

/**
 * The deferred reply of one interaction: throttled progress edits, then one
 * final outcome. Knows when the interaction token has expired (by the clock,
 * or because Discord said so) so callers can fall back to the channel.
 */
export class InteractionReply {
  readonly receivedAt = Date.now();
  private acknowledged = false;
  private tokenGone = false;
  private finished = false;
  private lastEditAt = 0;
  private lastText: string | undefined;
  private pendingText: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    readonly interaction: ChatInputCommandInteraction,
    private readonly timing: ReplyTiming,
    private readonly log: Logger,
  ) {}

  /** Whether the reply can still be edited (with a margin before the token's end). */
  tokenAlive(): boolean {
    if (!this.acknowledged || this.tokenGone) return false;
    const margin = Math.min(30_000, this.timing.tokenLifetimeMs / 10);
    return Date.now() - this.receivedAt < this.timing.tokenLifetimeMs - margin;
  }

  async defer(ephemeral = false): Promise<DeferResult> {
    try {
      await this.interaction.deferReply(ephemeral ? { flags: MessageFlags.Ephemeral } : {});
      this.acknowledged = true;
      this.lastEditAt = Date.now();
      return 'acknowledged';
    } catch (error) {
      if (error instanceof DiscordAPIError && (error.code === 10062 || error.code === 40060)) {
        this.tokenGone = true;
        this.log.warn({ ...errorFields(error), ageMs: Date.now() - this.receivedAt }, 'could not acknowledge the interaction');
        return 'lost';
      }
      this.log.warn({ ...errorFields(error) }, 'acknowledging the interaction failed; will answer in the channel');
      return 'uncertain';
    }
  }

  /** Shows a progress text, at most one edit per progressIntervalMs; only the latest text is sent. */
  progress(text: string): void {
    if (this.finished || !this.tokenAlive()) return;
    if (text === this.lastText && this.pendingText === undefined) return;
    this.pendingText = text;
    if (this.timer) return;
    const wait = Math.max(0, this.lastEditAt + this.timing.progressIntervalMs - Date.now());
    this.timer = setTimeout(() => this.flush(), wait);
  }

  private flush(): void {
    this.timer = undefined;
    const text = this.pendingText;
    this.pendingText = undefined;
    if (text === undefined || text === this.lastText || this.finished || !this.tokenAlive()) return;
    this.lastText = text;
    this.lastEditAt = Date.now();
    this.chain = this.chain.then(async () => {
      if (this.finished) return;
      try {
        await this.interaction.editReply({ content: clip(text), allowedMentions: NO_MENTIONS });
      } catch (error) {
        this.noteFailure(error, 'progress edit failed');
      }
    });
  }

  /** No more progress: cancels a pending edit and waits for the one in flight. */
  async settle(): Promise<void> {
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.chain;
  }

  /** The final edit. Throws what Discord answered; marks the token gone when that is the reason. */
  async editFinal(options: InteractionEditReplyOptions): Promise<void> {
    await this.settle();
    try {
      await this.interaction.editReply({ allowedMentions: NO_MENTIONS, ...options });
    } catch (error) {
      this.noteFailure(error, 'final edit failed');
      throw error;
    }
  }

  /** After an ambiguous failure (no answer), whether the reply carries an attachment after all. */
  async replyHasAttachment(): Promise<boolean> {
    try {
      const message = await this.interaction.fetchReply();
      return message.attachments.size > 0;
    } catch {
      return false;
    }
  }

  private noteFailure(error: unknown, what: string): void {
    if (error instanceof DiscordAPIError && TOKEN_GONE.has(Number(error.code))) this.tokenGone = true;
    this.log.warn({ ...errorFields(error), ageMs: Date.now() - this.receivedAt }, what);
  }
}

export interface ChannelFile {
  name: string;
  data: Buffer;
  contentType: string;
}

/** A message in a channel with the bot token (works when the interaction token no longer does). */
export async function postToChannel(
  rest: REST,
  channelId: string,
  message: { content: string; allowedUserIds: string[]; file?: ChannelFile },
): Promise<void> {
  const body: Record<string, unknown> = {
    content: clip(message.content),
    allowed_mentions: { parse: [], users: message.allowedUserIds },
  };
  if (message.file) body.attachments = [{ id: '0', filename: message.file.name }];
  await rest.post(Routes.channelMessages(channelId), {
    body,
    files: message.file ? [{ name: message.file.name, data: message.file.data, contentType: message.file.contentType }] : undefined,
  });
}
