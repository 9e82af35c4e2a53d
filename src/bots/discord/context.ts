import type { ChatInputCommandInteraction, Client, RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';
import type { Logger } from 'pino';
import type { Job } from '../../jobs/job.js';
import type { Requester } from '../../jobs/types.js';
import type { Services } from '../../services.js';

/** What a command handler gets besides the interaction. */
export interface CommandContext {
  services: Services;
  client: Client;
  logger: Logger;
  /** Hands an accepted job to the follower: progress, then its one final outcome. */
  follow(job: Job): void;
}

/** One slash command: its registration JSON and its handler (the discord.js guide's command-file shape). */
export interface DiscordCommand {
  data: RESTPostAPIChatInputApplicationCommandsJSONBody;
  execute(interaction: ChatInputCommandInteraction, ctx: CommandContext): Promise<void>;
}

/** Who asked, in the platform-neutral form the commands take. */
export function requesterOf(interaction: ChatInputCommandInteraction): Requester {
  const member = interaction.inCachedGuild() ? interaction.member : undefined;
  return {
    platform: 'discord',
    userId: interaction.user.id,
    userName: member?.displayName ?? interaction.user.displayName,
    channelId: interaction.channelId,
  };
}
