// End to end on Slack: the real app (startApp, as `npm start` runs it), the real Bolt
// app and WebClient, against the Slack stand-in over real sockets, with the Fair and
// diffusion stand-ins behind it. Assertions are what the user would see.
import { describe, expect, it } from 'vitest';
import { messages, slackMessages } from '../src/messages.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { captionOf, DONE_TEXT as DONE, SLACK_ADMIN, slackRigs, startSlackRig, type SlackRig } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';

const rig = slackRigs();
const lastText = (r: SlackRig, user: string) => r.slack.userView(user).at(-1)?.text;

describe('Slack /imagine', () => {
  it('posts the exact image bytes in the channel, with who asked and the prompt escaped', async () => {
    const r = await rig({ fair: { coldStartMs: 300 } });
    const prompt = 'a red fox <!channel> & <@U0OTHER> in the snow';
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: 'U0ALICE' });
    expect(res.status).toBe(200);
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);

    const [share] = await r.slack.waitFor(() => r.slack.channelFiles().length === 1 && r.slack.channelFiles(), 20_000, 'the image');
    expect(share!.files).toHaveLength(1);
    expect(share!.files[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    expect(share!.files[0]!.filename).toMatch(/\.png$/);
    // The prompt is the image's screen-reader text (alt_txt), as typed: plain text.
    expect(share!.files[0]!.altText).toBe(prompt);
    // Names who asked (a mention) and shows the prompt literally: no ping of the channel or of U0OTHER.
    const caption = captionOf(share!);
    expect(caption.text).toBe(`"a red fox <!channel> & <@U0OTHER> in the snow" (asked by @U0ALICE)`);
    expect(caption.pings).toEqual(['@U0ALICE']);

    // The user's status message ends by pointing at the image; every response_url post was within limits.
    await r.slack.waitFor(() => lastText(r, 'U0ALICE') === DONE, 5_000, 'the done status');
    expect(r.slack.userView('U0ALICE')).toHaveLength(1);
    expect(r.slack.responseUrlPosts.every((p) => p.accepted)).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
  });

  it('acks well inside 3 s while the GPU is cold, then keeps the status up to date, throttled', async () => {
    const r = await rig({ fair: { coldStartMs: 4_500 } });
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'a lighthouse at dusk', user_id: 'U0BOB' });
    expect(res.status).toBe(200);
    expect(res.ackMs).toBeLessThan(1_000);
    expect(r.slack.channelFiles()).toHaveLength(0);
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);

    // While cold, the status is edited in place to say the GPU is warming up.
    await r.slack.waitFor(
      () => r.slack.userView('U0BOB').some((m) => m.via === 'response_url' && /^Warming up the GPU \(\d+ s\)/.test(m.text)),
      10_000,
      'a warming update',
    );
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image');
    await r.slack.waitFor(() => lastText(r, 'U0BOB')?.startsWith('Done'), 5_000, 'the done status');

    const posts = r.slack.responseUrlPosts.filter((p) => p.url === res.responseUrl);
    expect(posts.length).toBeLessThanOrEqual(5);
    expect(posts.every((p) => p.accepted)).toBe(true);
    // One message for the user, edited in place, never a pile of ephemerals.
    expect(r.slack.userView('U0BOB')).toHaveLength(1);
    expect(r.slack.ephemerals).toHaveLength(0);
    // At most one update per ~2 s after the ack (the final one excepted). A 4.5 s cold start
    // has at least one warming edit: at least one gap is compared.
    const progress = [r.slack.acks.find((a) => a.user === 'U0BOB')!.at, ...posts.slice(0, -1).map((p) => p.at)];
    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < progress.length; i++) expect(progress[i]! - progress[i - 1]!).toBeGreaterThanOrEqual(1_900);
    expect(posts.at(-1)!.body.replace_original).toBe(true);
  });

  it('12 commands from 6 users during one cold start: 12 images, one start', async () => {
    const r = await rig({ fair: { coldStartMs: 1_500 } });
    const users = ['U01', 'U02', 'U03', 'U04', 'U05', 'U06'];
    const prompts = users.flatMap((u) => [`${u} a cat in a hat`, `${u} a boat on a lake`]);
    const acks = await Promise.all(prompts.map((p) => r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: p, user_id: p.split(' ')[0]! })));
    for (const a of acks) {
      expect(a.status).toBe(200);
      expect(a.ackMs).toBeLessThan(2_000);
      expect(a.text).toMatch(/^(Queued|Warming up the GPU)/);
    }
    await r.slack.waitFor(() => r.slack.channelFiles().length === 12, 25_000, '12 images');
    expect(r.fair.startPrograms()).toBe(1);
    for (const p of prompts) {
      const share = r.slack.channelFiles().find((s) => captionOf(s).text.startsWith(`"${p}"`));
      expect(share, p).toBeDefined();
      expect(share!.files[0]!.bytes.equals(pngForPrompt(p))).toBe(true);
      expect(captionOf(share!).text).toContain(`asked by @${p.split(' ')[0]}`);
    }
    // Every user's status messages end with "Done"; no response_url was used beyond its limits.
    await r.slack.waitFor(() => r.slack.responseUrlPosts.filter((x) => x.accepted && x.body.text === DONE).length === 12, 5_000, '12 done statuses');
    expect(r.slack.responseUrlPosts.every((p) => p.accepted)).toBe(true);
    for (const a of acks) expect(r.slack.responseUrlPosts.filter((p) => p.url === a.responseUrl).length).toBeLessThanOrEqual(5);
  });

  it('refuses a bad signature and an old timestamp, and queues no job', async () => {
    const r = await rig();
    const bad = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'forged', user_id: 'U0EVE' }, { badSignature: true });
    expect(bad.status).toBe(401);
    const old = await r.slack.sendSlashCommand(
      r.eventsUrl,
      { command: '/imagine', text: 'replayed', user_id: 'U0EVE' },
      { timestamp: Math.floor(Date.now() / 1000) - 6 * 60 },
    );
    expect(old.status).toBe(401);
    const charset = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'odd type', user_id: 'U0EVE' }, { contentType: 'text/plain' });
    expect(charset.status).not.toBe(200);
    // A genuine command afterwards is the only job that ever runs.
    const ok = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'genuine', user_id: 'U0ANN' });
    expect(ok.status).toBe(200);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the genuine image');
    expect(r.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['genuine']);
    expect(r.slack.userView('U0EVE')).toEqual([]);
    expect(r.logs.entries().filter((e) => e.msg === 'job queued')).toHaveLength(1);
    expect(r.logs.text).toMatch(/signature mismatch/);
    expect(r.logs.text).toMatch(/stale/);
  });

  it('refuses an oversized body (413) before it reaches the app', async () => {
    const r = await rig();
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'x'.repeat(300 * 1024), user_id: 'U0BIG' });
    expect(res.status).toBe(413);
    expect(r.slack.userView('U0BIG')).toEqual([]);
  });

  it('refuses an empty prompt and the fourth pending job of one user, in words', async () => {
    const r = await rig({ fair: { coldStartMs: 2_000 } });
    const empty = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: '   ', user_id: 'U0CAT' });
    expect(empty.text).toBe(messages.promptEmpty);
    for (const p of ['one', 'two', 'three']) {
      expect((await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: p, user_id: 'U0CAT' })).text).toMatch(/^(Queued|Warming)/);
    }
    const fourth = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'four', user_id: 'U0CAT' });
    expect(fourth.text).toBe(messages.userLimit(3));
    await r.slack.waitFor(() => r.slack.channelFiles().length === 3, 20_000, 'three images');
  });
});

