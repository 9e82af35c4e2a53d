import { MessageFlags } from 'discord.js';
import { cancel } from '../../../commands/cancel.js';
import { messages } from '../../../messages.js';
import { requesterOf, type DiscordButton } from '../context.js';
import { NO_MENTIONS } from '../reply.js';

/**
 * Cancel (on the progress message while the job waits or runs): its owner or an
 * admin only; anyone else, or a click after the job ended, is answered privately.
 * A cancel updates the clicked message at once (the click's own token works even
 * when the job's 15 minutes are over): the cancellation, no buttons. The follower
 * writes the same final state through the job's own reply.
 */
export const cancelButton: DiscordButton<'cancel'> = {
  action: 'cancel',
  async execute(interaction, { jobId }, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, button: 'cancel', jobId });
    const result = cancel({ requester: requesterOf(interaction), jobId }, ctx.services);
    if (!result.ok) {
      log.info({ userId: interaction.user.id }, 'cancel refused');
      await interaction.reply({ content: result.message, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS });
      return;
    }
    await interaction.update({ content: messages.cancelled, components: [], allowedMentions: NO_MENTIONS });
  },
};
