import { Routes, type REST } from 'discord.js';
import type { Logger } from 'pino';
import { ConfigError, type Config } from '../../config.js';
import { commandDefinitions } from './definitions.js';
import { createRest } from './rest.js';

export interface CommandScope {
  applicationId: string;
  /** Guild-scoped (appear at once in that guild) when set, else global. */
  guildId?: string;
}

export interface SyncResult {
  changed: boolean;
  scope: 'guild' | 'global';
  names: string[];
}

type Json = Record<string, unknown>;

/** The fields we define, with Discord's defaults filled in, so our JSON and Discord's echo compare equal. */
function normalizeOption(o: Json): Json {
  return {
    type: o.type,
    name: o.name,
    description: o.description ?? '',
    required: o.required ?? false,
    min_length: o.min_length ?? null,
    max_length: o.max_length ?? null,
    choices: o.choices ?? null,
    options: Array.isArray(o.options) ? (o.options as Json[]).map(normalizeOption) : [],
  };
}

function normalizeCommand(c: Json): Json {
  const sorted = (v: unknown) => (Array.isArray(v) ? [...(v as number[])].sort() : null);
  return {
    name: c.name,
    type: c.type ?? 1,
    description: c.description ?? '',
    default_member_permissions: c.default_member_permissions ?? null,
    contexts: sorted(c.contexts),
    integration_types: sorted(c.integration_types) ?? [0],
    nsfw: c.nsfw ?? false,
    options: Array.isArray(c.options) ? (c.options as Json[]).map(normalizeOption) : [],
  };
}

function fingerprint(commands: Json[]): string {
  return JSON.stringify(commands.map(normalizeCommand).sort((a, b) => String(a.name).localeCompare(String(b.name))));
}

/** True when Discord's registered commands differ from ours in anything we define. */
function definitionsDiffer(registered: unknown): boolean {
  if (!Array.isArray(registered)) return true;
  return fingerprint(registered as Json[]) !== fingerprint(commandDefinitions as unknown as Json[]);
}

function route(scope: CommandScope): `/${string}` {
  return scope.guildId ? Routes.applicationGuildCommands(scope.applicationId, scope.guildId) : Routes.applicationCommands(scope.applicationId);
}

/** PUTs the definitions (replacing whatever was registered in that scope). */
async function putCommands(rest: REST, scope: CommandScope): Promise<SyncResult> {
  await rest.put(route(scope), { body: commandDefinitions });
  return { changed: true, scope: scope.guildId ? 'guild' : 'global', names: commandDefinitions.map((c) => c.name) };
}

/** Registers the commands only when what Discord has differs from the definitions. */
export async function syncCommands(rest: REST, scope: CommandScope, logger?: Logger): Promise<SyncResult> {
  const registered = await rest.get(route(scope));
  if (!definitionsDiffer(registered)) {
    logger?.debug({ scope: scope.guildId ? 'guild' : 'global' }, 'slash commands are up to date');
    return { changed: false, scope: scope.guildId ? 'guild' : 'global', names: commandDefinitions.map((c) => c.name) };
  }
  const result = await putCommands(rest, scope);
  logger?.info({ scope: result.scope, guildId: scope.guildId, commands: result.names }, 'registered slash commands');
  return result;
}

/** The application id: DISCORD_APP_ID, or asked from Discord with the bot token. */
async function resolveApplicationId(rest: REST, config: Pick<Config, 'discordAppId'>): Promise<string> {
  if (config.discordAppId) return config.discordAppId;
  const app = (await rest.get(Routes.currentApplication())) as { id: string };
  return app.id;
}

/**
 * `fairbot register-commands`: registers /imagine and /gpu, guild-scoped when
 * DISCORD_GUILD_ID is set (instant), else global. Returns the line to print.
 */
export async function registerCommands(config: Config): Promise<string> {
  if (!config.discordToken) throw new ConfigError('DISCORD_TOKEN must be set to register the Discord commands');
  const rest = createRest(config.discordApiUrl, config.discordToken);
  try {
    const applicationId = await resolveApplicationId(rest, config);
    const result = await putCommands(rest, { applicationId, guildId: config.discordGuildId });
    const names = result.names.map((n) => `/${n}`).join(' and ');
    return config.discordGuildId
      ? `Registered ${names} in guild ${config.discordGuildId} (application ${applicationId}).`
      : `Registered ${names} globally for application ${applicationId}.`;
  } finally {
    rest.clearHashSweeper();
    rest.clearHandlerSweeper();
  }
}
