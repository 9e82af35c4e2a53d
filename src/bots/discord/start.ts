import { MessageFlags, type ButtonInteraction, type ChatInputCommandInteraction } from 'discord.js';
import type { Logger } from 'pino';
import type { ImagineResult } from '../../commands/imagine.js';
import { discordMessages } from '../../messages.js';
import type { CommandContext } from './context.js';
import { acknowledge, NO_MENTIONS, uploadLimitFor, type DiscordReplyData } from './reply.js';

/**
 * Starts a job the way /imagine does, for a slash command or a Re-roll click:
 * a refusal is answered privately at once; an accepted job is deferred at once
 * (a public "thinking…" reply: for a click, a new message under the image) and
 * handed to the follower, which edits that reply as the job moves and delivers
 * its one final outcome there (or in the channel after 15 minutes). While the database
 * is locked by another process, the reply is deferred first and then shows the outcome of
 * the wait (the job, or the refusal).
 */
export async function startJob(
  interaction: ChatInputCommandInteraction | ButtonInteraction,
  ctx: CommandContext,
  submit: (reply: Record<string, unknown>) => ImagineResult | Promise<ImagineResult>,
  log: Logger,
): Promise<void> {
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
  // Synchronous (validation and limits only), so it costs nothing against the 3 s deadline;
  // a promise only while another process holds the database's lock: Discord hears first then.
  const submitted = submit({ ...reply });
  if (!(submitted instanceof Promise) && !submitted.ok) {
    await interaction.reply({ content: submitted.message, flags: MessageFlags.Ephemeral, allowedMentions: NO_MENTIONS });
    return;
  }
  const deferred = await acknowledge(interaction, 'public', log, ctx.report);
  const result = await submitted;
  if (!result.ok) {
    // Refused after the wait (the database stayed locked): the deferred reply says so.
    if (deferred === 'lost') return;
    await interaction
      .editReply({ content: result.message, allowedMentions: NO_MENTIONS })
      .catch((error: unknown) => log.warn({ ...ctx.report(error) }, 'could not show the refusal'));
    return;
  }
  const { job } = result;
  if (deferred === 'lost') {
    // Discord already told the user it failed; an image nobody waits for would only surprise.
    // (A restart that finds a job never acknowledged does the same: Followers.recover.)
    ctx.services.jobs.cancel(job.id);
    return;
  }
  if (deferred === 'acknowledged') ctx.services.jobs.updateReply(job.id, { acknowledged: true });
  ctx.follow(job);
}
