import { escapeMarkdown, userMention, type REST } from 'discord.js';
import type { Logger } from 'pino';
import type { FinalEvent, Job } from '../../jobs/job.js';
import type { Requester } from '../../jobs/types.js';
import { discordMessages, messages } from '../../messages.js';
import type { Services } from '../../services.js';
import { cancelRow, rerollRow } from './components.js';
import {
  CONTENT_MAX,
  DEFAULT_UPLOAD_LIMIT,
  describeError,
  errorFields,
  isDefinitive,
  isTooLarge,
  postToChannel,
  readReplyData,
  WebhookReply,
  type ApiErrorReporter,
  type ReplyTiming,
} from './reply.js';

export interface FollowDeps {
  services: Services;
  /** REST with the bot token (channel posts); webhook calls use no token. */
  rest: REST;
  logger: Logger;
  timing: ReplyTiming;
  report: ApiErrorReporter;
}

const SUSPENDED = Symbol('suspended');

/**
 * Follows Discord jobs from submission (or from a restart) to their one final
 * outcome. Each job is followed using only `job.requester` and `job.reply`.
 */
export class Followers {
  private readonly active = new Map<string, () => void>();
  /** Every follower's run, until its job's outcome is delivered (or it let go at stop). */
  private readonly runs = new Set<Promise<void>>();
  private stopped = false;

  constructor(private readonly deps: FollowDeps) {}

  follow(job: Job): void {
    if (this.stopped || this.active.has(job.id)) return;
    let suspend!: () => void;
    const suspended = new Promise<typeof SUSPENDED>((resolve) => (suspend = () => resolve(SUSPENDED)));
    this.active.set(job.id, suspend);
    const run: Promise<void> = this.run(job, suspended)
      .catch((error: unknown) => this.deps.logger.error({ jobId: job.id, ...errorFields(error) }, 'following a job failed'))
      .finally(() => {
        this.active.delete(job.id);
        this.runs.delete(run);
      });
    this.runs.add(run);
  }

  /**
   * A job an earlier run left. One recorded before its acknowledgement was confirmed (a crash
   * in between) is first checked with Discord: when Discord shows no reply, the user saw "The
   * application did not respond", and the job is cancelled without a word, as when the
   * acknowledgement is refused as too late without a crash (src/bots/discord/start.ts): a command
   * Discord showed as failed never posts an image later (the user has likely asked again).
   * When Discord cannot be asked, the job goes on as after an uncertain acknowledgement.
   */
  recover(job: Job): void {
    if (readReplyData(job.reply).acknowledged) {
      this.follow(job);
      return;
    }
    const { services, rest, timing, logger, report } = this.deps;
    const log = logger.child({ jobId: job.id });
    const check: Promise<void> = new WebhookReply(rest, readReplyData(job.reply), timing, log, report)
      .exists()
      .then((shown) => {
        if (shown === false) {
          log.info('job dropped: Discord never showed its acknowledgement (the user saw the command fail)');
          // A job whose image was already generated has had its outcome: it ends as not posted.
          if (!services.jobs.cancel(job.id)) services.jobs.deliveryFailed(job.id, 'Discord never showed the command as acknowledged');
          return;
        }
        if (shown) services.jobs.updateReply(job.id, { acknowledged: true });
        this.follow(job);
      })
      .catch((error: unknown) => log.error({ ...errorFields(error) }, 'recovering a job failed'))
      .finally(() => this.runs.delete(check));
    this.runs.add(check);
  }

