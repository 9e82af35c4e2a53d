import { gpu } from '../../../commands/gpu.js';
import { messages } from '../../../messages.js';
import { requesterOf, type DiscordButton } from '../context.js';
import { acknowledge, clip, NO_MENTIONS } from '../reply.js';

/**
 * The buttons of the /gpu kill question (an ephemeral message, only the admin who
 * asked sees it). Confirm stops the server (the admin check runs again: ADMIN_IDS
 * may have changed since the question); Keep leaves everything as it is. Either way
 * the question is replaced by the answer, without buttons.
 */
export const gpuKillButton: DiscordButton<'gpu-kill'> = {
  action: 'gpu-kill',
  async execute(interaction, { choice }, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, button: 'gpu-kill', choice });
    if (choice === 'keep') {
      log.info({ userId: interaction.user.id }, '/gpu kill not confirmed');
      await interaction.update({ content: messages.gpuKillAborted, components: [], allowedMentions: NO_MENTIONS });
      return;
    }
    // Stopping talks to Fair and may take longer than the 3 s Discord allows.
    if ((await acknowledge(interaction, 'update', log, ctx.report)) === 'lost') return;
    const result = await gpu({ requester: requesterOf(interaction), subcommand: 'kill', confirmed: true }, ctx.services);
    log.info({ userId: interaction.user.id, ok: result.ok }, '/gpu kill confirmed');
    try {
      await interaction.editReply({ content: clip(result.message), components: [], allowedMentions: NO_MENTIONS });
    } catch (error) {
      log.error({ ...ctx.report(error) }, 'could not show the /gpu kill answer');
    }
  },
};
