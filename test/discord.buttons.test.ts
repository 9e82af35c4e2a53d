/**
 * Issue 7 on Discord, end to end: the bot started by startApp, the real discord.js
 * client over real sockets to the Discord stand-in, which dispatches real component
 * interactions (type 3) for the buttons the bot put on its messages. Assertions are
 * about what users see: texts, buttons present, bytes, who gets pinged, the embed.
 */
import { getGlobalDispatcher } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { messages, discordMessages } from '../src/messages.js';
import { pngForPrompt } from './standins/png.js';
import {
  buttonIds,
  click,
  edits,
  healthzAnswers,
  imageInReply,
  ops,
  replyReads,
  replyWithButton,
  imagine,
  startDiscordRig,
  users,
  type DiscordRig,
} from './helpers/discordApp.js';

// Same production order as the e2e suite: undici 7's dispatcher first (see src/bots/discord/rest.ts).
getGlobalDispatcher();

let rig: DiscordRig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

const { alice, bob, carol, admin } = users;
const ADMINS = { ADMIN_IDS: `discord:${admin.userId}` };

function callbackOf(r: DiscordRig, interactionId: string) {
  return r.discord.waitFor(() => r.discord.callbacks.find((c) => c.interactionId === interactionId), 5_000, `the callback for ${interactionId}`);
}

const jobIdOf = (customId: string) => customId.split(':')[2]!;

describe('Discord Re-roll button', () => {
  it('puts Re-roll (and no Cancel) under the image; a click gives the clicker a second image of the same prompt in a new public reply', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const prompt = 'a red kite over the dunes';
    const first = imagine(rig, prompt);
    const image = await imageInReply(rig, first.id);
    expect(buttonIds(image)).toEqual([expect.stringMatching(/^fairbot:reroll:[0-9a-z]+$/)]);
    expect(rig.discord.messages.get(image.id)!.components).toHaveLength(1);

    const reroll = click(rig, image, 'fairbot:reroll:', bob);
    const callback = await callbackOf(rig, reroll.id);
    expect(callback.type).toBe(5); // deferred, public: like /imagine
    const second = await imageInReply(rig, reroll.id);
    expect(second.id).not.toBe(image.id);
    expect(second.ephemeral).toBe(false);
    expect(second.channelId).toBe(rig.discord.channelId);
    expect(Buffer.compare(second.attachments[0]!.bytes, pngForPrompt(prompt))).toBe(0);
    expect(second.content).toContain(prompt);
    expect(second.content).toContain(`<@${bob.userId}>`); // the clicker asked for this one...
    expect(second.mentions).toEqual({ users: [], roles: [], everyone: false }); // ...shown, not pinged
    // The new image has its own Re-roll button, for its own job.
    const [secondReroll] = buttonIds(second);
    expect(secondReroll).toMatch(/^fairbot:reroll:/);
    expect(jobIdOf(secondReroll!)).not.toBe(jobIdOf(reroll.customId));
    // The first image is untouched.
    expect(rig.discord.messages.get(image.id)!.attachments).toHaveLength(1);
    expect(rig.discord.messages.get(image.id)!.content).toContain(`<@${alice.userId}>`);
    expect(rig.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual([prompt, prompt]);
  });

  it('still works after the bot restarted (the prompt is read back from DATA_DIR)', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const prompt = 'a lantern festival, long exposure';
    const first = imagine(rig, prompt);
    const image = await imageInReply(rig, first.id);

    await rig.restart(); // a new startApp on the same DATA_DIR: nothing of the job is in memory
    const reroll = click(rig, image, 'fairbot:reroll:', bob);
    const second = await imageInReply(rig, reroll.id);
    expect(Buffer.compare(second.attachments[0]!.bytes, pngForPrompt(prompt))).toBe(0);
    expect(second.content).toContain(`<@${bob.userId}>`);
    expect(buttonIds(second)).toEqual([expect.stringMatching(/^fairbot:reroll:/)]);
  });

  it('answers a click over the user limit privately, and starts nothing', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50, diffusion: { generationMs: 1_500 } }, env: { USER_MAX_PENDING: '1' } });
    const first = imagine(rig, 'a snail race');
    const image = await imageInReply(rig, first.id);
    const own = imagine(rig, 'bob waits for this one', bob);
    await callbackOf(rig, own.id); // bob's job is accepted (it is recorded before the acknowledgement)

    const reroll = click(rig, image, 'fairbot:reroll:', bob);
    const refusal = await replyReads(rig, reroll.id, messages.userLimit(1));
    expect(refusal.ephemeral).toBe(true);
    expect(rig.discord.callbacks.find((c) => c.interactionId === reroll.id)!.type).toBe(4);

    await imageInReply(rig, own.id);
    expect(rig.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['a snail race', 'bob waits for this one']);
  });
});

