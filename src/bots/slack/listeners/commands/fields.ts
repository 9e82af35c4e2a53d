import type { SlackCommandMiddlewareArgs } from '@slack/bolt';
import { slackMessages } from '../../../../messages.js';
import { commandFields, type CommandFields, type SlackContext } from '../../context.js';
import { escapeMrkdwn } from '../../text.js';

/**
 * The command's fields, or undefined once the user has been answered: a command
 * without a user or channel cannot be served, but must not go unanswered either.
 */
export async function checkedFields(
  ctx: SlackContext,
  command: SlackCommandMiddlewareArgs['command'],
  ack: SlackCommandMiddlewareArgs['ack'],
): Promise<CommandFields | undefined> {
  const fields = commandFields(command as unknown as Record<string, unknown>);
  if (fields) return fields;
  ctx.log.warn({ command: command.command }, 'slash command without user_id or channel_id');
  await ack({ response_type: 'ephemeral', text: escapeMrkdwn(slackMessages.internalError) });
  return undefined;
}
