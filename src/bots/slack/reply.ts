import type { types, webApi } from '@slack/bolt';
import type { Logger } from 'pino';
import { request } from 'undici';
import { describeSlackError } from './errors.js';
import { escapeMrkdwn } from './text.js';

/** Slack's limits on a command's response_url: 30 minutes and 5 posts. */
const RESPONSE_URL_MAX_POSTS = 5;
const RESPONSE_URL_TTL_MS = 30 * 60_000;
/** Stop using a response_url a little before it expires rather than race the deadline. */
const RESPONSE_URL_MARGIN_MS = 60_000;
const RESPONSE_URL_TIMEOUT_MS = 10_000;

/**
 * A command's response_url with its budget: 5 posts within 30 minutes of the command.
 * Slots are reserved synchronously when a message is decided, so decisions made while
 * earlier posts are still in flight count them; `onUse` records the count with the job
 * (DATA_DIR), so a restarted bot does not overspend it.
 */
class ResponseUrl {
  private used: number;
  private dead = false;

  constructor(
    private readonly url: string | undefined,
    /** When Slack sent the command (we use our receive time: a little later, so safe). */
    private readonly createdAt: number,
    usedBefore = 0,
    private readonly onUse: (used: number) => void = () => undefined,
    private readonly limits = { maxPosts: RESPONSE_URL_MAX_POSTS, ttlMs: RESPONSE_URL_TTL_MS - RESPONSE_URL_MARGIN_MS },
  ) {
    this.used = usedBefore;
  }

  /** Posts still allowed now. */
  remaining(now = Date.now()): number {
    if (!this.url || this.dead || now - this.createdAt >= this.limits.ttlMs) return 0;
    return Math.max(0, this.limits.maxPosts - this.used);
  }

  get postsUsed(): number {
    return this.used;
  }

  /** Takes a slot if more than `keep` remain. */
  tryReserve(keep = 0): boolean {
    if (this.remaining() <= keep) return false;
    this.used += 1;
    this.onUse(this.used);
    return true;
  }

  /** Posts a message on a reserved slot. False when Slack refused it (the URL is then given up). */
  async post(body: Record<string, unknown>): Promise<{ ok: boolean; detail?: string; code?: string }> {
    if (!this.url || this.dead) return { ok: false, detail: 'no response_url' };
    if (Date.now() - this.createdAt >= this.limits.ttlMs) return { ok: false, detail: 'response_url expired' };
    try {
      // undici's request, as for the other Slack calls (src/bots/slack/fetch.ts): Node's fetch
      // would wrap this small JSON post and its answer in web streams.
      const res = await request(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(RESPONSE_URL_TIMEOUT_MS),
      });
      const text = await res.body.text().catch(() => '');
      const status = res.statusCode;
      if (status >= 200 && status < 300) return { ok: true };
      // 404 expired_url / used_url and the like: this URL is done.
      if (status !== 429 && status < 500) this.dead = true;
      return { ok: false, detail: `HTTP ${status} ${text.slice(0, 60)}`.trim(), code: `response_url_http_${status}` };
    } catch (error) {
      return { ok: false, detail: error instanceof Error ? error.message : String(error), code: 'response_url_request_error' };
    }
  }
}

export type Delivered = 'response_url' | 'ephemeral' | 'none';

/** What a Slack job keeps in `job.reply` (DATA_DIR): enough to answer after a restart. */
export interface SlackReplyData {
  responseUrl?: string;
  /** When the command arrived (ms since the epoch): the response_url works 30 minutes from then. */
  responseUrlAt?: number;
  /** response_url posts used so far (Slack allows 5). */
  responseUrlPosts?: number;
  /**
   * False when the response_url came from a click on a message in the channel (Re-roll):
   * replace_original would then overwrite that public message, so every post is a new
   * ephemeral message instead. True (the default) for a slash command's response_url.
   */
  responseUrlReplaces?: boolean;
}

export function readReplyData(raw: Record<string, unknown>): SlackReplyData {
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  return {
    responseUrl: typeof raw.responseUrl === 'string' && /^https?:\/\//.test(raw.responseUrl) ? raw.responseUrl : undefined,
    responseUrlAt: num(raw.responseUrlAt),
    responseUrlPosts: num(raw.responseUrlPosts),
    responseUrlReplaces: raw.responseUrlReplaces !== false,
  };
}

