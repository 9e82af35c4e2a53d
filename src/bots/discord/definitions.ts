import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  ApplicationIntegrationType,
  InteractionContextType,
  PermissionFlagsBits,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import { MAX_PROMPT_LENGTH } from '../../commands/prompt.js';

/**
 * The slash commands as Discord stores them. `fairbot register-commands` PUTs
 * exactly this list; the bot compares it with what Discord has at start and
 * registers again only when they differ.
 */

export const imagineDefinition: RESTPostAPIChatInputApplicationCommandsJSONBody = {
  type: ApplicationCommandType.ChatInput,
  name: 'imagine',
  description: 'Generate an image with Stable Diffusion on our own GPU',
  // Server channels only: the image is posted where the command was run.
  contexts: [InteractionContextType.Guild],
  integration_types: [ApplicationIntegrationType.GuildInstall],
  options: [
    {
      type: ApplicationCommandOptionType.String,
      name: 'prompt',
      description: 'What the image should show',
      required: true,
      min_length: 1,
      max_length: MAX_PROMPT_LENGTH,
    },
  ],
};

export const gpuDefinition: RESTPostAPIChatInputApplicationCommandsJSONBody = {
  type: ApplicationCommandType.ChatInput,
  name: 'gpu',
  description: 'Admins: the GPU server that generates the images',
  // Hidden from members without Administrator; ADMIN_IDS is checked again at run time.
  default_member_permissions: PermissionFlagsBits.Administrator.toString(),
  contexts: [InteractionContextType.Guild],
  integration_types: [ApplicationIntegrationType.GuildInstall],
  options: [
    { type: ApplicationCommandOptionType.Subcommand, name: 'status', description: 'Show the GPU server, the queue and timings' },
    { type: ApplicationCommandOptionType.Subcommand, name: 'kill', description: 'Stop the GPU server now (ends the jobs waiting)' },
  ],
};

export const commandDefinitions: RESTPostAPIChatInputApplicationCommandsJSONBody[] = [imagineDefinition, gpuDefinition];
