/**
 * Every fault has an answer (issue 5), through the real app and adapters against the
 * stand-ins: what the user reads when the Fair control plane is down, failing, slow or
 * refuses the login, when the cluster has no such node, and when Discord or Slack
 * rate-limit the delivery of an image (delivered late, not lost).
 *
 * Already covered elsewhere (not repeated here):
 *  - host port taken, a diffusion server answers there / nothing answers: test/lifecycle.test.ts
 *    ("host port already allocated");
 *  - the diffusion server crashing, hanging past INFER_TIMEOUT_S, answering 503 or garbage:
 *    test/inference.test.ts ("bad answers through the job pipeline") and test/lifecycle.test.ts ("crashes");
 *  - /gpu kill with jobs waiting or running: test/lifecycle.test.ts ("/gpu kill");
 *  - one Slack 429 on files.completeUploadExternal: test/slack.e2e.test.ts.
 *
 * The Discord stand-in has no 429 fault: a forwarding proxy in front of it answers chosen
 * REST calls with Discord's 429 (test/helpers/faults.ts). Slack 429s beyond the Web API
 * client's own retries are waited out by the adapter (the last test).
 */
import { describe, expect, it } from 'vitest';
import { discordMessages, messages } from '../src/messages.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { eventually, FAST_TIMING } from './helpers/app.js';
import { discordRateLimit, lastSlackText, recordedJobs, startProxiedDiscordRig, type ProxiedDiscordRig } from './helpers/faults.js';
import { registerSecret } from './helpers/secret-scan.js';
import { SLACK_ADMIN, startSlackRig, type SlackRig } from './helpers/slack.js';
import { snowflake } from './standins/discord.js';
import { pngForPrompt } from './standins/png.js';
import { cleanupAfterEach } from './helpers/cleanup.js';

const cleanup = cleanupAfterEach();
const slackRig = (opts: Parameters<typeof startSlackRig>[0] = {}): Promise<SlackRig> => cleanup.closing(startSlackRig(opts));
const discordRig = (opts: Parameters<typeof startProxiedDiscordRig>[0] = {}): Promise<ProxiedDiscordRig> => cleanup.closing(startProxiedDiscordRig(opts));

/** Sends /imagine and waits for the user's last message to be a final one (not progress). */
async function imagineUntilFinal(r: SlackRig, user: string, prompt: string, timeoutMs = 15_000): Promise<string> {
  const ack = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: user });
  expect(ack.status).toBe(200);
  return r.slack.waitFor(
    () => {
      const text = lastSlackText(r.slack, user);
      return text && !/^(Queued|Warming up the GPU|Retrying the GPU start|Generating your image)/.test(text) ? text : undefined;
    },
    timeoutMs,
    `a final message for ${user}`,
  );
}

const loginRequests = (r: SlackRig) => r.fair.requests.filter((q) => q.method === 'POST' && q.path === '/api/v0/auth/login');
const startFailures = (r: SlackRig) => r.logs.entries().filter((e) => e.msg === 'GPU server start failed');

