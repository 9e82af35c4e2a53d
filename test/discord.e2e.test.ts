/**
 * End to end on Discord: the bot started by the same code as `npm start`
 * (startApp with an env), the real discord.js client talking over real sockets
 * to the Discord stand-in, and the core's Fair and diffusion stand-ins behind it.
 * Assertions are about what users see: the reply's text, the attachment's bytes,
 * who gets pinged.
 */
import { getGlobalDispatcher } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { once } from 'node:events';
import { Events } from 'discord.js';
import { registerCommands, type DiscordBot } from '../src/bots/discord/index.js';
import { discordMessages, messages } from '../src/messages.js';
import { ADMINISTRATOR_PERMISSIONS } from './standins/discord.js';
import { startDiffusionStandin } from './standins/diffusion.js';
import { pngForPrompt } from './standins/png.js';
import { imageInReply, imagine, replyReads, startDiscordRig, users, type DiscordRig } from './helpers/discordApp.js';

// Production order that broke every upload before src/bots/discord/rest.ts (discord.js
// issues #10946, #11525): undici 7 (used for Fair and the diffusion server) installs the
// process-wide dispatcher before discord.js's undici 6 does.
getGlobalDispatcher();

let rig: DiscordRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const { alice, bob, carol, admin } = users;

function ack(r: DiscordRig, interactionId: string) {
  return r.discord.waitFor(() => r.discord.callbacks.find((c) => c.interactionId === interactionId), 5_000, `the callback for ${interactionId}`);
}

