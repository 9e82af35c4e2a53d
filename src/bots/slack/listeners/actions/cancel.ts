import { cancel } from '../../../../commands/cancel.js';
import { slackMessages } from '../../../../messages.js';
import { readJobId } from '../../blocks.js';
import { actionFields, type SlackContext } from '../../context.js';
import { clickReplies, type ActionArgs } from './shared.js';

/**
 * Cancel on a job's status message: its owner or an admin, while the job waits or runs
 * (both checked by the core). The owner's cancelled job says so in the clicked message
 * itself (its buttons go); refusals are ephemeral.
 */
export function cancelAction(ctx: SlackContext) {
  return async ({ ack, body }: ActionArgs): Promise<void> => {
    await ack();
    const receivedAt = Date.now();
    const f = actionFields(body);
    if (!f) {
      ctx.log.warn('Cancel click without user, channel or action');
      return;
    }
    const jobId = readJobId(f.value);
    const described = jobId ? ctx.services.jobs.describeJob(jobId) : undefined;
    const owner = described?.requester.platform === 'slack' && described.requester.userId === f.userId;
    // The outcome goes through this click (replacing the clicked status), not a new message.
    // (Only from the owner's own ephemeral status: replace_original on a channel message would edit it for everyone.)
    const adopted = owner && jobId && f.responseUrl && f.fromEphemeral ? ctx.followers.adoptInteraction(jobId, f.responseUrl, receivedAt) : false;
    let result: { ok: boolean; message: string };
    if (!jobId) result = { ok: false, message: slackMessages.buttonUnreadable };
    else {
      try {
        result = cancel({ requester: { platform: 'slack', userId: f.userId, userName: f.userName, channelId: f.channelId }, jobId }, ctx.services);
      } catch (error) {
        ctx.log.error({ err: error, userId: f.userId, jobId }, 'Cancel failed');
        result = { ok: false, message: slackMessages.internalError };
      }
    }
    if (result.ok && adopted) return;
    if (!result.ok) ctx.log.info({ jobId, userId: f.userId, owner }, 'Cancel refused');
    // The owner's own (stale) status message is replaced; anyone else gets a new ephemeral.
    const replies = clickReplies(ctx, f, receivedAt, owner);
    await replies.say(result.message, { responseUrl: replies.responseUrl.tryReserve(0), replace: true, ephemeral: true, final: true });
  };
}