describe('the Fair control plane is down, failing or slow', () => {
  it('down (connections reset): retries with growing waits until STARTUP_TIMEOUT_S, then tells the user why', async () => {
    const r = await slackRig({ env: { STARTUP_TIMEOUT_S: '1' } });
    r.fair.setFault('down');
    const text = await imagineUntilFinal(r, 'U0DOWN', 'a fox while Fair is down');
    // The reason names the call and the host; the network error code is the OS's word for the reset.
    const code = /cannot reach 127\.0\.0\.1:\d+ \(([A-Z_]+)\)/.exec(text)?.[1];
    expect(text).toBe(escapeMrkdwn(messages.startupFailed(`POST /auth/login: cannot reach 127.0.0.1:${r.fair.port} (${code})`)));

    // Retried within the window, with the waits of the retry policy between attempts, and no more.
    const logins = loginRequests(r);
    expect(logins.length).toBeGreaterThanOrEqual(3);
    const waits = FAST_TIMING.fairRetryMs!;
    for (let i = 1; i < logins.length; i++) {
      expect(logins[i]!.at - logins[i - 1]!.at).toBeGreaterThanOrEqual(waits[Math.min(i - 1, waits.length - 1)]! - 2);
    }
    expect(logins.length).toBeLessThanOrEqual(1 + Math.ceil(1_000 / waits.at(-1)!) + waits.length);
    // Each failed call was logged (the last one too, unless the deadline fell while it was in flight).
    const retries = r.logs.entries().filter((e) => e.msg === 'Fair call failed; retrying').length;
    expect([logins.length - 1, logins.length]).toContain(retries);
    expect(r.fair.startPrograms()).toBe(0);
    expect(r.slack.channelFiles()).toHaveLength(0);
    expect(recordedJobs(r.app.services.config.dataDir).map((j) => j.state)).toEqual(['failed']);
  });

  it('answering 500: retries, then "Could not start the GPU server" with what Fair said', async () => {
    const r = await slackRig({ env: { STARTUP_TIMEOUT_S: '1' } });
    r.fair.setFault('500');
    const text = await imagineUntilFinal(r, 'U0FIVE', 'a fox while Fair fails');
    expect(text).toBe(escapeMrkdwn(messages.startupFailed('POST /auth/login answered 500: internal server error')));
    expect(loginRequests(r).length).toBeGreaterThanOrEqual(3);
    expect(r.fair.startPrograms()).toBe(0);
  });

  it('a passing 5xx is absorbed: the image still arrives, from one start', async () => {
    const r = await slackRig();
    r.fair.setFault('500', { times: 2 });
    const text = await imagineUntilFinal(r, 'U0BLIP', 'a fox after a blip');
    expect(text).toBe(messages.progress({ type: 'done', image: { bytes: Buffer.alloc(0), mime: 'image/png', extension: 'png' }, generationMs: 0 }));
    expect(r.slack.channelFiles()).toHaveLength(1);
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('a fox after a blip'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
  });

  it('slow beyond STARTUP_TIMEOUT_S: the user hears it within the window, not when Fair finally answers', async () => {
    const r = await slackRig({ env: { STARTUP_TIMEOUT_S: '1' } });
    // Every call takes 60 s: far beyond the 1 s window (and the test's deadline below).
    r.fair.setFault('slow', { slowMs: 60_000 });
    const text = await imagineUntilFinal(r, 'U0SLOW', 'a fox while Fair is slow', 10_000);
    expect(text).toBe(escapeMrkdwn(messages.startupFailed('the Fair control plane did not answer within 1 s (STARTUP_TIMEOUT_S)')));
    expect(r.fair.startPrograms()).toBe(0);
    expect(startFailures(r)).toHaveLength(1);
  });

  it('slow but within STARTUP_TIMEOUT_S: the image arrives, from one start', async () => {
    const r = await slackRig();
    r.fair.setFault('slow', { slowMs: 150 });
    await imagineUntilFinal(r, 'U0PATIENT', 'a patient fox', 25_000);
    expect(r.slack.channelFiles()).toHaveLength(1);
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('a patient fox'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
  });
});

describe('Fair refuses the login', () => {
  it('tells the user, logs an error naming FAIR_EMAIL and FAIR_PASSWORD, and never storms Fair with logins', async () => {
    const wrong = 'wrong-password-for-faults-test';
    registerSecret(wrong);
    const r = await slackRig({ env: { FAIR_PASSWORD: wrong, USER_MAX_PENDING: '5' } });
    const expected = escapeMrkdwn(messages.startupFailed('Fair refused the login (invalid email or password); check FAIR_EMAIL and FAIR_PASSWORD'));

    // Three users at once, then one more after each failure: every one of them reads the reason.
    const burst = await Promise.all(['U0L1', 'U0L2', 'U0L3'].map((u) => imagineUntilFinal(r, u, `burst from ${u}`)));
    expect(burst).toEqual([expected, expected, expected]);
    for (const u of ['U0L4', 'U0L5', 'U0L6']) expect(await imagineUntilFinal(r, u, `later from ${u}`)).toBe(expected);

    // One login per start attempt (a refusal is not retried inside an attempt), at most one attempt
    // per job, and the attempts spaced by the growing backoff.
    const logins = loginRequests(r);
    const attempts = startFailures(r);
    expect(logins.length).toBe(attempts.length);
    expect(logins.length).toBeGreaterThanOrEqual(4);
    expect(logins.length).toBeLessThanOrEqual(6);
    const backoff = FAST_TIMING.backoffMs!;
    for (let i = 1; i < logins.length; i++) {
      expect(logins[i]!.at - logins[i - 1]!.at).toBeGreaterThanOrEqual(backoff[Math.min(i - 1, backoff.length - 1)]! - 2);
    }
    for (const e of attempts) {
      expect(e.level).toBe(50);
      expect(String(e.reason)).toContain('check FAIR_EMAIL and FAIR_PASSWORD');
    }
    expect(r.fair.startPrograms()).toBe(0);
    expect(r.logs.text).not.toContain(wrong);
  });
});

describe('no node to run on', () => {
  it('a cluster without nodes: the user is told so, and /gpu status shows it to admins', async () => {
    const r = await slackRig({ fair: { nodes: [] } });
    const text = await imagineUntilFinal(r, 'U0NONODE', 'a fox nowhere');
    expect(text).toBe(escapeMrkdwn(messages.startupFailed('the Fair cluster has no nodes')));
    const status = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'status', user_id: SLACK_ADMIN });
    expect(status.text).toContain(`Last error: ${escapeMrkdwn(messages.startupFailed('the Fair cluster has no nodes'))}`);
    expect(r.fair.startPrograms()).toBe(0);
  });

  it('FAIR_NODE not in the cluster: the message lists the nodes that exist, for the user and in /gpu status', async () => {
    const r = await slackRig({
      fair: {
        nodes: [
          { node_id: 'gpu-a', host_address: '127.0.0.1' },
          { node_id: 'gpu-b', host_address: '127.0.0.1' },
        ],
      },
      env: { FAIR_NODE: 'gpu-z' },
    });
    const reason = 'FAIR_NODE "gpu-z" is not a node of this cluster (nodes: gpu-a, gpu-b)';
    expect(await imagineUntilFinal(r, 'U0WRONG', 'a fox on the wrong node')).toBe(escapeMrkdwn(messages.startupFailed(reason)));
    const status = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'status', user_id: SLACK_ADMIN });
    expect(status.text).toContain(`Last error: ${escapeMrkdwn(messages.startupFailed(reason))}`);
    expect(r.fair.startPrograms()).toBe(0);
    expect(r.fair.rejections).toEqual([]);
  });
});