describe('Discord Cancel button', () => {
  it('lets the owner cancel a waiting job: the message shows the cancellation, no buttons, and it is never generated', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 4_000 } });
    const prompt = 'never mind this one';
    const job = imagine(rig, prompt);
    const progress = await replyWithButton(rig, job.id, 'fairbot:cancel:');
    expect(progress.content).toMatch(/^(Queued|Warming up the GPU)/);
    expect(buttonIds(progress)).toHaveLength(1);

    const cancel = click(rig, progress, 'fairbot:cancel:', alice);
    const callback = await callbackOf(rig, cancel.id);
    expect(callback.type).toBe(7); // the clicked message itself is updated
    const cancelled = await replyReads(rig, job.id, messages.cancelled);
    expect(cancelled.components).toEqual([]);
    expect(cancelled.attachments).toHaveLength(0);

    // Someone else's job after it runs on the same cold start; the cancelled one never reaches the GPU.
    const next = imagine(rig, 'the one that runs', bob);
    await imageInReply(rig, next.id);
    expect(rig.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['the one that runs']);
    const after = rig.discord.originalMessage(job.id)!;
    expect(after.content).toBe(messages.cancelled);
    expect(after.components).toEqual([]);
    // Nothing after the click but the cancellation itself; nothing in the channel.
    expect(
      edits(rig, job.id)
        .filter((e) => e.at >= callback.at)
        .every((e) => e.text === messages.cancelled),
    ).toBe(true);
    expect(rig.discord.channelPosts()).toHaveLength(0);
  });

  it("shows a cancel made after the 15 minutes on the message all the same (the click's own token), and posts nothing", async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 4_000 } });
    const job = imagine(rig, 'a very long wait');
    const progress = await replyWithButton(rig, job.id, 'fairbot:cancel:');
    rig.discord.ageInteraction(job.id, 15 * 60_000); // the job's own token no longer works
    const cancel = click(rig, progress, 'fairbot:cancel:', alice);
    expect((await callbackOf(rig, cancel.id)).status).toBe(204);
    const cancelled = await replyReads(rig, job.id, messages.cancelled);
    expect(cancelled.components).toEqual([]);
    // Someone else's job runs on the same server start; by then the follower is long done.
    const next = imagine(rig, 'meanwhile', bob);
    await imageInReply(rig, next.id);
    expect(rig.discord.channelPosts()).toHaveLength(0); // no "@alice Your job was cancelled." in the channel
    expect(rig.discord.originalMessage(job.id)!.content).toBe(messages.cancelled);
  });

  it("refuses someone else's click privately (the job still completes), and lets an admin cancel anyone's job", async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 3_000 }, env: ADMINS });
    const mine = imagine(rig, 'alice keeps this one');
    const theirs = imagine(rig, 'carol loses this one', carol);
    const progress = await replyWithButton(rig, mine.id, 'fairbot:cancel:');

    const refused = click(rig, progress, 'fairbot:cancel:', bob);
    const answer = await replyReads(rig, refused.id, messages.cancelNotOwner);
    expect(answer.ephemeral).toBe(true);
    expect(answer.id).not.toBe(progress.id);
    expect(buttonIds(rig.discord.messages.get(progress.id))).toEqual([expect.stringMatching(/^fairbot:cancel:/)]);

    const carolsProgress = await replyWithButton(rig, theirs.id, 'fairbot:cancel:');
    click(rig, carolsProgress, 'fairbot:cancel:', admin);
    await replyReads(rig, theirs.id, messages.cancelled);

    const image = await imageInReply(rig, mine.id);
    expect(Buffer.compare(image.attachments[0]!.bytes, pngForPrompt('alice keeps this one'))).toBe(0);
    expect(buttonIds(image)).toEqual([expect.stringMatching(/^fairbot:reroll:/)]); // Cancel gone once the job ended
    expect(rig.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['alice keeps this one']);

    // A late click on a Cancel that is still shown somewhere (e.g. an old message) is answered, privately.
    const late = rig.discord.dispatchInteraction({
      type: 'component',
      customId: `fairbot:cancel:${jobIdOf(buttonIds(image)[0]!)}`,
      messageId: image.id,
      unlisted: true,
      ...alice,
    });
    expect((await replyReads(rig, late.id, messages.cancelTooLate)).ephemeral).toBe(true);
  });
});

