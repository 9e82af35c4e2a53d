import type { AllMiddlewareArgs, SlackActionMiddlewareArgs } from '@slack/bolt';
import type { ActionFields, SlackContext } from '../../context.js';
import { UserReplies } from '../../reply.js';

export type ActionArgs = SlackActionMiddlewareArgs & AllMiddlewareArgs;

/**
 * The private line to whoever clicked: the click's response_url (5 posts, 30 minutes),
 * then chat.postEphemeral. `replaces`: replace_original may be used, i.e. the clicked
 * message is one only the clicker sees (never a message in the channel).
 */
export function clickReplies(ctx: SlackContext, f: ActionFields, receivedAt: number, replaces: boolean): UserReplies {
  return new UserReplies(
    { userId: f.userId, channelId: f.channelId, responseUrl: f.responseUrl, receivedAt, replaces: replaces && f.fromEphemeral },
    ctx.client,
    ctx.log,
    ctx.inflight,
    ctx.report,
  );
}
