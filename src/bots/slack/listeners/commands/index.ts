import type { App } from '@slack/bolt';
import { slackMessages } from '../../../../messages.js';
import type { SlackContext } from '../../context.js';
import { escapeMrkdwn } from '../../text.js';
import { gpuCommand } from './gpu.js';
import { imagineCommand } from './imagine.js';

/** The command names are a contract (/imagine and /gpu, in the README and slack/manifest.yml): the same on Discord and Slack. */
const COMMANDS = { imagine: '/imagine', gpu: '/gpu' } as const;

export function registerCommands(app: App, ctx: SlackContext): void {
  app.command(COMMANDS.imagine, imagineCommand(ctx));
  app.command(COMMANDS.gpu, gpuCommand(ctx));
  // A command routed here that we do not know (e.g. a manifest renamed it): say so, do not time out.
  app.command(/^\/(?!(?:imagine|gpu)$)/, async ({ command, ack }) => {
    ctx.log.warn({ command: command.command }, 'unknown slash command');
    await ack({ response_type: 'ephemeral', text: escapeMrkdwn(slackMessages.unknownCommand(command.command)) });
  });
}
