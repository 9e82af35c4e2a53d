import { gpu } from '../../../commands/gpu.js';
import { killConfirmRow } from '../components.js';
import { requesterOf, type DiscordCommand } from '../context.js';
import { gpuDefinition } from '../definitions.js';
import { acknowledge, clip, NO_MENTIONS } from '../reply.js';
import { statusEmbed } from '../status.js';

/**
 * /gpu status | kill: answered ephemerally; the admin check (ADMIN_IDS) is the command's own.
 * Status is an embed; a kill that would end jobs asks first, with Confirm / Keep buttons
 * (src/bots/discord/buttons/gpuKill.ts).
 */
export const gpuCommand: DiscordCommand = {
  data: gpuDefinition,
  async execute(interaction, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, command: 'gpu' });
    // A kill talks to Fair and may take longer than the 3 s Discord allows: defer first.
    if ((await acknowledge(interaction, 'ephemeral', log, ctx.report)) === 'lost') return;
    const subcommand = interaction.options.getSubcommand(false) ?? '';
    const result = await gpu({ requester: requesterOf(interaction), subcommand }, ctx.services);
    log.info({ userId: interaction.user.id, subcommand, ok: result.ok, needsConfirmation: result.needsConfirmation }, '/gpu answered');
    const answer = result.needsConfirmation
      ? { content: clip(result.message), components: killConfirmRow() }
      : subcommand === 'status' && result.ok && result.status
        ? { embeds: [statusEmbed(result.status, ctx.services.config)] }
        : { content: clip(result.message) };
    try {
      await interaction.editReply({ ...answer, allowedMentions: NO_MENTIONS });
    } catch (error) {
      // Admin output is private: never fall back to a public channel post.
      log.error({ ...ctx.report(error) }, 'could not show the /gpu answer');
    }
  },
};
