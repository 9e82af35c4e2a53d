import { gpu, type GpuResult } from '../../../../commands/gpu.js';
import { messages, slackMessages } from '../../../../messages.js';
import { actionFields, type SlackContext } from '../../context.js';
import { clickReplies, type ActionArgs } from './shared.js';

/** How long a confirmed kill may take before the question is replaced by "working on it". */
const WORKING_AFTER_MS = 500;

/**
 * Confirm on the `/gpu kill` question: the kill runs (the admin check runs again in the
 * core). The question is replaced by the result; by "working on it" first (no more
 * buttons) when the kill takes a while.
 */
export function killConfirmAction(ctx: SlackContext) {
  return async ({ ack, body }: ActionArgs): Promise<void> => {
    await ack();
    const receivedAt = Date.now();
    const f = actionFields(body);
    if (!f) {
      ctx.log.warn('/gpu kill confirmation without user, channel or action');
      return;
    }
    const replies = clickReplies(ctx, f, receivedAt, true);
    const result: Promise<GpuResult> = ctx.inflight.track(
      gpu(
        { requester: { platform: 'slack', userId: f.userId, userName: f.userName, channelId: f.channelId }, subcommand: 'kill', confirmed: true },
        ctx.services,
      ).catch((error: unknown) => {
        ctx.log.error({ err: error, userId: f.userId }, '/gpu kill (confirmed) failed');
        return { ok: false, message: slackMessages.internalError };
      }),
    );
    // A slow kill (Fair answering slowly): the buttons go at once, the result follows.
    let timer: NodeJS.Timeout | undefined;
    const quick = await Promise.race([result, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), WORKING_AFTER_MS)))]);
    clearTimeout(timer);
    if (!quick) {
      void replies.say(slackMessages.gpuWorking, { responseUrl: replies.responseUrl.tryReserve(1), replace: true, ephemeral: false });
    }
    await replies.say((await result).message, { responseUrl: replies.responseUrl.tryReserve(0), replace: true, ephemeral: true, final: true });
  };
}

/** Keep on the `/gpu kill` question: nothing stops; the question says so (no more buttons). */
export function killKeepAction(ctx: SlackContext) {
  return async ({ ack, body }: ActionArgs): Promise<void> => {
    await ack();
    const f = actionFields(body);
    if (!f) return;
    ctx.log.info({ userId: f.userId }, '/gpu kill not confirmed');
    const replies = clickReplies(ctx, f, Date.now(), true);
    await replies.say(messages.gpuKillAborted, { responseUrl: replies.responseUrl.tryReserve(0), replace: true, ephemeral: true, final: true });
  };
}
