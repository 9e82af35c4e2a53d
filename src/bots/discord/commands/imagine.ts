import { MessageFlags } from 'discord.js';
import { imagine } from '../../../commands/imagine.js';
import { discordMessages } from '../../../messages.js';
import { requesterOf, type DiscordCommand } from '../context.js';
import { imagineDefinition } from '../definitions.js';
import { acknowledge, NO_MENTIONS, uploadLimitFor, type DiscordReplyData } from '../reply.js';

/**
 * /imagine prompt:<text>. A refusal is answered privately at once; an accepted
 * job is deferred at once and handed to the follower (src/bots/discord/follow.ts),
 * which edits the reply as the job moves and delivers its one final outcome.
 */
export const imagineCommand: DiscordCommand = {
  data: imagineDefinition,
  async execute(interaction, ctx) {
    const log = ctx.logger.child({ interactionId: interaction.id, command: 'imagine' });
    if (!interaction.inGuild() || !interaction.channelId) {
      await interaction.reply({ content: discordMessages.guildOnly, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS });
      return;
    }
    // Everything a restarted bot needs to answer, stored with the job (the token lasts 15 min).
    const reply: DiscordReplyData = {
      applicationId: interaction.applicationId,
      interactionId: interaction.id,
      interactionToken: interaction.token,
      interactionAt: Date.now(),
      acknowledged: false,
      channelId: interaction.channelId,
      guildId: interaction.guildId,
      attachmentSizeLimit: uploadLimitFor(interaction),
    };
    // Synchronous (validation and limits only), so it costs nothing against the 3 s deadline.
    const result = imagine(
      { requester: requesterOf(interaction), prompt: interaction.options.getString('prompt') ?? '', reply: { ...reply } },
      ctx.services,
    );
    if (!result.ok) {
      await interaction.reply({ content: result.message, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS });
      return;
    }
    const { job } = result;
    const deferred = await acknowledge(interaction, false, log.child({ jobId: job.id }));
    if (deferred === 'lost') {
      // Discord already told the user the command failed; an image nobody waits for would only surprise.
      ctx.services.jobs.cancel(job.id);
      return;
    }
    if (deferred === 'acknowledged') ctx.services.jobs.updateReply(job.id, { acknowledged: true });
    ctx.follow(job);
  },
};
