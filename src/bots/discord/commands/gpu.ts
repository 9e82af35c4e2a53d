import { gpu } from '../../../commands/gpu.js';
import { requesterOf, type DiscordCommand } from '../context.js';
import { gpuDefinition } from '../definitions.js';
import { acknowledge, clip, errorFields, NO_MENTIONS } from '../reply.js';

/** /gpu status | kill: answered ephemerally; the admin check (ADMIN_IDS) is the command's own. */
export const gpuCommand: DiscordCommand = {
  data: gpuDefinition,
  async execute(interaction, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, command: 'gpu' });
    // A kill talks to Fair and may take longer than the 3 s Discord allows: defer first.
    if ((await acknowledge(interaction, true, log)) === 'lost') return;
    const subcommand = interaction.options.getSubcommand(false) ?? '';
    const result = await gpu({ requester: requesterOf(interaction), subcommand }, ctx.services);
    log.info({ userId: interaction.user.id, subcommand, ok: result.ok }, '/gpu answered');
    try {
      await interaction.editReply({ content: clip(result.message), allowedMentions: NO_MENTIONS });
    } catch (error) {
      // Admin output is private: never fall back to a public channel post.
      log.error({ ...errorFields(error) }, 'could not show the /gpu answer');
    }
  },
};
