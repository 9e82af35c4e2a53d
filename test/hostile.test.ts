/**
 * Hostile input (issue 5), through the real adapters: prompts that are empty, huge,
 * invisible, full of control characters or of mentions; forged Slack requests; /gpu
 * from someone who is an admin only on the other platform. Each case asserts what a
 * person would see: the exact refusal, or the cleaned prompt the diffusion server
 * received and a caption that pings nobody.
 *
 * Already covered elsewhere (not repeated here): non-admins on /gpu (test/slack.e2e.test.ts,
 * test/discord.e2e.test.ts "refuses a non-admin", test/lifecycle.test.ts); `<!channel>` and
 * `<@U…>` escaped in a Slack caption (test/slack.e2e.test.ts, first test); `@everyone` and a
 * role in a Discord channel post after the token expired (test/discord.e2e.test.ts); the
 * response parsers fed random bodies (test/parsers.property.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PROMPT_LENGTH } from '../src/commands/prompt.js';
import { messages } from '../src/messages.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { imageInReply, replyReads, startDiscordRig, type DiscordRig } from './helpers/discordApp.js';
import { recordedJobs } from './helpers/faults.js';
import { captionOf, SLACK_ADMIN, startSlackRig, type SlackRig } from './helpers/slack.js';
import { snowflake } from './standins/discord.js';
import { renderSlackMessage, type FileShare } from './standins/slack.js';
import { pngForPrompt } from './standins/png.js';

/**
 * The masked links Discord would render in `content`: `[text](url)` whose `[` is not
 * escaped (an odd run of backslashes before it escapes it).
 */
function maskedLinks(content: string): string[] {
  return [...content.matchAll(/(\\*)\[([^\]]*)\]\(\s*<?https?:\/\/[^)]*\)/g)].filter((m) => m[1]!.length % 2 === 0).map((m) => m[0]);
}

/** Prompts refused before any work, with the exact text the user reads. */
const REFUSED: Array<[what: string, prompt: string, answer: string]> = [
  ['empty', '', messages.promptEmpty],
  ['only whitespace (tabs, newlines, no-break and ideographic spaces)', '\t \n \u00a0\u3000 \r\n', messages.promptEmpty],
  ['only zero-width and bidi characters', '\u200b\u200c\u200d\u200e\u202e\u2066\u2069\ufeff', messages.promptEmpty],
  ['only control characters', '\u0000\u0007\u001b\u007f\u0085', messages.promptEmpty],
  ['10,000 characters', 'x'.repeat(10_000), messages.promptTooLong(10_000, MAX_PROMPT_LENGTH)],
];

/** Prompts accepted once cleaned: what the diffusion server must receive. */
const CLEANED: Array<[what: string, prompt: string, seen: string]> = [
  ['control characters', 'a red\u0000 fox\u0007 in the\u001b[31m snow\u007f\u0085', 'a red fox in the[31m snow'],
  ['line breaks and tabs', 'line one\nline two\r\n\tline three', 'line one line two line three'],
  [
    'zero-width and bidi-override characters',
    'zero\u200bwidth\u200c joiner\u200d and \u202ebidi override\u202c and \u2067isolate\u2069\ufeff',
    'zerowidth joiner and bidi override and isolate',
  ],
  ['10,000 characters that are almost all spaces', `a${' '.repeat(9_998)}b`, 'a b'],
];

/** The image a Slack user asked for, found by the mention of who asked in its caption. */
function shareFor(r: SlackRig, user: string): FileShare | undefined {
  return r.slack.channelFiles().find((share) => captionOf(share).text.endsWith(`(asked by @${user})`));
}

const DONE = messages.progress({ type: 'done', image: { bytes: Buffer.alloc(0), mime: 'image/png', extension: 'png' }, generationMs: 0 });

