import { imagineOrWait } from '../../../commands/imagine.js';
import { requesterOf, type DiscordCommand } from '../context.js';
import { imagineDefinition } from '../definitions.js';
import { startJob } from '../start.js';

/**
 * /imagine prompt:<text>. A refusal is answered privately at once; an accepted
 * job is deferred at once and handed to the follower (src/bots/discord/follow.ts),
 * which edits the reply as the job moves and delivers its one final outcome.
 */
export const imagineCommand: DiscordCommand = {
  data: imagineDefinition,
  async execute(interaction, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, command: 'imagine' });
    const requester = requesterOf(interaction);
    const prompt = interaction.options.getString('prompt') ?? '';
    await startJob(interaction, ctx, (reply) => imagineOrWait({ requester, prompt, reply }, ctx.services), log);
  },
};
