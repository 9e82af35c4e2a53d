import { reroll } from '../../../commands/reroll.js';
import { requesterOf, type DiscordButton } from '../context.js';
import { startJob } from '../start.js';

/**
 * Re-roll (under every image): the same prompt as a new job for whoever clicked,
 * under the same limits, answered like /imagine in a new reply under the image.
 * The prompt is looked up by the job id the button carries (DATA_DIR after a restart).
 */
export const rerollButton: DiscordButton<'reroll'> = {
  action: 'reroll',
  async execute(interaction, { jobId }, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, button: 'reroll', of: jobId });
    const requester = requesterOf(interaction);
    await startJob(interaction, ctx, (reply) => reroll({ requester, jobId, reply }, ctx.services), log);
  },
};
