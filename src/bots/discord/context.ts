import type { ButtonInteraction, ChatInputCommandInteraction, Client, RepliableInteraction, RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';
import type { Logger } from 'pino';
import type { Job } from '../../jobs/job.js';
import type { Requester } from '../../jobs/types.js';
import type { Services } from '../../services.js';
import type { ButtonAction } from './components.js';
import type { ApiErrorReporter } from './reply.js';

/** What a command or button handler gets besides the interaction. */
export interface CommandContext {
  services: Services;
  client: Client;
  logger: Logger;
  /** Hands an accepted job to the follower: progress, then its one final outcome. */
  follow(job: Job): void;
  /** Where a Discord API call failed: counts it for /metrics, returns the log fields. */
  report: ApiErrorReporter;
}

/** One slash command: its registration JSON and its handler (the discord.js guide's command-file shape). */
export interface DiscordCommand {
  data: RESTPostAPIChatInputApplicationCommandsJSONBody;
  execute(interaction: ChatInputCommandInteraction, ctx: CommandContext): Promise<void>;
}

/** One kind of button (`fairbot:<action>:…`) and its click handler. */
export interface DiscordButton<A extends ButtonAction['action'] = ButtonAction['action']> {
  action: A;
  execute(interaction: ButtonInteraction, args: Extract<ButtonAction, { action: A }>, ctx: CommandContext): Promise<void>;
}

/** Who asked (or clicked), in the platform-neutral form the commands take. */
export function requesterOf(interaction: RepliableInteraction): Requester {
  const member = interaction.inCachedGuild() ? interaction.member : undefined;
  return {
    platform: 'discord',
    userId: interaction.user.id,
    userName: member?.displayName ?? interaction.user.displayName,
    channelId: interaction.channelId ?? undefined,
  };
}