  /**
   * Stop: jobs still queued or running stay recorded for the next start (their
   * followers let go); deliveries under way get up to graceMs.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    const running = [...this.runs];
    for (const suspend of this.active.values()) suspend();
    if (running.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(running), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }

  private async run(job: Job, suspended: Promise<typeof SUSPENDED>): Promise<void> {
    const log = this.deps.logger.child({ jobId: job.id });
    const data = readReplyData(job.reply);
    const reply = new WebhookReply(this.deps.rest, data, this.deps.timing, log, this.deps.report);
    // While the job waits or runs, its progress message carries a Cancel button.
    const unsubscribe = job.subscribe((event) => {
      if (event.type !== 'done' && event.type !== 'failed') reply.progress(messages.progress(event), cancelRow(job.id));
    });
    let final: FinalEvent | typeof SUSPENDED;
    try {
      final = await Promise.race([job.outcome, suspended]);
    } finally {
      unsubscribe();
    }
    if (final === SUSPENDED) {
      // Kept in DATA_DIR: the next start follows it on. Say so while the reply can be edited.
      await reply.note(discordMessages.restarting);
      return;
    }
    // Images go up a few at a time (services.uploads): each upload copies its image.
    if (final.type === 'done') await this.deps.services.uploads.add(() => deliver(job, final, reply, this.deps, log));
    else await deliver(job, final, reply, this.deps, log);
  }
}

/**
 * A prompt as Discord should show it, literally: markdown escaped (bold, italics,
 * code, spoilers, backslashes), every `[` escaped so no `[text](url)` in it is a masked
 * link (discord.js's maskedLink option escapes only the first on a line), and mentions
 * defused so they show as text rather than as a pill: `<@id>`, `<@&id>`, `<#id>` get a
 * backslash (Discord's own escape), `@everyone` / `@here` a zero-width space.
 * allowed_mentions (parse: []) already keeps them from pinging anyone; this keeps them
 * from looking like one.
 */
function escapePrompt(prompt: string): string {
  return escapeMarkdown(prompt)
    .replace(/\[/g, '\\[')
    .replace(/<(@[!&]?|#|\/)/g, '\\<$1')
    .replace(/@(everyone|here)/gi, '@\u200b$1');
}

/** "prompt" (asked by who), with the prompt shortened if the whole would pass Discord's 2000 characters. */
function caption(prompt: string, requester: Requester, wrap: (caption: string) => string = (c) => c): string {
  let chars = [...prompt];
  let text = wrap(messages.imageCaption(escapePrompt(prompt), requester));
  while (text.length > CONTENT_MAX && chars.length > 0) {
    chars = chars.slice(0, Math.max(0, chars.length - Math.max(8, text.length - CONTENT_MAX)));
    text = wrap(messages.imageCaption(`${escapePrompt(chars.join(''))}…`, requester));
  }
  return text;
}

/**
 * The one final outcome: the image (or the error) in the reply while its token
 * works, else in the channel with the bot token, mentioning the user. An image
 * over the upload limit becomes a clear message. Then the core hears how it went.
 */
async function deliver(job: Job, final: FinalEvent, reply: WebhookReply, deps: FollowDeps, log: Logger): Promise<void> {
  const { jobs } = deps.services;
  const data = readReplyData(job.reply);
  const userId = job.requester.userId;
  const channelId = data.channelId ?? job.requester.channelId;
  const mention = userMention(userId);
  // Who asked, as a mention by id in every caption: a display name is the user's own text
  // (markup, masked links, fake pings), and allowed_mentions keeps the mention from pinging twice.
  const askedBy = { ...job.requester, userName: mention };

  const toChannel = async (content: string, file?: Parameters<typeof postToChannel>[2]['file'], components?: ReturnType<typeof rerollRow>) => {
    if (!channelId) throw new Error('no channel to post in');
    await postToChannel(deps.rest, channelId, { content, allowedUserIds: [userId], file, components });
  };

  /**
   * A text outcome, without buttons: the reply while it can be edited, else the channel,
   * mentioning the user. A cancellation is never posted in the channel: the Cancel click
   * already showed it on the job's message (and the user or an admin asked for it).
   */
  const tell = async (text: string, channelFallback = true): Promise<boolean> => {
    if (reply.tokenAlive()) {
      try {
        await reply.editFinal(text);
        return true;
      } catch {
        // logged by the reply; try the channel
      }
    }
    if (!channelFallback) return false;
    try {
      await toChannel(discordMessages.lateNotice(mention, text));
      return true;
    } catch (error) {
      log.error({ ...deps.report(error) }, 'could not tell the user the outcome of their job');
      return false;
    }
  };

  await reply.settle();
  if (final.type === 'failed') {
    await tell(final.message, final.reason !== 'cancelled');
    return;
  }

  const { image } = final;
  const size = image.bytes.length;
  const limit = data.attachmentSizeLimit ?? DEFAULT_UPLOAD_LIMIT;
  const refuseTooLarge = async (knownLimit: number | undefined) => {
    const reason = discordMessages.tooLarge(size, knownLimit);
    log.warn({ bytes: size, limit: knownLimit }, 'image over the upload limit');
    await tell(messages.deliveryFailed(reason));
    jobs.deliveryFailed(job.id, reason);
  };
  if (size > limit) {
    await refuseTooLarge(limit);
    return;
  }
  const file = { name: `${job.id}.${image.extension}`, data: image.bytes, contentType: image.mime };

  if (reply.tokenAlive()) {
    try {
      await reply.editFinal(caption(job.prompt, askedBy), file, rerollRow(job.id));
      jobs.delivered(job.id);
      return;
    } catch (error) {
      if (isTooLarge(error)) {
        await refuseTooLarge(undefined);
        return;
      }
      if (!isDefinitive(error) && (await reply.hasAttachment())) {
        jobs.delivered(job.id);
        return;
      }
      log.warn('posting the image in the channel instead of the reply');
    }
  }

  try {
    await toChannel(
      caption(job.prompt, askedBy, (c) => discordMessages.lateImage(mention, c)),
      file,
      rerollRow(job.id),
    );
    jobs.delivered(job.id);
  } catch (error) {
    const fields = deps.report(error);
    if (isTooLarge(error)) {
      await refuseTooLarge(undefined);
      return;
    }
    const reason = describeError(error);
    log.error(fields, 'could not post the image');
    await tell(messages.deliveryFailed(reason));
    jobs.deliveryFailed(job.id, reason);
  }
}