export interface ReplyTarget {
  userId: string;
  channelId: string;
  responseUrl?: string;
  receivedAt: number;
  /** response_url posts already used (by an earlier run). */
  responseUrlPosts?: number;
  /** Records the response_url posts used, as they are reserved. */
  onResponseUrlUse?: (used: number) => void;
  /** See SlackReplyData.responseUrlReplaces (default true). */
  replaces?: boolean;
}

/** Counts an error a Slack API answered (services.metrics.platformError). */
export type SlackErrorReporter = (code: string) => void;

/** Work the adapter must let finish (or time out) before it stops. */
export class Inflight {
  private readonly pending = new Set<Promise<unknown>>();

  track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
    return p;
  }

  async settle(timeoutMs: number): Promise<void> {
    if (this.pending.size === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.pending]),
      new Promise<void>((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }
}

export interface SayOptions {
  /** A response_url slot was reserved for this message. */
  responseUrl: boolean;
  /** replace_original: the command's status message is edited in place. */
  replace?: boolean;
  /** Fall back to chat.postEphemeral when the response_url is not used or fails. */
  ephemeral: boolean;
  /** The last word of a command: if nothing reaches the user, say so in the log. */
  final?: boolean;
  /** Block Kit for the message (buttons); `text` stays the notification fallback. None: a text-only message. */
  blocks?: unknown[];
}

/**
 * The private line to the user who ran a command: the command's response_url while
 * it lasts, chat.postEphemeral otherwise. Messages go out one at a time, in order.
 */
export class UserReplies {
  responseUrl: ResponseUrl;
  /** Whether replace_original may be used on the response_url (see SlackReplyData). */
  replaces: boolean;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly target: ReplyTarget,
    private readonly client: webApi.WebClient,
    private readonly log: Logger,
    private readonly inflight: Inflight,
    private readonly report: SlackErrorReporter = () => undefined,
  ) {
    this.responseUrl = new ResponseUrl(target.responseUrl, target.receivedAt, target.responseUrlPosts, target.onResponseUrlUse);
    this.replaces = target.replaces ?? true;
  }

  /**
   * From now on, answer through this response_url (a click on the user's own status
   * message: replace_original then edits exactly that message).
   */
  useResponseUrl(url: string, receivedAt: number): void {
    this.responseUrl = new ResponseUrl(url, receivedAt);
    this.replaces = true;
  }

  /** Queues a message (plain text: escaped here). Resolves with where it went. */
  say(text: string, opts: SayOptions): Promise<Delivered> {
    // The response_url the slot was reserved on (useResponseUrl may switch it meanwhile).
    const responseUrl = this.responseUrl;
    const replaces = this.replaces;
    const next = this.chain
      .then(() => this.send(escapeMrkdwn(text), opts, responseUrl, replaces))
      .catch((error: unknown): Delivered => {
        this.log.error({ userId: this.target.userId, err: error }, 'sending a message to the user failed');
        return 'none';
      });
    this.chain = next;
    return this.inflight.track(next);
  }

  private async send(text: string, opts: SayOptions, responseUrl: ResponseUrl, replaces: boolean): Promise<Delivered> {
    const { userId, channelId } = this.target;
    let why = 'no response_url slot left';
    const blocks = opts.blocks ? { blocks: opts.blocks as types.KnownBlock[] } : {};
    if (opts.responseUrl) {
      const res = await responseUrl.post({
        response_type: 'ephemeral',
        replace_original: (opts.replace ?? false) && replaces,
        text,
        ...blocks,
      });
      if (res.ok) return 'response_url';
      if (res.code) this.report(res.code);
      why = `response_url refused: ${res.detail}`;
      this.log.info({ userId, detail: res.detail }, 'response_url post refused');
    }
    if (opts.ephemeral) {
      try {
        await this.client.chat.postEphemeral({ channel: channelId, user: userId, text, ...blocks });
        return 'ephemeral';
      } catch (error) {
        const failure = describeSlackError(error);
        this.report(failure.code);
        why = `${why}; chat.postEphemeral failed: ${failure.code}`;
      }
    }
    if (opts.final) {
      this.log.warn({ userId, channelId, why, message: text }, 'could not tell the user the outcome of their command');
    } else {
      this.log.debug({ userId, channelId, why }, 'progress update not shown');
    }
    return 'none';
  }
}