describe('Slack delivery problems end in a message the user sees', () => {
  it('an upload refused by Slack: one clear message, no image', async () => {
    const r = await rig();
    r.slack.setFault('upload', { status: 413, body: 'file too large' });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'a very large mountain', user_id: 'U0DAN' });
    const expected = escapeMrkdwn(messages.deliveryFailed(slackMessages.uploadRefused('HTTP 413')));
    await r.slack.waitFor(() => lastText(r, 'U0DAN') === expected, 20_000, 'the upload failure message');
    expect(r.slack.channelFiles()).toHaveLength(0);
    expect(r.slack.userView('U0DAN')).toHaveLength(1);
    // 4xx is not retried: one upload attempt.
    expect(r.slack.callsTo('upload')).toHaveLength(1);
    expect(r.logs.text).toMatch(/could not post the image in Slack/);
  });

  it('not in the channel: says to invite the bot', async () => {
    const r = await rig({ slack: { channels: { C0PRIVATE: { member: false } } } });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'a quiet forest', user_id: 'U0EMMA', channel_id: 'C0PRIVATE' });
    const expected = escapeMrkdwn(messages.deliveryFailed(slackMessages.notInChannel));
    await r.slack.waitFor(() => lastText(r, 'U0EMMA') === expected, 20_000, 'the not-in-channel message');
    expect(expected).toMatch(/\/invite @fairbot/);
    expect(r.slack.fileShares).toHaveLength(0);
  });

  it('a rate-limited completeUploadExternal is retried after Retry-After and the image lands', async () => {
    const r = await rig();
    r.slack.setFault('files.completeUploadExternal', { ratelimited: 1, times: 1 });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'a slow river', user_id: 'U0FAY' });
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image after the rate limit');
    expect(r.slack.callsTo('files.completeUploadExternal').map((c) => c.status)).toEqual([429, 200]);
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('a slow river'))).toBe(true);
  });

  it('an expired response_url: changes of phase and the outcome go out with chat.postEphemeral', async () => {
    const r = await rig({ fair: { coldStartMs: 300, diffusion: { generationMs: 4_000 } } });
    r.slack.setFault('upload', { status: 403, times: 1 });
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'an old map', user_id: 'U0GUS' });
    r.slack.expireResponseUrl(res.responseUrl);
    const expected = escapeMrkdwn(messages.deliveryFailed(slackMessages.uploadRefused('HTTP 403')));
    await r.slack.waitFor(() => r.slack.ephemerals.some((e) => e.user === 'U0GUS' && e.text === expected), 20_000, 'the ephemeral failure');
    const seen = r.slack.userView('U0GUS');
    expect(seen[0]!.via).toBe('ack');
    expect(seen.slice(1).map((m) => [m.via, m.text])).toEqual([
      ['ephemeral', 'Generating your image...'],
      ['ephemeral', expected],
    ]);
    // The refused response_url was tried at most once, then given up.
    expect(r.slack.responseUrlPosts.filter((p) => p.url === res.responseUrl).length).toBeLessThanOrEqual(1);
  });

  it('a job interrupted by a restart is resumed, and its status message carries on', async () => {
    const r = await rig({ fair: { coldStartMs: 1_500 } });
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'through a restart', user_id: 'U0MAX' });
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);
    await r.restart(0);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image after the restart');
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('through a restart'))).toBe(true);
    await r.slack.waitFor(() => lastText(r, 'U0MAX') === DONE, 5_000, 'the done status');
    // One status message all along (the restart note and later updates replaced it), within the limits.
    expect(r.slack.userView('U0MAX')).toHaveLength(1);
    const posts = r.slack.responseUrlPosts.filter((p) => p.url === res.responseUrl);
    expect(posts.map((p) => p.body.text)).toContain(slackMessages.restarting);
    expect(posts.length).toBeLessThanOrEqual(5);
    expect(posts.every((p) => p.accepted)).toBe(true);
    expect(r.slack.channelFiles()).toHaveLength(1);
  });

  it('an image generated but not yet posted when the bot stopped is posted once after the restart', async () => {
    const r = await rig();
    r.slack.setFault('upload', { hang: true, times: 1 });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'cut off mid-upload', user_id: 'U0OLA' });
    await r.slack.waitFor(() => r.slack.callsTo('upload').length === 1, 20_000, 'the upload under way');
    await r.restart(0);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image after the restart');
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('cut off mid-upload'))).toBe(true);
    await r.slack.waitFor(() => lastText(r, 'U0OLA') === DONE, 5_000, 'the done status');
    // The recovered job is marked delivered: a further restart does not post it again.
    await r.restart(0);
    expect(r.logs.entries().filter((e) => e.msg === 'job delivered')).toHaveLength(1);
    expect(r.slack.channelFiles()).toHaveLength(1);
    expect(r.fair.diffusion()?.infers.length ?? 0).toBeLessThanOrEqual(1);
  });

  it('after a restart, the response_url posts already used are still counted', async () => {
    const r = await rig({ fair: { coldStartMs: 8_000 } });
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'counted posts', user_id: 'U0NED' });
    // Let the status use a few posts (phase/tick updates), then restart twice.
    await r.slack.waitFor(() => r.slack.responseUrlPosts.filter((p) => p.url === res.responseUrl).length >= 2, 10_000, 'two status updates');
    await r.restart(0);
    await r.restart(0);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 25_000, 'the image');
    await r.slack.waitFor(() => r.app.services.jobs.counts().running === 0 && r.logs.entries().some((e) => e.msg === 'job delivered'), 5_000, 'the delivery');
    const posts = r.slack.responseUrlPosts.filter((p) => p.url === res.responseUrl);
    expect(posts.length).toBeLessThanOrEqual(5);
    expect(posts.every((p) => p.accepted)).toBe(true);
  });

  it('when nothing can reach the user, a log line says why, and the bot keeps serving', async () => {
    const r = await rig();
    // A conversation the bot cannot see, and a response_url that takes no posts.
    const responseUrl = r.slack.newResponseUrl({ userId: 'U0HAL', channelId: 'D0SECRET', maxPosts: 0 });
    await r.slack.sendSlashCommand(r.eventsUrl, {
      command: '/imagine',
      text: 'a secret garden',
      user_id: 'U0HAL',
      channel_id: 'D0SECRET',
      response_url: responseUrl,
    });
    await r.slack.waitFor(
      () => r.logs.entries().find((e) => e.msg === 'could not tell the user the outcome of their command' && /channel_not_found/.test(String(e.why))),
      20_000,
      'the log line',
    );
    const next = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'a public garden', user_id: 'U0HAL' });
    expect(next.status).toBe(200);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the next image');
  });
});

