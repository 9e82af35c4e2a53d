/**
 * Who asked, in an image's caption, is never the requester's own text rendered as markup
 * (issue 17, item 10). A display name is whatever the user typed: on Discord, a late channel
 * post (after the 15-minute interaction token) names them by mention, as the reply does; on
 * Slack the caption is rich text with a user element.
 */
import { describe, expect, it } from 'vitest';
import { discordMessages } from '../src/messages.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { imagine, startDiscordRig, users } from './helpers/discordApp.js';
import { captionOf, startSlackRig } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();
const HOSTILE_NAME = '@everyone **PWNED** <@&123456789012345678> [link](https://evil.example)';

describe('a hostile display name in the caption', () => {
  it('Discord: the late channel post names the requester by mention, not by display name', async () => {
    const rig = await cleanup.closing(startDiscordRig({ fair: { coldStartMs: 1_000 } }));
    const requester = { userId: users.carol.userId, userName: HOSTILE_NAME };
    const prompt = 'a quiet harbour';
    const { id } = imagine(rig, prompt, requester);
    await rig.discord.waitFor(() => rig.discord.callbacks.find((c) => c.interactionId === id), 5_000, 'the acknowledgement');
    rig.discord.ageInteraction(id, 15 * 60_000);

    const post = await rig.discord.waitFor(() => rig.discord.channelPosts().find((m) => m.attachments.length > 0), 15_000, 'the late image');
    expect(post.attachments[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    const mention = `<@${requester.userId}>`;
    expect(post.content).toBe(discordMessages.lateImage(mention, `"${prompt}" (asked by ${mention})`));
    expect(post.content).not.toContain('PWNED');
    expect(post.content).not.toContain('evil.example');
    expect(post.mentions).toEqual({ users: [requester.userId], roles: [], everyone: false });
  });

  it('Slack: the caption names the requester with a user element; their user_name is not shown', async () => {
    const rig = await cleanup.closing(startSlackRig({ fair: { coldStartMs: 50 } }));
    const prompt = 'a quiet harbour at night';
    await rig.slack.sendSlashCommand(rig.eventsUrl, { command: '/imagine', text: prompt, user_id: 'U0HOSTILE', user_name: HOSTILE_NAME });
    const [share] = await rig.slack.waitFor(() => rig.slack.channelFiles().length === 1 && rig.slack.channelFiles(), 15_000, 'the image');
    const caption = captionOf(share!);
    expect(caption.text).toBe(`"${prompt}" (asked by @U0HOSTILE)`);
    expect(caption.pings).toEqual(['@U0HOSTILE']);
  });
});