describe('Discord /imagine end to end', () => {
  it('defers within 3 s during a cold start, edits progress at most every 2 s, then shows the exact image with prompt and who asked', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 4_500 } });
    const prompt = 'a lighthouse at dusk, oil painting';
    const { id } = imagine(rig, prompt);

    const callback = await ack(rig, id);
    expect(callback.status).toBe(204);
    expect(callback.type).toBe(5); // deferred
    expect(callback.latencyMs).toBeLessThan(3_000);

    const reply = await imageInReply(rig, id);
    const expected = pngForPrompt(prompt);
    expect(reply.attachments).toHaveLength(1);
    expect(Buffer.compare(reply.attachments[0]!.bytes, expected)).toBe(0);
    expect(reply.attachments[0]!.filename).toMatch(/\.png$/);
    expect(reply.content).toContain(prompt);
    expect(reply.content).toContain(`<@${alice.userId}>`); // who asked, shown...
    expect(reply.mentions).toEqual({ users: [], roles: [], everyone: false }); // ...without a ping
    expect(reply.ephemeral).toBe(false);
    expect(rig.fair.startPrograms()).toBe(1);

    // The progress the user watched, and its pace.
    const edits = rig.discord.webhookMessages.filter((w) => w.interactionId === id && w.method === 'PATCH');
    const progress = edits.filter((e) => e.files.length === 0).map((e) => ({ at: e.at, text: String((e.body as { content?: string }).content) }));
    expect(progress.some((p) => p.text.startsWith('Warming up the GPU'))).toBe(true);
    let previous = callback.at;
    for (const p of progress) {
      expect(p.at - previous).toBeGreaterThanOrEqual(1_900);
      previous = p.at;
    }
    expect(edits.at(-1)!.files).toHaveLength(1); // the final one always goes out, last
    expect(edits.every((e) => e.status === 200)).toBe(true);
  });

  it('gives three users who ask during one cold start three images from one server start', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 1_500 } });
    const asks = [
      { user: alice, prompt: 'a red fox in the snow' },
      { user: bob, prompt: 'a teapot on the moon' },
      { user: carol, prompt: 'a city made of glass' },
    ].map((a) => ({ ...a, id: imagine(rig!, a.prompt, a.user).id }));

    for (const a of asks) {
      const reply = await imageInReply(rig, a.id);
      expect(Buffer.compare(reply.attachments[0]!.bytes, pngForPrompt(a.prompt))).toBe(0);
      expect(reply.content).toContain(a.prompt);
      expect(reply.content).toContain(`<@${a.user.userId}>`);
    }
    expect(rig.fair.startPrograms()).toBe(1);
    expect(rig.discord.callbacks.every((c) => c.status === 204 && c.latencyMs < 3_000)).toBe(true);
  });

  it('posts the image to the channel, mentioning only the user, when it finishes after the interaction token expired', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 1_500 } });
    const prompt = 'ping @everyone <@&123456789012345678> a slow sunrise';
    const { id } = imagine(rig, prompt);
    await ack(rig, id);
    // 15 minutes pass for Discord while the GPU is still warming up.
    rig.discord.ageInteraction(id, 15 * 60_000);

    const post = await rig.discord.waitFor(() => rig!.discord.channelPosts().find((m) => m.attachments.length > 0), 15_000, 'the image in the channel');
    expect(Buffer.compare(post.attachments[0]!.bytes, pngForPrompt(prompt))).toBe(0);
    expect(post.channelId).toBe(rig.discord.channelId);
    expect(post.content.startsWith(`<@${alice.userId}>`)).toBe(true);
    expect(post.content).toContain('a slow sunrise');
    expect(post.mentions).toEqual({ users: [alice.userId], roles: [], everyone: false });
    const record = rig.discord.channelMessages.find((c) => c.status === 200)!;
    expect(record.authorization).toBe(`Bot ${rig.discord.token}`);
    // The reply itself never got the image: its token no longer worked.
    expect(rig.discord.originalMessage(id)?.attachments).toHaveLength(0);
    expect(rig.discord.channelPosts()).toHaveLength(1);
    // The refused webhook calls were logged without their URL (it holds the token).
    expect(rig.discord.webhookMessages.some((w) => w.errorCode === 50027)).toBe(true);
    const token = rig.discord.callbacks.find((c) => c.interactionId === id)!.token;
    expect(rig.logs.text).not.toContain(token);
  });

  it('tells the user clearly when the image is over the server upload limit (known in advance)', async () => {
    const limit = 256 * 1024;
    rig = await startDiscordRig({ discord: { uploadLimitBytes: limit }, fair: { coldStartMs: 50, diffusion: { minImageBytes: 300 * 1024 } } });
    const prompt = 'an enormous mural';
    const { id } = imagine(rig, prompt);
    const size = pngForPrompt(prompt, { minBytes: 300 * 1024 }).length;
    const reply = await replyReads(rig, id, messages.deliveryFailed(discordMessages.tooLarge(size, limit)));
    expect(reply.attachments).toHaveLength(0);
    expect(reply.content).toContain(`at ${Math.round(size / 1024)} KB it is larger than this server's upload limit of 256 KB`);
    // No upload was attempted.
    expect(rig.discord.webhookMessages.some((w) => w.files.length > 0)).toBe(false);
  });

  it('tells the user clearly when Discord refuses the upload as too large (40005)', async () => {
    rig = await startDiscordRig({
      discord: { uploadLimitBytes: 256 * 1024, advertisedUploadLimitBytes: 1024 * 1024 },
      fair: { coldStartMs: 50, diffusion: { minImageBytes: 300 * 1024 } },
    });
    const prompt = 'a very detailed map';
    const { id } = imagine(rig, prompt);
    const size = pngForPrompt(prompt, { minBytes: 300 * 1024 }).length;
    const reply = await replyReads(rig, id, messages.deliveryFailed(discordMessages.tooLarge(size)));
    expect(reply.attachments).toHaveLength(0);
    expect(rig.discord.webhookMessages.some((w) => w.errorCode === 40005)).toBe(true);
    expect(rig.discord.channelPosts()).toHaveLength(0);
  });

  it('delivers the image of a job in flight while the gateway is down, then serves new commands after reconnecting', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 2_000 } });
    const prompt = 'a storm over the harbour';
    const { id } = imagine(rig, prompt);
    await ack(rig, id);

    rig.discord.setGatewayDown(true);
    await rig.discord.waitFor(() => rig!.discord.gatewayLog.some((g) => g.kind === 'refused'), 5_000, 'a refused reconnect');
    const reply = await imageInReply(rig, id);
    expect(rig.discord.liveSessions()).toBe(0); // delivered while the gateway was still down
    expect(rig.app.discord!.health!()).toMatchObject({ ok: false, reason: expect.stringMatching(/^Discord gateway not connected \(/) });
    expect(Buffer.compare(reply.attachments[0]!.bytes, pngForPrompt(prompt))).toBe(0);

    rig.discord.setGatewayDown(false);
    await rig.discord.waitFor(() => rig!.discord.liveSessions() === 1, 10_000, 'the bot back on the gateway');
    const bot = rig.app.discord as DiscordBot;
    if (!bot.health().ok) {
      // Health is the client's view: wait on its own events (the check and the listeners are in one tick).
      const signal = AbortSignal.timeout(5_000);
      await Promise.race([once(bot.client, Events.ShardResume, { signal }), once(bot.client, Events.ShardReady, { signal })]);
    }
    expect(bot.health()).toEqual({ ok: true });
    const again = imagine(rig, 'after the storm', bob);
    const second = await imageInReply(rig, again.id);
    expect(Buffer.compare(second.attachments[0]!.bytes, pngForPrompt('after the storm'))).toBe(0);
  });

  it('answers an interaction dispatched while the bot was disconnected (replayed on RESUME)', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    rig.discord.dropGateway(); // resumable close code
    const { id } = imagine(rig, 'a quiet library');
    const callback = await ack(rig, id);
    expect(callback.status).toBe(204);
    const reply = await imageInReply(rig, id);
    expect(Buffer.compare(reply.attachments[0]!.bytes, pngForPrompt('a quiet library'))).toBe(0);
    expect(rig.discord.gatewayLog.filter((g) => g.kind === 'resume')).toHaveLength(1);
  });

  it('edits a failed job into one clear error', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const first = imagine(rig, 'warm it up');
    await imageInReply(rig, first.id);
    (await rig.fair.waitForDiffusion()).setFault('500', { times: 1 });
    const { id } = imagine(rig, 'this one fails', bob);
    const reply = await rig.discord.waitFor(
      () => {
        const m = rig!.discord.originalMessage(id);
        return m?.content.startsWith('Image generation failed') ? m : undefined;
      },
      10_000,
      'the failure in the reply',
    );
    expect(reply.attachments).toHaveLength(0);
    expect(reply.mentions.users).toEqual([]);
    expect(rig.discord.channelPosts()).toHaveLength(0);
  });

  it('refuses in words, privately: the per-user limit, an empty prompt, an unknown command, a malformed option', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 1_500 }, env: { USER_MAX_PENDING: '1' } });
    const first = imagine(rig, 'one at a time');
    await ack(rig, first.id);

    const second = imagine(rig, 'and another');
    await replyReads(rig, second.id, messages.userLimit(1));
    const refusal = rig.discord.callbacks.find((c) => c.interactionId === second.id)!;
    expect(refusal.type).toBe(4);
    expect(rig.discord.originalMessage(second.id)!.ephemeral).toBe(true);

    const empty = rig.discord.dispatchInteraction({ name: 'imagine', options: { prompt: ' \u200b ' }, ...bob });
    await replyReads(rig, empty.id, messages.promptEmpty);
    expect(rig.discord.originalMessage(empty.id)!.ephemeral).toBe(true);

    const unknown = rig.discord.dispatchInteraction({ name: 'paint', options: { what: 'x' }, ...bob });
    await replyReads(rig, unknown.id, discordMessages.unknownCommand('paint'));

    const malformed = rig.discord.dispatchInteraction({ name: 'imagine', rawOptions: [{ name: 'prompt', type: 4, value: 7 }], ...carol });
    await replyReads(rig, malformed.id, discordMessages.internalError);

    const image = await imageInReply(rig, first.id);
    expect(Buffer.compare(image.attachments[0]!.bytes, pngForPrompt('one at a time'))).toBe(0);
  });

  it('gives up a job whose interaction Discord no longer accepts, and stays up', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const late = imagine(rig, 'too late');
    rig.discord.ageInteraction(late.id, 5_000); // the bot sees it after the 3 s window
    const callback = await ack(rig, late.id);
    expect(callback.errorCode).toBe(10062);
    const next = imagine(rig, 'in time', bob);
    await imageInReply(rig, next.id);
    expect(rig.discord.channelPosts()).toHaveLength(0); // nobody gets an image they were told failed
    expect(rig.discord.originalMessage(late.id)).toBeUndefined();
  });

  it('keeps a job across a restart: the reply says so, and the restarted bot delivers into the same reply', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 2_500 } });
    const prompt = 'survives a restart';
    const { id } = imagine(rig, prompt);
    await ack(rig, id);
    await rig.app.stop(0); // SIGTERM during the cold start
    expect(rig.discord.originalMessage(id)!.content).toBe(discordMessages.restarting);

    await rig.restart(); // same DATA_DIR: the job is recovered and followed on
    const reply = await imageInReply(rig, id);
    expect(Buffer.compare(reply.attachments[0]!.bytes, pngForPrompt(prompt))).toBe(0);
    expect(reply.content).toContain(prompt);
    expect(rig.discord.channelPosts()).toHaveLength(0);
    // The shutdown abandoned the cold start (and killed that container); one server is left running.
    expect(rig.fair.startPrograms() - rig.fair.killPrograms().length).toBe(1);
  });

  it('never logs the bot token or interaction tokens', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const { id, token } = imagine(rig, 'a secret garden');
    await imageInReply(rig, id);
    expect(rig.logs.text).not.toContain(rig.discord.token);
    expect(rig.logs.text).not.toContain(token);
  });
});

