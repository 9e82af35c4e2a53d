import type { webApi } from '@slack/bolt';
import type { Logger } from 'pino';
import type { FinalEvent, Job } from '../../jobs/job.js';
import type { JobEvent } from '../../jobs/types.js';
import { messages } from '../../messages.js';
import type { Services } from '../../services.js';
import { postImage } from './deliver.js';
import type { UserReplies } from './reply.js';

export interface ProgressTiming {
  /** At most one update per this long (the final message is never held back). */
  throttleMs: number;
  /** Updates of the same kind (position 3 → 2, warming 10 s → 25 s) at most this often. */
  sameKindSpacingMs: number;
}

export const DEFAULT_PROGRESS_TIMING: ProgressTiming = { throttleMs: 2_000, sameKindSpacingMs: 15_000 };

/**
 * Keeps the user who ran /imagine informed, then delivers the outcome.
 *
 * The ack showed the first status. Later statuses edit it in place through the
 * response_url (replace_original), within its 5 posts: one is always kept for the
 * final word, one more for a change of phase (queued → warming → generating), and
 * repeated ticks of one phase use what is left. Once the response_url is spent (or
 * too old), a change of phase goes out as a new ephemeral message and ticks are
 * dropped. The outcome: the image in the channel, or one clear message.
 */
export class JobReporter {
  private lastKind: JobEvent['type'];
  private lastText: string;
  private lastSentAt: number;
  private lastResponseUrlAt: number;
  private pending: JobEvent | undefined;
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  private finished = false;

  constructor(
    private readonly job: Job,
    private readonly replies: UserReplies,
    private readonly deps: { services: Services; client: webApi.WebClient; log: Logger; timing?: ProgressTiming },
    /** What the ack showed. */
    acked: { kind: JobEvent['type']; text: string; at: number },
  ) {
    this.lastKind = acked.kind;
    this.lastText = acked.text;
    this.lastSentAt = acked.at;
    this.lastResponseUrlAt = acked.at;
  }

  private get timing(): ProgressTiming {
    return this.deps.timing ?? DEFAULT_PROGRESS_TIMING;
  }

  start(): void {
    this.unsubscribe = this.job.subscribe((event) => this.onEvent(event));
  }

  /** The adapter is stopping: no more progress updates (final messages still go out). */
  dispose(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
  }

  private onEvent(event: JobEvent): void {
    if (this.finished) return;
    if (event.type === 'done' || event.type === 'failed') {
      this.finished = true;
      this.dispose();
      this.unsubscribe?.();
      void this.finish(event).catch((error: unknown) =>
        this.deps.log.error({ jobId: this.job.id, err: error }, 'delivering a job outcome failed'),
      );
      return;
    }
    if (messages.progress(event) === this.lastText && this.pending === undefined) return;
    this.pending = event;
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || !this.pending) return;
    const notBefore =
      this.pending.type === this.lastKind
        ? Math.max(this.lastSentAt + this.timing.throttleMs, this.lastResponseUrlAt + this.timing.sameKindSpacingMs)
        : this.lastSentAt + this.timing.throttleMs;
    this.timer = setTimeout(() => this.flush(), Math.max(0, notBefore - Date.now()));
  }

  private flush(): void {
    this.timer = undefined;
    const event = this.pending;
    this.pending = undefined;
    if (!event || this.finished) return;
    const text = messages.progress(event);
    if (text === this.lastText) return;
    const phaseChange = event.type !== this.lastKind;
    const now = Date.now();
    // Keep one post for the outcome; a tick also leaves one for a later change of phase.
    const viaResponseUrl = this.replies.responseUrl.tryReserve(phaseChange ? 1 : 2);
    if (!viaResponseUrl && !phaseChange) return; // a tick with no budget left: not worth a new message
    void this.replies.say(text, { responseUrl: viaResponseUrl, replace: true, ephemeral: phaseChange });
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
    const posted = await postImage(client, job, event.image);
    if (posted.ok) {
      services.jobs.delivered(job.id);
      // The image is the outcome; the status message just says where it went.
      if (this.replies.responseUrl.tryReserve(0)) {
        await this.replies.say(messages.progress(event), { responseUrl: true, replace: true, ephemeral: false });
      }
      return;
    }
    const { code, reason } = posted.failure;
    log.warn({ jobId: job.id, channelId: job.requester.channelId, code, reason }, 'could not post the image in Slack');
    services.jobs.deliveryFailed(job.id, `${code}: ${reason}`);
    const slot = this.replies.responseUrl.tryReserve(0);
    await this.replies.say(messages.deliveryFailed(reason), { responseUrl: slot, replace: true, ephemeral: true, final: true });
  }
}
