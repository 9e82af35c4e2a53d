/**
 * The Discord stand-in, exercised by the real discord.js client over real
 * sockets: login, interactions, the 3-second rule, attachments, reconnects.
 */
import { once } from 'node:events';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AttachmentBuilder,
  ButtonStyle,
  ComponentType,
  DiscordAPIError,
  Events,
  MessageFlags,
  REST,
  Routes,
  type ButtonInteraction,
  type ChatInputCommandInteraction,
  type Client,
} from 'discord.js';
import { buttonsOf, startDiscordStandin, type DiscordStandin } from './standins/discord.js';
import { loginBareClient, nextInteraction } from './helpers/discordClient.js';

let standin: DiscordStandin;
let client: Client | undefined;

beforeEach(async () => {
  standin = await startDiscordStandin({ uploadLimitBytes: 64 * 1024 });
});

afterEach(async () => {
  await client?.destroy();
  client = undefined;
  await standin.close();
});

async function command(input: Parameters<DiscordStandin['dispatchInteraction']>[0]) {
  const arrived = nextInteraction(client!);
  const dispatched = standin.dispatchInteraction(input);
  const interaction = (await arrived) as ChatInputCommandInteraction;
  return { dispatched, interaction };
}

describe('Discord stand-in with the real discord.js client', () => {
  it('logs in over the gateway discovered through GET /v10/gateway/bot and sees the guild and channel', async () => {
    client = await loginBareClient(standin);
    expect(client.user?.id).toBe(standin.applicationId);
    expect(client.application?.id).toBe(standin.applicationId);
    const guild = client.guilds.cache.get(standin.guildId);
    expect(guild?.available).toBe(true);
    expect(guild?.channels.cache.get(standin.channelId)?.isTextBased()).toBe(true);
    expect(standin.requests.some((r) => r.path === '/api/v10/gateway/bot' && r.status === 200)).toBe(true);
    expect(standin.gatewayLog.filter((g) => g.kind === 'identify')).toHaveLength(1);
  });

  it('delivers a chat-input command that discord.js parses (options, subcommands, member)', async () => {
    client = await loginBareClient(standin);
    const { interaction } = await command({ name: 'imagine', options: { prompt: 'a red fox' }, userId: '123456789012345678', userName: 'alice' });
    expect(interaction.isChatInputCommand()).toBe(true);
    expect(interaction.commandName).toBe('imagine');
    expect(interaction.options.getString('prompt', true)).toBe('a red fox');
    expect(interaction.user.id).toBe('123456789012345678');
    expect(interaction.channelId).toBe(standin.channelId);
    expect(interaction.inCachedGuild()).toBe(true);
    expect(interaction.attachmentSizeLimit).toBe(64 * 1024);
    await interaction.reply({ content: 'ok' });

    const { interaction: gpu } = await command({ name: 'gpu', subcommand: 'status' });
    expect(gpu.options.getSubcommand()).toBe('status');
    await gpu.reply({ content: 'fine', flags: MessageFlags.Ephemeral });
    expect(standin.originalMessage(gpu.id)?.ephemeral).toBe(true);
  });

  it('records deferReply then editReply with an attachment, bytes exact, mentions computed', async () => {
    client = await loginBareClient(standin);
    const { dispatched, interaction } = await command({ name: 'imagine', options: { prompt: 'x' } });
    await interaction.deferReply();
    expect(standin.originalMessage(dispatched.id)?.loading).toBe(true);
    const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 37 + 11) & 0xff));
    bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 0);
    await interaction.editReply({
      content: '<@111111111111111111> @everyone look',
      files: [new AttachmentBuilder(bytes, { name: 'image.png' })],
      allowedMentions: { parse: [] },
    });
    const msg = standin.originalMessage(dispatched.id)!;
    expect(msg.loading).toBe(false);
    expect(msg.attachments).toHaveLength(1);
    expect(msg.attachments[0]!.filename).toBe('image.png');
    expect(Buffer.compare(msg.attachments[0]!.bytes, bytes)).toBe(0);
    expect(msg.mentions).toEqual({ users: [], roles: [], everyone: false });
    const cb = standin.callbacks.find((c) => c.interactionId === dispatched.id)!;
    expect(cb.type).toBe(5);
    expect(cb.status).toBe(204);
    expect(standin.webhookMessages.at(-1)?.files[0]?.field).toBe('files[0]');

    // Editing only the text keeps the attachment, as on Discord.
    await interaction.editReply({ content: 'still here' });
    expect(standin.originalMessage(dispatched.id)!.attachments).toHaveLength(1);
  });

  it('refuses a late callback with 10062 and a second one with 40060', async () => {
    client = await loginBareClient(standin);
    const late = await command({ name: 'imagine', options: { prompt: 'late' } });
    // Past the 3 s deadline even when the callback arrives in the same millisecond as the dispatch.
    standin.ageInteraction(late.dispatched.id, 3001);
    const err = await late.interaction.deferReply().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DiscordAPIError);
    expect((err as DiscordAPIError).code).toBe(10062);
    expect((err as DiscordAPIError).status).toBe(404);

    const twice = await command({ name: 'imagine', options: { prompt: 'twice' } });
    await twice.interaction.deferReply();
    // discord.js guards against double replies itself; hit the route directly as a second process would.
    const rest = new REST({ api: standin.apiUrl });
    const err2 = await rest
      .post(Routes.interactionCallback(twice.dispatched.id, twice.dispatched.token), { body: { type: 5 }, auth: false })
      .catch((e: unknown) => e);
    expect((err2 as DiscordAPIError).code).toBe(40060);
  });

  it('refuses webhook calls once the interaction token expired (50027) and oversized attachments (40005)', async () => {
    client = await loginBareClient(standin);
    const { interaction } = await command({ name: 'imagine', options: { prompt: 'big' } });
    await interaction.deferReply();
    const big = Buffer.alloc(64 * 1024 + 1, 7);
    const tooBig = await interaction.editReply({ files: [new AttachmentBuilder(big, { name: 'big.png' })] }).catch((e: unknown) => e);
    expect((tooBig as DiscordAPIError).code).toBe(40005);
    expect((tooBig as DiscordAPIError).status).toBe(413);

    standin.ageInteraction(interaction.id, 15 * 60_000);
    const expired = await interaction.editReply({ content: 'too late' }).catch((e: unknown) => e);
    expect((expired as DiscordAPIError).code).toBe(50027);

    // The bot token still posts to the channel.
    const channel = client.channels.cache.get(standin.channelId);
    if (!channel?.isSendable()) throw new Error('channel not sendable');
    await channel.send({ content: `<@${interaction.user.id}> done`, allowedMentions: { users: [interaction.user.id] } });
    const post = standin.channelPosts().at(-1)!;
    expect(post.content).toBe(`<@${interaction.user.id}> done`);
    expect(post.mentions.users).toEqual([interaction.user.id]);
  });

  it('keeps buttons and embeds on messages and dispatches clicks on them as component interactions discord.js parses', async () => {
    client = await loginBareClient(standin);
    const alice = '123456789012345678';
    const { dispatched, interaction } = await command({ name: 'imagine', options: { prompt: 'x' }, userId: alice });
    const row = { type: ComponentType.ActionRow, components: [{ type: ComponentType.Button, custom_id: 'app:go:1', label: 'Go', style: ButtonStyle.Primary }] };
    await interaction.reply({ content: 'pick', components: [row as never], embeds: [{ title: 'T', fields: [{ name: 'a', value: 'b' }] }] });
    const msg = standin.originalMessage(dispatched.id)!;
    expect(buttonsOf(msg)).toEqual([{ customId: 'app:go:1', label: 'Go', style: 1, disabled: false, url: undefined }]);
    expect(msg.embeds).toEqual([{ title: 'T', fields: [{ name: 'a', value: 'b' }] }]);

    // A click: type 3 with the message, answered by UPDATE_MESSAGE (7).
    const arrived = nextInteraction(client);
    const clickDispatched = standin.dispatchInteraction({ type: 'component', customId: 'app:go:1', messageId: msg.id, userId: '223456789012345678' });
    const clickInteraction = (await arrived) as ButtonInteraction;
    expect(clickInteraction.isButton()).toBe(true);
    expect(clickInteraction.customId).toBe('app:go:1');
    expect(clickInteraction.message.id).toBe(msg.id);
    expect(clickInteraction.message.components).toHaveLength(1);
    expect(clickInteraction.user.id).toBe('223456789012345678');
    await clickInteraction.update({ content: 'done', components: [] });
    expect(standin.messages.get(msg.id)!.content).toBe('done');
    expect(standin.messages.get(msg.id)!.components).toEqual([]);
    expect(standin.messages.get(msg.id)!.embeds).toHaveLength(1); // not sent: kept
    expect(standin.originalMessage(clickDispatched.id)!.id).toBe(msg.id);

    // A button that is not (or no longer) on the message cannot be clicked.
    expect(() => standin.dispatchInteraction({ type: 'component', customId: 'app:go:1', messageId: msg.id })).toThrow(/no component/);
  });

  it('edits the clicked message through @original after a deferred update (6), and lets only its owner click an ephemeral message', async () => {
    client = await loginBareClient(standin);
    const owner = '323456789012345678';
    const { dispatched, interaction } = await command({ name: 'gpu', subcommand: 'kill', userId: owner });
    await interaction.deferReply({ flags: MessageFlags.Ephemeral });
    const row = { type: ComponentType.ActionRow, components: [{ type: ComponentType.Button, custom_id: 'yes', label: 'Yes', style: ButtonStyle.Danger }] };
    await interaction.editReply({ content: 'sure?', components: [row as never] });
    const msg = standin.originalMessage(dispatched.id)!;
    expect(msg.ephemeral).toBe(true);
    expect(() => standin.dispatchInteraction({ type: 'component', customId: 'yes', messageId: msg.id, userId: '423456789012345678' })).toThrow(/cannot see/);

    const arrived = nextInteraction(client);
    standin.dispatchInteraction({ type: 'component', customId: 'yes', messageId: msg.id, userId: owner });
    const clickInteraction = (await arrived) as ButtonInteraction;
    await clickInteraction.deferUpdate();
    await clickInteraction.editReply({ content: 'stopped', components: [] });
    expect(standin.messages.get(msg.id)!.content).toBe('stopped');
    expect(standin.messages.get(msg.id)!.components).toEqual([]);
  });

  it('refuses components and embeds Discord would refuse (50035)', async () => {
    client = await loginBareClient(standin);
    const { interaction } = await command({ name: 'imagine', options: { prompt: 'x' } });
    await interaction.deferReply();
    const button = (id: string) => ({ type: ComponentType.Button, custom_id: id, label: 'x', style: ButtonStyle.Secondary });
    const bad: unknown[] = [
      { components: [{ type: ComponentType.ActionRow, components: [button('same'), button('same')] }] },
      { components: [{ type: ComponentType.ActionRow, components: [button('x'.repeat(101))] }] },
      { components: [button('not-in-a-row')] },
      { embeds: [{ fields: [{ name: 'empty value', value: '' }] }] },
      { embeds: [{ fields: [{ name: 'n', value: 'v'.repeat(1025) }] }] },
    ];
    for (const body of bad) {
      const err = await interaction.editReply(body as never).catch((e: unknown) => e);
      expect(err, JSON.stringify(body).slice(0, 80)).toBeInstanceOf(DiscordAPIError);
      expect((err as DiscordAPIError).code).toBe(50035);
    }
  });

  it('checks the bot token on bot routes', async () => {
    const rest = new REST({ api: standin.apiUrl }).setToken('wrong');
    const err = await rest.get(Routes.gatewayBot()).catch((e: unknown) => e);
    expect((err as DiscordAPIError).status).toBe(401);
  });

  it('records command registration (global and guild) and echoes what GET returns', async () => {
    const rest = new REST({ api: standin.apiUrl }).setToken(standin.token);
    const body = [{ name: 'imagine', description: 'Generate an image', options: [{ type: 3, name: 'prompt', description: 'what', required: true }] }];
    await rest.put(Routes.applicationGuildCommands(standin.applicationId, standin.guildId), { body });
    const got = (await rest.get(Routes.applicationGuildCommands(standin.applicationId, standin.guildId))) as { name: string; id: string }[];
    expect(got.map((c) => c.name)).toEqual(['imagine']);
    expect(standin.commandRegistrations).toMatchObject([{ scope: 'guild', guildId: standin.guildId }]);
    await rest.put(Routes.applicationCommands(standin.applicationId), { body: [] });
    expect(standin.commandRegistrations.at(-1)?.scope).toBe('global');
    const bad = await rest.put(Routes.applicationCommands(standin.applicationId), { body: [{ name: 'Bad Name', description: '' }] }).catch((e: unknown) => e);
    expect((bad as DiscordAPIError).code).toBe(50035);
  });

  it('resumes after dropGateway and replays an interaction dispatched while disconnected', async () => {
    client = await loginBareClient(standin);
    const reconnecting = once(client, Events.ShardReconnecting, { signal: AbortSignal.timeout(5000) });
    standin.dropGateway();
    await reconnecting;
    const arrived = nextInteraction(client, 5000);
    // Dispatched while the bot is away: buffered in the session, replayed on RESUME.
    const dispatched = standin.dispatchInteraction({ name: 'imagine', options: { prompt: 'during outage' } });
    const interaction = (await arrived) as ChatInputCommandInteraction;
    expect(interaction.id).toBe(dispatched.id);
    expect(standin.gatewayLog.filter((g) => g.kind === 'resume')).toHaveLength(1);
    expect(standin.gatewayLog.filter((g) => g.kind === 'identify')).toHaveLength(1);
    await interaction.deferReply();
  });

  it('survives a gateway outage (refused connections) and comes back when it is up again', async () => {
    client = await loginBareClient(standin);
    standin.setGatewayDown(true);
    await standin.waitFor(() => standin.gatewayLog.some((g) => g.kind === 'refused'), 5000, 'a refused reconnect');
    expect(standin.liveSessions()).toBe(0);
    standin.setGatewayDown(false);
    await standin.waitFor(() => standin.liveSessions() === 1, 5000, 'the bot to be back');
    const { interaction } = await command({ name: 'imagine', options: { prompt: 'back' } });
    await interaction.deferReply();
  });
});
