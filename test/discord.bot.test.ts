/**
 * The Discord adapter's own timing options, with startDiscordBot called directly on
 * the real core services (startApp uses the defaults: 2 s between progress edits,
 * 15 min of token life). Here the bot's clock says the token has run out, so it must
 * go to the channel by itself, without first being refused by Discord.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startDiscordBot, type DiscordBot } from '../src/bots/discord/index.js';
import { discordMessages } from '../src/messages.js';
import { snowflake, startDiscordStandin, type DiscordStandin } from './standins/discord.js';
import { pngForPrompt } from './standins/png.js';
import { startCoreRig, type CoreRig } from './helpers/app.js';
import { scanDiscord } from './helpers/discordApp.js';
import { loadConfig } from '../src/config.js';

let discord: DiscordStandin | undefined;
let core: CoreRig | undefined;
let bot: DiscordBot | undefined;
afterEach(async () => {
  await bot?.stop();
  if (discord) scanDiscord(discord);
  await discord?.close();
  await core?.close();
  bot = discord = core = undefined;
});

async function start(opts: { coldStartMs: number; env?: Record<string, string> }) {
  discord = await startDiscordStandin();
  core = await startCoreRig({ fair: { coldStartMs: opts.coldStartMs }, env: { ...opts.env } });
  const config = loadConfig({ ...core.env, DISCORD_TOKEN: discord.token, DISCORD_API_URL: discord.apiUrl, DISCORD_GUILD_ID: discord.guildId });
  bot = await startDiscordBot({ ...core.services, config }, { tokenLifetimeMs: 1_000, progressIntervalMs: 200 });
  return { discord, core };
}

const dana = { userId: snowflake(Date.now() - 5e9), userName: 'dana' };

describe('Discord adapter timing', () => {
  it('stops editing when its clock says the token is gone and posts the image in the channel without a refused attempt', async () => {
    const { discord } = await start({ coldStartMs: 1_800 });
    const { id } = discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'a paper boat' }, ...dana });
    const post = await discord.waitFor(() => discord.channelPosts().find((m) => m.attachments.length > 0), 15_000, 'the image in the channel');
    expect(Buffer.compare(post.attachments[0]!.bytes, pngForPrompt('a paper boat'))).toBe(0);
    expect(post.mentions.users).toEqual([dana.userId]);

    const edits = discord.webhookMessages.filter((w) => w.interactionId === id);
    expect(edits.length).toBeGreaterThan(0); // progress while the token lived...
    expect(edits.every((e) => e.status === 200)).toBe(true); // ...and no attempt after it was gone
    const callback = discord.callbacks.find((c) => c.interactionId === id)!;
    expect(edits.every((e) => e.at - callback.at < 1_000)).toBe(true);
    for (let i = 1; i < edits.length; i++) expect(edits[i]!.at - edits[i - 1]!.at).toBeGreaterThanOrEqual(190);
  });

  it('tells the user in the channel, mentioning them, when their job fails after the token is gone', async () => {
    const { discord, core } = await start({ coldStartMs: 50, env: { INFER_TIMEOUT_S: '1' } });
    const warm = discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'warm up' }, ...dana });
    await discord.waitFor(() => discord.originalMessage(warm.id)?.attachments.length, 10_000, 'the first image');
    (await core.fair.waitForDiffusion()).setFault('hang', { times: 1 });

    discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'never finishes' }, ...dana });
    const notice = await discord.waitFor(() => discord.channelPosts()[0], 10_000, 'the failure in the channel');
    expect(notice.content.startsWith(discordMessages.lateNotice(`<@${dana.userId}>`, 'Image generation failed'))).toBe(true);
    expect(notice.mentions).toEqual({ users: [dana.userId], roles: [], everyone: false });
    expect(notice.attachments).toHaveLength(0);
  });
});