describe('hostile prompts on Slack', () => {
  let r: SlackRig;
  beforeAll(async () => {
    r = await startSlackRig({ fair: { coldStartMs: 20 } });
  });
  afterAll(async () => {
    await r.close();
  });

  it.each(REFUSED)('refuses a prompt that is %s, in words, before any work', async (_what, prompt, answer) => {
    const jobsBefore = recordedJobs(r.app.services.config.dataDir).length;
    const fairBefore = r.fair.requests.length;
    const user = `U0REF${jobsBefore}${prompt.length}`;
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: user });
    expect(res.status).toBe(200);
    expect(res.text).toBe(escapeMrkdwn(answer));
    expect(r.slack.userView(user).map((m) => m.text)).toEqual([escapeMrkdwn(answer)]);
    expect(recordedJobs(r.app.services.config.dataDir)).toHaveLength(jobsBefore);
    expect(r.fair.requests.length).toBe(fairBefore);
  });

  it.each(CLEANED)('generates from the cleaned prompt when it has %s', async (what, prompt, seen) => {
    const user = `U0CLN${CLEANED.findIndex((c) => c[0] === what)}`;
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: user });
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);
    const share = await r.slack.waitFor(() => shareFor(r, user), 20_000, `the image for ${user}`);
    expect(captionOf(share).text).toBe(`"${seen}" (asked by @${user})`);
    expect(captionOf(share).pings).toEqual([`@${user}`]);
    expect(share.files[0]!.bytes.equals(pngForPrompt(seen))).toBe(true);
    expect(r.fair.diffusion()!.infers.at(-1)!.prompt).toBe(seen);
    expect(recordedJobs(r.app.services.config.dataDir).at(-1)!.prompt).toBe(seen);
    await r.slack.waitFor(() => r.slack.userView(user).at(-1)?.text === DONE, 5_000, 'the done status');
  });

  it('shows mentions, broadcasts and links in a prompt literally, so nobody is pinged', async () => {
    const prompt = '<!channel> <!here> <!everyone> <@U0VICTIM> <!subteam^S0TEAM|@team> <#C0OTHER> <https://evil.example|free gpus> @everyone *bold* & more';
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: 'U0HOST' });
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);
    const share = await r.slack.waitFor(() => shareFor(r, 'U0HOST'), 20_000, 'the image');
    // The server got the prompt as typed; the channel shows it as typed, unformatted.
    expect(r.fair.diffusion()!.infers.at(-1)!.prompt).toBe(prompt);
    const caption = captionOf(share);
    expect(caption.text).toBe(`"${prompt}" (asked by @U0HOST)`);
    expect(caption.pings).toEqual(['@U0HOST']);
    expect(caption.formatted).toEqual([]);
    await r.slack.waitFor(() => r.slack.userView('U0HOST').at(-1)?.text === DONE, 5_000, 'the done status');
    // Nothing else the bot wrote notifies anyone: channel posts, ephemerals, the user's status.
    const written = [...r.slack.posts, ...r.slack.ephemerals, ...r.slack.userView('U0HOST')];
    expect(written.length).toBeGreaterThan(0);
    for (const m of written) expect(renderSlackMessage(m).pings).toEqual([]);
  });
});

