import type { webApi } from '@slack/bolt';
import type { Logger } from 'pino';
import type { FinalEvent, Job } from '../../jobs/job.js';
import type { JobEvent } from '../../jobs/types.js';
import { messages, slackMessages } from '../../messages.js';
import type { Services } from '../../services.js';
import { progressBlocks } from './blocks.js';
import { postImage } from './deliver.js';
import { readReplyData, UserReplies, type Inflight, type SlackErrorReporter } from './reply.js';

export interface ProgressTiming {
  /** At most one update per this long (the final message is never held back). */
  throttleMs: number;
  /**
   * Updates of the same kind (position 3 → 2, warming 10 s → 25 s) wait this long after
   * the previous response_url post: the n-th such update of a phase uses entry n (the
   * last repeats). Growing gaps spread the few posts a response_url allows over a long
   * cold start.
   */
  sameKindSpacingMs: number[];
}

const DEFAULT_PROGRESS_TIMING: ProgressTiming = { throttleMs: 2_000, sameKindSpacingMs: [3_000, 10_000, 30_000] };

export interface FollowDeps {
  services: Services;
  /** The bot-token client: uploads and ephemerals. */
  client: webApi.WebClient;
  log: Logger;
  inflight: Inflight;
  /** Counts Slack API errors (services.metrics.platformError). */
  report: SlackErrorReporter;
  timing?: ProgressTiming;
}

/** What the command's ack already showed the user. */
export interface Acked {
  kind: JobEvent['type'];
  text: string;
  at: number;
}

/**
 * Follows Slack jobs, fresh ones (right after the ack) and the ones a restart
 * recovered from DATA_DIR alike: each is followed from `job.requester` and
 * `job.reply` only.
 */
export class SlackFollowers {
  private readonly active = new Map<string, JobFollower>();
  private stopped = false;

  constructor(private readonly deps: FollowDeps) {}

  follow(job: Job, acked?: Acked): void {
    if (this.stopped || this.active.has(job.id)) return;
    const follower = new JobFollower(job, this.deps, acked);
    this.active.set(job.id, follower);
    void follower.finished.finally(() => this.active.delete(job.id));
    follower.start();
  }

  /**
   * The job's owner clicked a button on their status message: its outcome goes through
   * that click's response_url, replacing exactly the clicked message (its buttons go).
   * False when the job is not followed here or has already ended.
   */
  adoptInteraction(jobId: string, responseUrl: string, receivedAt: number): boolean {
    return this.active.get(jobId)?.adoptInteraction(responseUrl, receivedAt) ?? false;
  }

  /**
   * Stop: jobs still queued or running stay in DATA_DIR for the next start; their
   * users hear that the bot is restarting (when the response_url can spare it).
   * Messages and uploads under way get up to graceMs.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    for (const follower of this.active.values()) follower.suspend();
    await this.deps.inflight.settle(graceMs);
  }
}

/**
 * Keeps the user who ran /imagine informed, then delivers the outcome.
 *
 * The ack showed the first status. Later statuses edit it in place through the
 * response_url (replace_original), within its 5 posts: one is always kept for the
 * final word, one more for a change of phase (queued → warming → generating), and
 * repeated ticks of one phase use what is left, at growing intervals (3 s, 10 s, 30 s).
 * Once the response_url is spent (or too old), a change of phase goes out as a new
 * ephemeral message and ticks are dropped. The outcome: the image in the channel, or
 * one clear message.
 */
class JobFollower {
  readonly finished: Promise<void>;
  private resolveFinished!: () => void;
  private readonly replies: UserReplies;
  private lastKind: JobEvent['type'] | undefined;
  private lastText: string | undefined;
  private lastSentAt: number;
  private lastResponseUrlAt: number;
  private sameKindPosts = 0;
  private pending: JobEvent | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;
  private unsubscribe: (() => void) | undefined;
  private ended = false;
  private suspended = false;

  constructor(
    private readonly job: Job,
    private readonly deps: FollowDeps,
    acked?: Acked,
  ) {
    this.finished = new Promise((resolve) => (this.resolveFinished = resolve));
    const data = readReplyData(job.reply);
    this.replies = new UserReplies(
      {
        userId: job.requester.userId,
        channelId: job.requester.channelId ?? '',
        responseUrl: data.responseUrl,
        receivedAt: data.responseUrlAt ?? 0,
        responseUrlPosts: data.responseUrlPosts ?? 0,
        onResponseUrlUse: (used) => this.remember({ responseUrlPosts: used }),
        replaces: data.responseUrlReplaces,
      },
      deps.client,
      deps.log,
      deps.inflight,
      deps.report,
    );
    // A recovered job has shown nothing in this run: its first event goes out at once.
    this.lastKind = acked?.kind;
    this.lastText = acked?.text;
    this.lastSentAt = acked?.at ?? 0;
    this.lastResponseUrlAt = acked?.at ?? 0;
  }

  private get timing(): ProgressTiming {
    return this.deps.timing ?? DEFAULT_PROGRESS_TIMING;
  }

  start(): void {
    const unsubscribe = this.job.subscribe((event) => this.onEvent(event));
    if (this.ended) unsubscribe();
    else this.unsubscribe = unsubscribe;
  }

  adoptInteraction(responseUrl: string, receivedAt: number): boolean {
    if (this.ended || this.suspended) return false;
    this.replies.useResponseUrl(responseUrl, receivedAt);
    return true;
  }