describe('Discord progress and ETA', () => {
  it('shows the ETA, edits each message at most every 2 s, with Cancel while it waits, and never after the job ended', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 300, diffusion: { generationMs: 2_500 } } });
    const asks = [
      { user: alice, prompt: 'first in line' },
      { user: bob, prompt: 'second in line' },
      { user: carol, prompt: 'third in line' },
    ].map((a) => ({ ...a, id: imagine(rig!, a.prompt, a.user).id }));
    for (const a of asks) await imageInReply(rig, a.id, 20_000);

    const texts: string[] = [];
    for (const a of asks) {
      const callback = rig.discord.callbacks.find((c) => c.interactionId === a.id)!;
      const all = edits(rig, a.id);
      expect(all.every((e) => e.status === 200)).toBe(true);
      // The last write is the image, with Re-roll: no edit once the job ended.
      const final = all.at(-1)!;
      expect(final.files).toBe(1);
      expect(JSON.stringify(final.components)).toMatch(/"custom_id":"fairbot:reroll:/);
      const progress = all.slice(0, -1);
      expect(progress.every((e) => e.files === 0)).toBe(true);
      let previous = callback.at;
      for (const p of progress) {
        expect(p.at - previous).toBeGreaterThanOrEqual(1_900);
        previous = p.at;
        expect(JSON.stringify(p.components)).toMatch(/"custom_id":"fairbot:cancel:/);
        texts.push(p.text ?? '');
      }
    }
    // Once a median generation time is known, the waiting jobs are told how long to go.
    expect(texts.some((t) => /\(about \d+ (s|min) to go\)/.test(t))).toBe(true);
    // The first job ended seconds before the last: nothing was written to its message since.
    const firstFinal = edits(rig, asks[0]!.id).at(-1)!.at;
    expect(edits(rig, asks[2]!.id).at(-1)!.at - firstFinal).toBeGreaterThan(2_000);
    expect(rig.discord.webhookMessages.filter((w) => w.interactionId === asks[0]!.id && w.at > firstFinal)).toHaveLength(0);
  });
});

describe('Discord prompts shown safely', () => {
  it('shows mentions and markdown in a prompt literally, pinging nobody, in the reply, a Re-roll and a late post', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 } });
    const prompt = 'hey @everyone and @here <@&123456789012345678> <@111111111111111111> **bold** _it_ `code` ||spoiler|| [link](https://evil.example)';
    const job = imagine(rig, prompt);
    const reply = await imageInReply(rig, job.id);
    expect(Buffer.compare(reply.attachments[0]!.bytes, pngForPrompt(prompt))).toBe(0);
    const escaped = [
      '@\u200beveryone',
      '@\u200bhere',
      '\\<@&123456789012345678>',
      '\\<@111111111111111111>',
      '\\*\\*bold\\*\\*',
      '\\_it\\_',
      '\\`code\\`',
      '\\|\\|spoiler\\|\\|',
      '\\[link](https://evil.example)',
    ];
    for (const e of escaped) expect(reply.content).toContain(e);
    expect(reply.content).not.toMatch(/(^|[^\\])\*\*bold/);
    expect(reply.mentions).toEqual({ users: [], roles: [], everyone: false });

    const reroll = click(rig, reply, 'fairbot:reroll:', bob);
    const second = await imageInReply(rig, reroll.id);
    for (const e of escaped) expect(second.content).toContain(e);
    expect(second.mentions).toEqual({ users: [], roles: [], everyone: false });

    // After 15 minutes the image goes to the channel, mentioning (and pinging) only the user who asked.
    const late = imagine(rig, prompt, carol);
    await callbackOf(rig, late.id);
    rig.discord.ageInteraction(late.id, 15 * 60_000);
    const post = await rig.discord.waitFor(() => rig!.discord.channelPosts().find((m) => m.attachments.length > 0), 15_000, 'the late image');
    for (const e of escaped) expect(post.content).toContain(e);
    expect(post.mentions).toEqual({ users: [carol.userId], roles: [], everyone: false });
    expect(buttonIds(post)).toEqual([expect.stringMatching(/^fairbot:reroll:/)]);

    // Every body the bot sent with text said who may be pinged: nobody but, on a late post, the user.
    const bodies = [...rig.discord.webhookMessages, ...rig.discord.channelMessages, ...rig.discord.callbacks]
      .map(
        (c) => c.body as { content?: string; allowed_mentions?: { parse?: unknown[] }; data?: { content?: string; allowed_mentions?: { parse?: unknown[] } } },
      )
      .map((b) => b?.data ?? b)
      .filter((b) => typeof b?.content === 'string' && b.content.length > 0);
    expect(bodies.length).toBeGreaterThan(3);
    for (const b of bodies) expect(b.allowed_mentions?.parse).toEqual([]);
  });
});