describe('Discord rate-limits the delivery (429 with retry_after): delivered late, not lost', () => {
  const alice = { userId: snowflake(Date.now() - 9e9), userName: 'alice' };
  const isImageEdit = (req: { method?: string; url?: string; headers: Record<string, unknown> }) =>
    req.method === 'PATCH' &&
    /\/webhooks\/\d+\/[^/]+\/messages\/(%40|@)original$/.test(req.url ?? '') &&
    String(req.headers['content-type'] ?? '').startsWith('multipart/form-data');

  it('the edit that carries the image is refused twice with 429, then lands once, bytes exact', async () => {
    const r = await discordRig({ fair: { coldStartMs: 50 } });
    r.proxy.inject(isImageEdit, discordRateLimit(1), 2);
    const prompt = 'a rate-limited lighthouse';
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...alice });
    const reply = await r.discord.waitFor(
      () => {
        const m = r.discord.originalMessage(id);
        return m && m.attachments.length > 0 ? m : undefined;
      },
      20_000,
      'the image in the reply',
    );
    expect(reply.attachments).toHaveLength(1);
    expect(reply.attachments[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    expect(reply.content).toContain(prompt);
    // Refused twice at the proxy, then one upload reached Discord; nothing went to the channel instead.
    const uploads = r.proxy.requests.filter((q) => q.method === 'PATCH' && q.contentType.startsWith('multipart/form-data'));
    await eventually(() => uploads.every((q) => q.status !== 0), 5_000, 'the proxy to see every answer');
    expect(uploads.map((q) => q.status)).toEqual([429, 429, 200]);
    expect(uploads[2]!.at - uploads[1]!.at).toBeGreaterThanOrEqual(900); // retry_after was respected
    expect(r.discord.webhookMessages.filter((w) => w.files.length > 0)).toHaveLength(1);
    expect(r.discord.channelPosts()).toHaveLength(0);
    // The log is no event of the stand-in's: poll it (the stand-in's waitFor wakes on its own events).
    await eventually(() => r.logs.entries().some((e) => e.msg === 'job delivered'), 5_000, 'the delivery to be recorded');
  });

  it('a channel post (interaction token expired) refused with 429 is sent again after retry_after, once', async () => {
    const r = await discordRig({ fair: { coldStartMs: 800 } });
    const isChannelPost = (req: { method?: string; url?: string }) => req.method === 'POST' && /\/channels\/\d+\/messages$/.test(req.url ?? '');
    r.proxy.inject(isChannelPost, discordRateLimit(1), 1);
    const prompt = 'a late and rate-limited sunrise';
    const { id } = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt }, ...alice });
    await r.discord.waitFor(() => r.discord.callbacks.find((c) => c.interactionId === id), 5_000, 'the acknowledgement');
    r.discord.ageInteraction(id, 15 * 60_000);
    const post = await r.discord.waitFor(() => r.discord.channelPosts().find((m) => m.attachments.length > 0), 20_000, 'the image in the channel');
    expect(post.attachments[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    expect(post.content).toBe(discordMessages.lateImage(`<@${alice.userId}>`, `"${prompt}" (asked by <@${alice.userId}>)`));
    expect(post.mentions).toEqual({ users: [alice.userId], roles: [], everyone: false });
    const posts = r.proxy.requests.filter((q) => q.method === 'POST' && /\/channels\/\d+\/messages$/.test(q.path));
    await eventually(() => posts.every((q) => q.status !== 0), 5_000, 'the proxy to see every answer');
    expect(posts.map((q) => q.status)).toEqual([429, 200]);
    expect(r.discord.channelPosts()).toHaveLength(1);
  });

  it('a refusal text is not lost to a 429 either', async () => {
    const r = await discordRig({ env: { USER_MAX_PENDING: '1' }, fair: { coldStartMs: 1_000 } });
    const first = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'one at a time' }, ...alice });
    await r.discord.waitFor(() => r.discord.callbacks.find((c) => c.interactionId === first.id), 5_000, 'the first acknowledgement');
    // The refusal of the second job is an interaction callback; rate-limit it once.
    r.proxy.inject((req) => req.method === 'POST' && /\/interactions\/\d+\/[^/]+\/callback/.test(req.url ?? ''), discordRateLimit(1), 1);
    const second = r.discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'and another' }, ...alice });
    const refusal = await r.discord.waitFor(
      () => {
        const m = r.discord.originalMessage(second.id);
        return m?.content === messages.userLimit(1) ? m : undefined;
      },
      10_000,
      'the refusal',
    );
    expect(refusal.ephemeral).toBe(true);
    const callbacks = r.proxy.requests.filter((q) => /\/interactions\/\d+\/[^/]+\/callback/.test(q.path));
    await eventually(() => callbacks.every((q) => q.status !== 0), 5_000, 'the proxy to see every answer');
    expect(callbacks.map((q) => q.status)).toEqual([204, 429, 204]);
  });
});

describe('Slack rate-limits the delivery', () => {
  // The WebClient retries three 429s itself; past those, the adapter tries the upload again (deliver.ts).
  it('rate-limited more times in a row than the Web API client retries: the image still lands, once', async () => {
    const r = await slackRig();
    r.slack.setFault('files.completeUploadExternal', { ratelimited: 1, times: 5 });
    const prompt = 'a patiently uploaded river';
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: 'U0RATE' });
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 25_000, 'the image after the rate limits');
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    expect(r.slack.callsTo('files.completeUploadExternal').map((c) => c.status)).toEqual([429, 429, 429, 429, 429, 200]);
  });
});