describe('Slack /gpu', () => {
  it('refuses a non-admin in words, and nothing runs', async () => {
    const r = await rig();
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'kill', user_id: 'U0NOBODY' });
    expect(res.status).toBe(200);
    expect(res.text).toBe(messages.adminOnly);
    const status = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'status', user_id: 'U0NOBODY' });
    expect(status.text).toBe(messages.adminOnly);
    expect(r.fair.killPrograms()).toEqual([]);
    expect(r.fair.startPrograms()).toBe(0);
  });

  it('answers a command it does not know with the commands it does', async () => {
    const r = await rig();
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/weather', text: 'tomorrow', user_id: 'U0LEO' });
    expect(res.status).toBe(200);
    expect(res.text).toBe(escapeMrkdwn(slackMessages.unknownCommand('/weather')));
  });

  it('gives admins the usage for no or an unknown subcommand', async () => {
    const r = await rig();
    expect((await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: '', user_id: SLACK_ADMIN })).text).toBe(messages.gpuUsage);
    expect((await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'reboot', user_id: SLACK_ADMIN })).text).toBe(
      messages.gpuUnknownSubcommand('reboot'),
    );
    const status = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'status', user_id: SLACK_ADMIN });
    expect(status.text).toMatch(/^GPU server: /);
  });

  it('admin /gpu kill reaches Fair as a Kill program for the running container', async () => {
    const r = await rig();
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'warm it up', user_id: 'U0IVY' });
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the first image');
    const [container] = [...r.fair.containers.values()];
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'kill', user_id: SLACK_ADMIN });
    expect(res.status).toBe(200);
    expect(res.ackMs).toBeLessThan(3_000);
    await r.slack.waitFor(() => /^Stopped the GPU server/.test(lastText(r, SLACK_ADMIN) ?? ''), 10_000, 'the kill result');
    expect(r.fair.killPrograms()).toEqual([{ node: container!.node, containerId: container!.id }]);
  });

  it('a slow kill is acked at once with "working on it", then the result replaces it', async () => {
    const r = await rig();
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'warm it up again', user_id: 'U0JAN' });
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the first image');
    r.fair.setFault('slow', { times: 1, slowMs: 3_000 });
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'kill', user_id: SLACK_ADMIN });
    expect(res.ackMs).toBeLessThan(3_000);
    expect(res.text).toBe(slackMessages.gpuWorking);
    await r.slack.waitFor(() => /^Stopped the GPU server/.test(lastText(r, SLACK_ADMIN) ?? ''), 10_000, 'the kill result');
    expect(r.slack.userView(SLACK_ADMIN)).toHaveLength(1);
    expect(r.fair.killPrograms()).toHaveLength(1);
  });
});