describe('Discord /gpu end to end', () => {
  it('an unmanaged server (INFERENCE_URL only) that answers shows as ready with an unknown uptime, never "not running"', async () => {
    const diffusion = await startDiffusionStandin();
    try {
      rig = await startDiscordRig({ env: { ADMIN_IDS: `discord:${admin.userId}`, FAIR_EMAIL: '', FAIR_PASSWORD: '', INFERENCE_URL: diffusion.url } });
      await imageInReply(rig, imagine(rig, 'on a server of our own').id);
      const status = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'status', ...admin });
      const reply = await rig.discord.waitFor(
        () => {
          const m = rig!.discord.originalMessage(status.id);
          return m && !m.loading ? m : undefined;
        },
        5_000,
        'the status',
      );
      const field = (name: string) => (reply.embeds[0]!.fields as Array<{ name: string; value: string }>).find((f) => f.name === name)?.value;
      expect(field(discordMessages.status.state)).toMatch(/^ready for /);
      expect(field(discordMessages.status.uptime)).toBe(discordMessages.status.uptimeUnknown);
      expect(reply.embeds[0]!.description).toBe(discordMessages.status.notManaged);
    } finally {
      await rig?.close();
      rig = undefined;
      await diffusion.close();
    }
  });

  it('refuses a non-admin, privately, even one with Administrator in the guild', async () => {
    rig = await startDiscordRig({ env: { ADMIN_IDS: `discord:${admin.userId}` } });
    const { id } = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'status', ...alice, permissions: ADMINISTRATOR_PERMISSIONS });
    const reply = await replyReads(rig, id, messages.adminOnly);
    expect(reply.ephemeral).toBe(true);
    expect(rig.fair.killPrograms()).toHaveLength(0);
  });

  it('lets an admin see the status and kill the server on Fair', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 }, env: { ADMIN_IDS: `discord:${admin.userId}` } });
    const job = imagine(rig, 'start the server');
    await imageInReply(rig, job.id);

    const status = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'status', ...admin });
    const statusReply = await rig.discord.waitFor(
      () => {
        const m = rig!.discord.originalMessage(status.id);
        return m && !m.loading ? m : undefined;
      },
      5_000,
      'the status',
    );
    expect(statusReply.ephemeral).toBe(true);
    expect(statusReply.embeds[0]).toMatchObject({ title: discordMessages.status.title });
    expect(statusReply.embeds[0]!.fields).toContainEqual(
      expect.objectContaining({ name: discordMessages.status.state, value: expect.stringMatching(/^ready for /) }),
    );

    const kill = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'kill', ...admin });
    const killReply = await replyReads(rig, kill.id, messages.gpuKilled(0));
    expect(killReply.ephemeral).toBe(true);
    expect(rig.fair.killPrograms()).toHaveLength(1);
  });
});

