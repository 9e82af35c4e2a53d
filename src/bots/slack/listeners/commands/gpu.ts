import type { AllMiddlewareArgs, SlackCommandMiddlewareArgs } from '@slack/bolt';
import { gpu, type GpuResult } from '../../../../commands/gpu.js';
import { slackMessages } from '../../../../messages.js';
import { killConfirmBlocks, statusBlocks, withBlocks, type Block } from '../../blocks.js';
import type { SlackContext } from '../../context.js';
import { checkedFields } from './fields.js';
import { UserReplies } from '../../reply.js';
import { escapeMrkdwn } from '../../text.js';

type Args = SlackCommandMiddlewareArgs & AllMiddlewareArgs;

/**
 * How a /gpu answer looks in Slack: `/gpu status` as Block Kit (the plain text is the
 * fallback), `/gpu kill` with jobs waiting as a question with Confirm / Keep buttons.
 */
function gpuAnswerBlocks(result: GpuResult, subcommand: string): Block[] | undefined {
  if (result.needsConfirmation) return killConfirmBlocks(result.message);
  if (result.ok && result.status && subcommand.trim().toLowerCase() === 'status') return statusBlocks(result.status);
  return undefined;
}

/**
 * /gpu status | kill (admins, checked by the core). The answer is the ack when it is
 * ready within the ack budget; a slow kill is acked with "working on it" and its
 * result replaces that message.
 */
export function gpuCommand(ctx: SlackContext) {
  return async ({ command, ack }: Args): Promise<void> => {
    const receivedAt = Date.now();
    const fields = await checkedFields(ctx, command, ack);
    if (!fields) return;
    const result: Promise<GpuResult> = gpu(
      { requester: { platform: 'slack', userId: fields.userId, userName: fields.userName, channelId: fields.channelId }, subcommand: fields.text },
      ctx.services,
    ).catch((error: unknown) => {
      ctx.log.error({ err: error, userId: fields.userId }, '/gpu failed');
      return { ok: false, message: slackMessages.internalError };
    });
    ctx.inflight.track(result);
    let timer: NodeJS.Timeout | undefined;
    const quick = await Promise.race([
      result,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ctx.gpuAckBudgetMs);
      }),
    ]);
    clearTimeout(timer);
    if (quick) {
      await ack({ response_type: 'ephemeral', text: escapeMrkdwn(quick.message), ...withBlocks(gpuAnswerBlocks(quick, fields.text)) });
      return;
    }
    await ack({ response_type: 'ephemeral', text: escapeMrkdwn(slackMessages.gpuWorking) });
    const replies = new UserReplies(
      { userId: fields.userId, channelId: fields.channelId, responseUrl: fields.responseUrl, receivedAt },
      ctx.client,
      ctx.log,
      ctx.inflight,
      ctx.report,
    );
    const final = await result;
    await replies.say(final.message, {
      responseUrl: replies.responseUrl.tryReserve(0),
      replace: true,
      ephemeral: true,
      final: true,
      blocks: gpuAnswerBlocks(final, fields.text),
    });
  };
}