describe('Slack start-up errors are stated, not crashed on', () => {
  it('a wrong bot token stops the start with the reason', async () => {
    await expect(startSlackRig({ env: { SLACK_BOT_TOKEN: 'xoxb-not-the-right-one' } })).rejects.toThrow(
      'Slack refused SLACK_BOT_TOKEN (auth.test: invalid_auth)',
    );
  });

  it('a wrong app token stops the Socket Mode start with the reason', async () => {
    await expect(startSlackRig({ socketMode: true, env: { SLACK_APP_TOKEN: 'xapp-1-wrong' } })).rejects.toThrow(
      'Slack refused SLACK_APP_TOKEN (apps.connections.open: invalid_auth): it must be an app-level token (xapp-...) with the connections:write scope',
    );
  });
});

describe('Slack Socket Mode', () => {
  it('connects through apps.connections.open and serves /imagine', async () => {
    const r = await rig({ socketMode: true, fair: { coldStartMs: 300 } });
    expect(r.app.slack?.port).toBeUndefined();
    expect(r.slack.callsTo('apps.connections.open')[0]!.token).toBe(r.slack.appToken);
    const res = await r.slack.sendSocketCommand({ command: '/imagine', text: 'a socket of stars', user_id: 'U0JOY' });
    expect(res.ackMs).toBeLessThan(1_000);
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image');
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('a socket of stars'))).toBe(true);
    const gpu = await r.slack.sendSocketCommand({ command: '/gpu', text: 'status', user_id: 'U0JOY' });
    expect(gpu.text).toBe(messages.adminOnly);
  });

  it('reconnects when Slack asks it to, and keeps serving', async () => {
    const r = await rig({ socketMode: true, fair: { coldStartMs: 100 } });
    expect(r.app.slack!.health?.()).toEqual({ ok: true });
    r.slack.disconnectSockets();
    await r.slack.waitFor(() => r.app.slack!.health?.().ok === false, 5_000, 'health to report the lost connection');
    await r.slack.waitFor(() => r.slack.socketConnections === 2 && r.slack.openSockets() === 1, 15_000, 'the reconnection');
    await r.slack.waitFor(() => r.app.slack!.health?.().ok === true, 5_000, 'health to recover');
    expect(r.slack.callsTo('apps.connections.open')).toHaveLength(2);
    const res = await r.slack.sendSocketCommand({ command: '/imagine', text: 'after the reconnect', user_id: 'U0KIM' });
    expect(res.text).toMatch(/^(Queued|Warming up the GPU)/);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image');
  });
});