describe('hostile prompts on Discord', () => {
  let r: DiscordRig;
  let n = 0;
  const nextUser = () => ({ userId: snowflake(Date.now() - 9e9 + n++ * 1_000), userName: `hostile${n}` });
  beforeAll(async () => {
    r = await startDiscordRig({ fair: { coldStartMs: 20 } });
  });
  afterAll(async () => {
    await r.close();
  });

  it.each(REFUSED)('refuses a prompt that is %s, privately and in words, before any work', async (_what, prompt, answer) => {
    const jobsBefore = recordedJobs(r.dataDir).length;
    const fairBefore = r.fair.requests.length;
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...nextUser() });
    const reply = await replyReads(r, id, answer);
    expect(reply.ephemeral).toBe(true);
    expect(reply.mentions).toEqual({ users: [], roles: [], everyone: false });
    expect(recordedJobs(r.dataDir)).toHaveLength(jobsBefore);
    expect(r.fair.requests.length).toBe(fairBefore);
  });

  it.each(CLEANED)('generates from the cleaned prompt when it has %s', async (_what, prompt, seen) => {
    const user = nextUser();
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...user });
    const reply = await imageInReply(r, id, 20_000);
    // As Discord shows it: without the backslashes that escape markdown (a `[` left by an escape sequence).
    expect(reply.content.replace(/\\(.)/g, '$1')).toBe(`"${seen}" (asked by <@${user.userId}>)`);
    expect(reply.attachments[0]!.bytes.equals(pngForPrompt(seen))).toBe(true);
    expect(reply.mentions).toEqual({ users: [], roles: [], everyone: false });
    expect(r.fair.diffusion()!.infers.at(-1)!.prompt).toBe(seen);
  });

  it('every masked link in a prompt shows as text, not as a link, however many on a line', async () => {
    const user = nextUser();
    const prompt = '[free gpus](https://evil.example) and [more](https://evil2.example) [x](<https://evil3.example>)';
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...user });
    const reply = await imageInReply(r, id, 20_000);
    expect(r.fair.diffusion()!.infers.at(-1)!.prompt).toBe(prompt);
    expect(maskedLinks(reply.content)).toEqual([]);
    // Discord drops the escaping backslashes: the reader sees the prompt as typed.
    expect(reply.content.replace(/\\(.)/g, '$1')).toBe(`"${prompt}" (asked by <@${user.userId}>)`);
  });

  it('a server error full of control characters reaches the user without them', async () => {
    const user = nextUser();
    r.fair.diffusion()!.setFault('500-control', { times: 1 });
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'a crashing server' }, ...user });
    const reply = await r.discord.waitFor(
      () => {
        const m = r.discord.originalMessage(id);
        return m?.content.startsWith('Image generation failed') ? m : undefined;
      },
      20_000,
      'the failure in the reply',
    );
    expect(reply.content).toContain('CUDA error');
    expect(reply.content).toContain('device lost');
    expect(reply.content).not.toMatch(/\p{Cc}/u);
  });

  it('@everyone, @here, a role and a user in the prompt: shown in the reply, nobody pinged', async () => {
    const user = nextUser();
    const victim = snowflake(Date.now() - 5e9);
    const role = snowflake(Date.now() - 4e9);
    const prompt = `@everyone @here <@&${role}> <@${victim}> <@!${victim}> <!channel> a crowd`;
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...user });
    const reply = await imageInReply(r, id, 20_000);
    expect(r.fair.diffusion()!.infers.at(-1)!.prompt).toBe(prompt);
    // The caption shows the words of the prompt (the adapter may defuse them further) and who asked.
    for (const word of ['everyone', 'here', role, victim, 'a crowd']) expect(reply.content).toContain(word);
    expect(reply.content.endsWith(`(asked by <@${user.userId}>)`)).toBe(true);
    // The stand-in works out who Discord would ping from the content and allowed_mentions.
    expect(reply.mentions).toEqual({ users: [], roles: [], everyone: false });
    // Every message and edit the bot sent for this job pinged nobody.
    const sent = r.discord.webhookMessages.filter((w) => w.interactionId === id);
    expect(sent.length).toBeGreaterThan(0);
    expect([...r.discord.messages.values()].every((m) => m.mentions.users.length === 0 && m.mentions.roles.length === 0 && !m.mentions.everyone)).toBe(true);
  });
});