describe('Discord start and odd input', () => {
  it('refuses to start with a token Discord rejects, saying so', async () => {
    const err = await startDiscordRig({ env: { DISCORD_TOKEN: 'not-the-token' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/invalid token/i);
  });

  it("answers a button click it does not handle (an older version's button, a malformed id), privately", async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const job = imagine(rig, 'a button');
    const reply = await imageInReply(rig, job.id);
    for (const customId of ['again', 'fairbot:reroll:../../etc', 'fairbot:explode:1', `fairbot:cancel:${'x'.repeat(90)}`]) {
      const click = rig.discord.dispatchInteraction({ type: 'component', customId, messageId: reply.id, unlisted: true, ...bob });
      const answer = await replyReads(rig, click.id, discordMessages.unknownButton);
      expect(answer.ephemeral).toBe(true);
    }
    expect(rig.discord.messages.get(reply.id)!.attachments).toHaveLength(1); // the image message is untouched
  });
});

describe('Discord command registration', () => {
  it('registers guild-scoped at start, not again when unchanged, and globally from the CLI without DISCORD_GUILD_ID', async () => {
    rig = await startDiscordRig();
    const guild = rig.discord.commands('guild');
    expect(guild.map((c) => c.name).sort()).toEqual(['gpu', 'imagine']);
    const gpu = guild.find((c) => c.name === 'gpu')!;
    expect(gpu.default_member_permissions).toBe('8');
    expect((gpu.options as { name: string; type: number }[]).map((o) => [o.name, o.type])).toEqual([
      ['status', 1],
      ['kill', 1],
    ]);
    const prompt = (guild.find((c) => c.name === 'imagine')!.options as Record<string, unknown>[])[0]!;
    expect(prompt).toMatchObject({ name: 'prompt', type: 3, required: true, max_length: 1000 });
    expect(rig.discord.commandRegistrations).toHaveLength(1);

    await rig.restart();
    expect(rig.discord.commandRegistrations).toHaveLength(1); // unchanged: nothing re-registered

    const { DISCORD_GUILD_ID: _guild, ...globalEnv } = rig.env;
    const line = await registerCommands(loadConfig(globalEnv));
    expect(line).toContain('globally');
    expect(rig.discord.commandRegistrations.at(-1)).toMatchObject({ scope: 'global' });
    expect(
      rig.discord
        .commands('global')
        .map((c) => c.name)
        .sort(),
    ).toEqual(['gpu', 'imagine']);
  });
});
