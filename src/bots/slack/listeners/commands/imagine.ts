import type { AllMiddlewareArgs, SlackCommandMiddlewareArgs } from '@slack/bolt';
import { imagineOrWait, type ImagineResult } from '../../../../commands/imagine.js';
import { messages, slackMessages } from '../../../../messages.js';
import { progressBlocks, withBlocks } from '../../blocks.js';
import type { SlackContext } from '../../context.js';
import { checkedFields } from './fields.js';
import { escapeMrkdwn } from '../../text.js';

type Args = SlackCommandMiddlewareArgs & AllMiddlewareArgs;

/**
 * /imagine <prompt>: acknowledged at once with the job's status (ephemeral), then kept
 * up to date; the image goes to the channel. Refusals are the ack itself.
 */
export function imagineCommand(ctx: SlackContext) {
  return async ({ command, ack }: Args): Promise<void> => {
    const receivedAt = Date.now();
    const fields = await checkedFields(ctx, command, ack);
    if (!fields) return;
    let result: ImagineResult;
    try {
      // Immediate, or up to STORAGE_BUSY_WAIT_MS while the database is locked: within the ack's 3 s.
      // Awaited only then: the ack shows the job's first status (queued), not a later one.
      const submitted = imagineOrWait(
        {
          requester: { platform: 'slack', userId: fields.userId, userName: fields.userName, channelId: fields.channelId },
          prompt: fields.text,
          // All a restarted bot needs to answer (kept with the job in DATA_DIR).
          reply: { responseUrl: fields.responseUrl, responseUrlAt: receivedAt, responseUrlPosts: 0 },
        },
        ctx.services,
      );
      result = submitted instanceof Promise ? await submitted : submitted;
    } catch (error) {
      ctx.log.error({ err: error, userId: fields.userId }, '/imagine failed');
      await ack({ response_type: 'ephemeral', text: escapeMrkdwn(slackMessages.internalError) });
      return;
    }
    if (!result.ok) {
      await ack({ response_type: 'ephemeral', text: escapeMrkdwn(result.message) });
      return;
    }
    const { job } = result;
    const first = job.lastEvent;
    const text = messages.progress(first);
    ctx.log.info({ jobId: job.id, userId: fields.userId, channelId: fields.channelId }, '/imagine accepted');
    try {
      // The status, with a Cancel button while the job waits or runs.
      await ack({ response_type: 'ephemeral', text: escapeMrkdwn(text), ...withBlocks(job.ended ? undefined : progressBlocks(text, job.id)) });
    } finally {
      // Even if the ack could not be written, the job runs: its outcome still needs telling.
      ctx.followers.follow(job, { kind: first.type, text, at: Date.now() });
    }
  };
}