describe('forged Slack requests are refused before any work', () => {
  it('a bad signature, a replay older than 5 minutes, a tampered body and a body too large: no job recorded, no Fair call, no answer', async () => {
    const r = await startSlackRig();
    try {
      const fields = { command: '/imagine', text: 'forged', user_id: 'U0EVE' };
      const badSignature = await r.slack.sendSlashCommand(r.eventsUrl, fields, { badSignature: true });
      const replay = await r.slack.sendSlashCommand(r.eventsUrl, fields, { timestamp: Math.floor(Date.now() / 1000) - 5 * 60 - 30 });
      const tooLarge = await r.slack.sendSlashCommand(r.eventsUrl, { ...fields, text: 'x'.repeat(300 * 1024) });

      // A genuine signature over one body, sent with another (the prompt changed in transit).
      const ts = Math.floor(Date.now() / 1000);
      const signed = new URLSearchParams({
        command: '/imagine',
        text: 'harmless',
        user_id: 'U0EVE',
        channel_id: r.slack.channelId,
        response_url: r.slack.newResponseUrl({ userId: 'U0EVE' }),
      });
      const sent = new URLSearchParams(signed);
      sent.set('text', 'tampered');
      const tampered = await fetch(r.eventsUrl, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'x-slack-request-timestamp': String(ts),
          'x-slack-signature': r.slack.sign(signed.toString(), ts),
        },
        body: sent.toString(),
      });

      expect([badSignature.status, replay.status, tampered.status, tooLarge.status]).toEqual([401, 401, 401, 413]);
      expect(recordedJobs(r.app.services.config.dataDir)).toEqual([]);
      expect(r.fair.requests).toEqual([]);
      expect(r.slack.userView('U0EVE')).toEqual([]);
      expect(r.slack.calls.map((c) => c.method)).toEqual(['auth.test']);
      expect(r.logs.entries().filter((e) => e.msg === 'job queued')).toEqual([]);
    } finally {
      await r.close();
    }
  });
});

describe('an admin id is an admin only on its own platform', () => {
  it('Slack: ADMIN_IDS=discord:U0CROSS does not make Slack user U0CROSS an admin', async () => {
    const r = await startSlackRig({ env: { ADMIN_IDS: `discord:U0CROSS,slack:${SLACK_ADMIN}` } });
    try {
      for (const sub of ['status', 'kill']) {
        const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: sub, user_id: 'U0CROSS' });
        expect(res.text).toBe(messages.adminOnly);
      }
      expect(r.fair.requests).toEqual([]); // refused before anything reached Fair
      // The Slack admin of the same list is one (their status checks that Fair answers).
      const admin = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'status', user_id: SLACK_ADMIN });
      expect(admin.text).toMatch(/^GPU server: stopped/);
      expect(r.fair.killPrograms()).toEqual([]);
    } finally {
      await r.close();
    }
  });

  it('Discord: ADMIN_IDS=slack:<id> does not make the Discord user with that id an admin', async () => {
    const crossId = snowflake(Date.now() - 3e9);
    const realAdmin = snowflake(Date.now() - 2e9);
    const r = await startDiscordRig({ env: { ADMIN_IDS: `slack:${crossId},discord:${realAdmin}` } });
    try {
      for (const subcommand of ['status', 'kill']) {
        const { id } = r.discord.dispatchInteraction({ name: 'gpu', subcommand, userId: crossId, userName: 'cross' });
        const reply = await replyReads(r, id, messages.adminOnly);
        expect(reply.ephemeral).toBe(true);
      }
      expect(r.fair.requests).toEqual([]); // refused before anything reached Fair
      const { id } = r.discord.dispatchInteraction({ name: 'gpu', subcommand: 'status', userId: realAdmin, userName: 'root' });
      const status = await r.discord.waitFor(
        () => {
          const m = r.discord.originalMessage(id);
          return m && !m.loading ? m : undefined;
        },
        5_000,
        'the status',
      );
      expect(status.content).not.toBe(messages.adminOnly);
      expect(`${status.content} ${JSON.stringify(status.embeds)}`).toMatch(/GPU server/i);
      expect(r.fair.killPrograms()).toEqual([]);
    } finally {
      await r.close();
    }
  });
});