describe('Discord /gpu status and kill', () => {
  it('shows the status as an embed with the server, the queue and the timings', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 300 }, env: { ...ADMINS, IDLE_SHUTDOWN_MIN: '10' } });
    const job = imagine(rig, 'warm the server');
    await imageInReply(rig, job.id);
    // The idle timer is armed once the job is over (delivered).
    await rig.discord.waitFor(() => rig!.app.services.lifecycle.status().idleShutdownAt, 5_000, 'the idle timer');

    const status = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'status', ...admin });
    const reply = await rig.discord.waitFor(
      () => {
        const m = rig!.discord.originalMessage(status.id);
        return m && m.embeds.length > 0 ? m : undefined;
      },
      5_000,
      'the status embed',
    );
    expect(reply.ephemeral).toBe(true);
    expect(reply.content).toBe('');
    const embed = reply.embeds[0] as { title: string; color: number; fields: { name: string; value: string }[]; timestamp: string };
    expect(embed.title).toBe(discordMessages.status.title);
    const t = discordMessages.status;
    const field = (name: string) => embed.fields.find((f) => f.name === name)?.value;
    const container = [...rig.fair.containers.values()][0]!;
    expect(field(t.state)).toMatch(/^ready for \d+ s$/);
    expect(field(t.node)).toBe('node-1 (127.0.0.1)');
    expect(field(t.container)).toBe(`\`${container.id.slice(0, 12)}\``);
    expect(field(t.uptime)).toMatch(/^\d+ s$/);
    expect(field(t.coldStart)).toMatch(/^\d+\.\d s$/);
    expect(field(t.jobs)).toBe('0 waiting, 0 running');
    expect(field(t.generations)).toBe('1');
    expect(field(t.median)).toMatch(/^\d+\.\d s$/);
    const idle = field(t.idle)!;
    const at = Number(/<t:(\d+):R>/.exec(idle)?.[1]);
    expect(idle).toMatch(/^in (\d+ s|\d+ min) \(<t:\d+:R>\)$/);
    expect(Math.abs(at * 1000 - (Date.now() + 10 * 60_000))).toBeLessThan(15_000);
  });

  it('asks before a kill that would end jobs: Keep leaves everything, Confirm stops the server and ends the jobs', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 6_000 }, env: ADMINS });
    const running = imagine(rig, 'caught in the kill');
    const waiting = imagine(rig, 'also caught', bob);
    await callbackOf(rig, running.id);
    await callbackOf(rig, waiting.id);

    const ask = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'kill', ...admin });
    const question = await replyReads(rig, ask.id, messages.gpuKillConfirm(1, 1));
    expect(question.ephemeral).toBe(true);
    expect(buttonIds(question)).toEqual(['fairbot:gpu-kill:confirm', 'fairbot:gpu-kill:keep']);

    const keep = click(rig, question, 'fairbot:gpu-kill:keep', admin);
    expect((await callbackOf(rig, keep.id)).type).toBe(7);
    const kept = await replyReads(rig, ask.id, messages.gpuKillAborted);
    expect(kept.components).toEqual([]);
    expect(rig.fair.killPrograms()).toHaveLength(0);
    expect(rig.app.services.jobs.counts()).toEqual({ waiting: 1, running: 1 });

    const again = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'kill', ...admin });
    const second = await replyReads(rig, again.id, messages.gpuKillConfirm(1, 1));
    click(rig, second, 'fairbot:gpu-kill:confirm', admin);
    const done = await replyReads(rig, again.id, messages.gpuKilled(2));
    expect(done.components).toEqual([]);
    expect(rig.fair.killPrograms().length).toBeGreaterThanOrEqual(1);
    for (const job of [running, waiting]) {
      const reply = await replyReads(rig, job.id, messages.killedByAdmin);
      expect(reply.components).toEqual([]); // no Cancel left on an ended job
    }
    expect(rig.fair.diffusion()?.infers ?? []).toHaveLength(0);
  });

  it('checks the admin again on Confirm (ADMIN_IDS changed since the question)', async () => {
    // dockerProxy: like Docker, the starting container's port resets (not refuses), so the restarted bot waits for it.
    rig = await startDiscordRig({ fair: { coldStartMs: 3_000, dockerProxy: true }, env: ADMINS });
    const job = imagine(rig, 'survives a demoted admin');
    await callbackOf(rig, job.id);
    const ask = rig.discord.dispatchInteraction({ name: 'gpu', subcommand: 'kill', ...admin });
    const question = await replyReads(rig, ask.id, messages.gpuKillConfirm(0, 1));

    rig.env.ADMIN_IDS = `discord:${carol.userId}`;
    await rig.restart();
    const kills = rig.fair.killPrograms().length;
    click(rig, question, 'fairbot:gpu-kill:confirm', admin);
    const refused = await replyReads(rig, ask.id, messages.adminOnly);
    expect(refused.components).toEqual([]);
    const image = await imageInReply(rig, job.id);
    expect(Buffer.compare(image.attachments[0]!.bytes, pngForPrompt('survives a demoted admin'))).toBe(0);
    expect(rig.fair.killPrograms()).toHaveLength(kills);
  });
});