  /** The adapter stops with the job unfinished: it stays recorded for the next start. */
  suspend(): void {
    if (this.ended || this.suspended) return;
    this.suspended = true;
    this.clearTimer();
    this.unsubscribe?.();
    if (this.replies.responseUrl.tryReserve(1)) {
      void this.replies.say(slackMessages.restarting, { responseUrl: true, replace: true, ephemeral: false });
    }
    this.resolveFinished();
  }

  private onEvent(event: JobEvent): void {
    if (this.ended || this.suspended) return;
    if (event.type === 'done' || event.type === 'failed') {
      this.ended = true;
      this.clearTimer();
      this.unsubscribe?.();
      // Tracked whole (the image, then the status that says where it went): a stop lets it
      // finish within its grace rather than leave the status at "Generating" with a live Cancel.
      void this.deps.inflight.track(
        this.finish(event)
          .catch((error: unknown) => this.deps.log.error({ jobId: this.job.id, err: error }, 'delivering a job outcome failed'))
          .finally(() => this.resolveFinished()),
      );
      return;
    }
    if (messages.progress(event) === this.lastText && this.pending === undefined) return;
    this.pending = event;
    this.schedule();
  }

  private clearTimer(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
  }

  private sameKindSpacing(): number {
    const gaps = this.timing.sameKindSpacingMs;
    return gaps[Math.min(this.sameKindPosts, gaps.length - 1)] ?? this.timing.throttleMs;
  }

  private schedule(): void {
    if (!this.pending) return;
    const notBefore =
      this.pending.type === this.lastKind
        ? Math.max(this.lastSentAt + this.timing.throttleMs, this.lastResponseUrlAt + this.sameKindSpacing())
        : this.lastSentAt + this.timing.throttleMs;
    // A change of phase may go out sooner than the tick it replaces was due.
    if (this.timer && this.timerAt <= notBefore) return;
    clearTimeout(this.timer);
    this.timerAt = notBefore;
    this.timer = setTimeout(() => this.flush(), Math.max(0, notBefore - Date.now()));
  }

  private flush(): void {
    this.timer = undefined;
    const event = this.pending;
    this.pending = undefined;
    if (!event || this.ended || this.suspended) return;
    // Status messages that cannot be edited in place (a Re-roll's, see SlackReplyData):
    // the first one and the outcome only, not a new message per tick or phase.
    if (!this.replies.replaces && this.lastKind !== undefined) return;
    const text = messages.progress(event);
    if (text === this.lastText) return;
    const phaseChange = event.type !== this.lastKind;
    const now = Date.now();
    // Keep one post for the outcome; a tick also leaves one for a later change of phase.
    const viaResponseUrl = this.replies.responseUrl.tryReserve(phaseChange ? 1 : 2);
    if (!viaResponseUrl && !phaseChange) return; // a tick with no budget left: not worth a new message
    // While the job waits or runs, its status carries a Cancel button (gone with the outcome).
    void this.replies.say(text, { responseUrl: viaResponseUrl, replace: true, ephemeral: phaseChange, blocks: progressBlocks(text, this.job.id) });
    this.sameKindPosts = phaseChange ? 0 : this.sameKindPosts + 1;
    this.lastKind = event.type;
    this.lastText = text;
    this.lastSentAt = now;
    if (viaResponseUrl) this.lastResponseUrlAt = now;
  }

  private async finish(event: FinalEvent): Promise<void> {
    const { services, client, log } = this.deps;
    const job = this.job;
    if (event.type === 'failed') {
      const slot = this.replies.responseUrl.tryReserve(0);
      const where = await this.replies.say(event.message, { responseUrl: slot, replace: true, ephemeral: true, final: true });
      log.info({ jobId: job.id, reason: event.reason, shownVia: where }, 'job failure reported to the user');
      return;
    }
    let statusDone: Promise<unknown> | undefined;
    const onUploaded = () => {
      services.jobs.delivered(job.id);
      // The image is the outcome; the status says where it went as soon as it is there (not
      // after the Re-roll button: a stop must not cut it off, leaving "Generating" and a live Cancel).
      if (this.replies.responseUrl.tryReserve(0)) {
        statusDone = this.replies.say(messages.progress(event), { responseUrl: true, replace: true, ephemeral: false });
      }
    };
    // Images go up a few at a time (services.uploads): the SDK copies each image it uploads.
    const posted = await this.deps.inflight.track(
      services.uploads.add(() => postImage(client, job, event.image, { log, report: this.deps.report, onUploaded })),
    );
    if (posted.ok) {
      await statusDone;
      return;
    }
    const { code, reason } = posted.failure;
    log.warn({ jobId: job.id, channelId: job.requester.channelId, code, reason }, 'could not post the image in Slack');
    const slot = this.replies.responseUrl.tryReserve(0);
    await this.replies.say(messages.deliveryFailed(reason), { responseUrl: slot, replace: true, ephemeral: true, final: true });
    services.jobs.deliveryFailed(job.id, `${code}: ${reason}`);
  }

  /** Records what a restart needs with the job (DATA_DIR). */
  private remember(update: Record<string, unknown>): void {
    try {
      this.deps.services.jobs.updateReply(this.job.id, update);
    } catch (error) {
      this.deps.log.warn({ jobId: this.job.id, err: error }, 'could not record the reply state of a job');
    }
  }
}
