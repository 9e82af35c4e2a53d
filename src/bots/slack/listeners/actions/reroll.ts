import { reroll } from '../../../../commands/reroll.js';
import type { ImagineResult } from '../../../../commands/imagine.js';
import { slackMessages } from '../../../../messages.js';
import { readJobId } from '../../blocks.js';
import { actionFields, type SlackContext } from '../../context.js';
import { clickReplies, type ActionArgs } from './shared.js';

/**
 * Re-roll under an image: the same prompt as a new job for whoever clicked, under the
 * same limits, answered like /imagine: the status privately (through the click's
 * response_url, as new ephemeral messages: replace_original there would overwrite the
 * image's message in the channel), the image in the channel. Works after a restart:
 * the prompt is read from DATA_DIR by the job id in the button.
 */
export function rerollAction(ctx: SlackContext) {
  return async ({ ack, body }: ActionArgs): Promise<void> => {
    await ack();
    const receivedAt = Date.now();
    const f = actionFields(body);
    if (!f) {
      ctx.log.warn('Re-roll click without user, channel or action');
      return;
    }
    const replies = clickReplies(ctx, f, receivedAt, false);
    const say = (text: string) => replies.say(text, { responseUrl: replies.responseUrl.tryReserve(0), ephemeral: true, final: true });
    const jobId = readJobId(f.value);
    if (!jobId) {
      await say(slackMessages.buttonUnreadable);
      return;
    }
    let result: ImagineResult;
    try {
      result = await reroll(
        {
          requester: { platform: 'slack', userId: f.userId, userName: f.userName, channelId: f.channelId },
          jobId,
          reply: { responseUrl: f.responseUrl, responseUrlAt: receivedAt, responseUrlPosts: 0, responseUrlReplaces: false },
        },
        ctx.services,
      );
    } catch (error) {
      ctx.log.error({ err: error, userId: f.userId, jobId }, 'Re-roll failed');
      await say(slackMessages.internalError);
      return;
    }
    if (!result.ok) {
      await say(result.message);
      return;
    }
    ctx.log.info({ jobId: result.job.id, rerollOf: jobId, userId: f.userId, channelId: f.channelId }, 'Re-roll accepted');
    // Nothing shown yet: the follower posts the first status at once.
    ctx.followers.follow(result.job);
  };
}