describe('Discord health and metrics for operators', () => {
  it('answers /healthz 503 with the reason while the gateway is down, 200 when it is back', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 }, env: { METRICS_PORT: '0' } });
    expect(await ops(rig, '/healthz')).toEqual({ status: 200, text: JSON.stringify({ ok: true }) });

    rig.discord.setGatewayDown(true);
    await rig.discord.waitFor(() => rig!.discord.gatewayLog.some((g) => g.kind === 'refused'), 10_000, 'a refused reconnect');
    const down = await ops(rig, '/healthz');
    expect(down.status).toBe(503);
    const body = JSON.parse(down.text) as { ok: boolean; reason: string };
    expect(body.ok).toBe(false);
    expect(body.reason).toMatch(/^discord: Discord gateway not connected \(shard 0 \w+/);

    rig.discord.setGatewayDown(false);
    await rig.discord.waitFor(() => rig!.discord.liveSessions() === 1, 15_000, 'the bot back on the gateway');
    await healthzAnswers(rig, 200);
    // The refused reconnects were counted for operators.
    expect((await ops(rig, '/metrics')).text).toMatch(/^fairbot_platform_api_errors_total\{platform="discord",code="gateway"\} [1-9]/m);
    const job = imagine(rig, 'after the outage');
    await imageInReply(rig, job.id);
  });

  it('counts Discord API errors by code on /metrics', async () => {
    rig = await startDiscordRig({ fair: { coldStartMs: 50 }, env: { METRICS_PORT: '0' } });
    const late = imagine(rig, 'too late');
    rig.discord.ageInteraction(late.id, 5_000); // Discord refuses the acknowledgement: 10062
    expect((await callbackOf(rig, late.id)).errorCode).toBe(10062);
    const line = 'fairbot_platform_api_errors_total{platform="discord",code="10062"} 1';
    const deadline = Date.now() + 5_000;
    let scraped = await ops(rig, '/metrics');
    while (!scraped.text.includes(line) && Date.now() < deadline) scraped = await ops(rig, '/metrics');
    expect(scraped.text).toContain(line);
  });
});
