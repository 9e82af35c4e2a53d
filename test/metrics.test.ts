// /metrics and /healthz (METRICS_PORT) through the real app: jobs run through Slack (the
// real Bolt app against the Slack stand-in, the Fair and diffusion stand-ins behind it),
// then the Prometheus text is scraped over HTTP, parsed, and compared with what happened.
import { afterEach, describe, expect, it } from 'vitest';
import { ACTIONS } from '../src/bots/slack/blocks.js';
import { messages } from '../src/messages.js';
import { lastSeen, startSlackRig, type SlackRig } from './helpers/slack.js';

const rigs: SlackRig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0).reverse()) await r.close();
});

async function rig(opts: Parameters<typeof startSlackRig>[0] = {}): Promise<SlackRig> {
  const r = await startSlackRig({ ...opts, env: { METRICS_PORT: '0', ...opts.env } });
  rigs.push(r);
  return r;
}

/** One sample: `name{a="b",c="d"} value`, labels sorted. */
type Samples = Map<string, number>;

/** Parses the Prometheus text exposition format (enough of it: samples, labels, escapes). */
function parsePrometheus(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: string[] = [];
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/g;
    for (const l of (m[2] ?? '').matchAll(re)) labels.push(`${l[1]}="${l[2]}"`);
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`bad value in: ${line}`);
    samples.set(labels.length ? `${m[1]}{${labels.sort().join(',')}}` : m[1]!, value);
  }
  return samples;
}

async function scrape(r: SlackRig): Promise<{ contentType: string; samples: Samples }> {
  const res = await fetch(`http://127.0.0.1:${r.app.metricsPort}/metrics`);
  expect(res.status).toBe(200);
  return { contentType: res.headers.get('content-type') ?? '', samples: parsePrometheus(await res.text()) };
}

async function healthz(r: SlackRig): Promise<{ status: number; body: { ok: boolean; reason?: string } }> {
  const res = await fetch(`http://127.0.0.1:${r.app.metricsPort}/healthz`);
  return { status: res.status, body: (await res.json()) as { ok: boolean; reason?: string } };
}

const DONE = messages.progress({ type: 'done', image: { bytes: Buffer.alloc(0), mime: 'image/png', extension: 'png' }, generationMs: 0 });
const sum = (s: Samples, prefix: string) => [...s].filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);

describe('/metrics after jobs through Slack', () => {
  it('counts jobs by outcome, generations, the cold start, the GPU and Slack API errors', async () => {
    const r = await rig({ fair: { coldStartMs: 1_500 } });
    expect(r.app.metricsPort).toBeGreaterThan(0);
    expect(await healthz(r)).toEqual({ status: 200, body: { ok: true } });

    // 1. Two jobs during the cold start; the second one's owner cancels it.
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'first light', user_id: 'U0ONE' });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'cancelled', user_id: 'U0TWO' });
    const during = await scrape(r);
    expect(during.samples.get('fairbot_queue_depth')).toBe(1);
    expect(during.samples.get('fairbot_gpu_server_up')).toBe(0);
    await r.slack.click(r.eventsUrl, 'U0TWO', lastSeen(r.slack, 'U0TWO'), ACTIONS.cancel);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0TWO')?.text === messages.cancelled, 5_000, 'the cancellation');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the first image');

    // 2. A job the diffusion server fails (HTTP 500).
    (await r.fair.waitForDiffusion()).setFault('500', { times: 1 });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'broken', user_id: 'U0THREE' });
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0THREE')?.text.startsWith('Image generation failed'), 20_000, 'the failure');

    // 3. A job whose image lands but whose Re-roll button Slack refuses (an API error).
    r.slack.setFault('chat.postMessage', { error: 'fatal_error', times: 1 });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'second light', user_id: 'U0FOUR' });
    await r.slack.waitFor(() => r.slack.channelFiles().length === 2, 20_000, 'the second image');

    // A delivered job is counted before its status says Done: wait for both statuses.
    for (const u of ['U0ONE', 'U0FOUR']) await r.slack.waitFor(() => lastSeen(r.slack, u)?.text === DONE, 5_000, `${u}'s done status`);
    const scraped = await scrape(r);
    expect(scraped.contentType).toMatch(/^text\/plain/);
    const samples = scraped.samples;
    expect(samples.get('fairbot_jobs_total{outcome="delivered"}')).toBe(2);
    expect(samples.get('fairbot_jobs_total{outcome="inference-failed"}')).toBe(1);
    expect(samples.get('fairbot_jobs_total{outcome="cancelled"}')).toBe(1);
    expect(sum(samples, 'fairbot_jobs_total{')).toBe(4);
    expect(samples.get('fairbot_queue_depth')).toBe(0);
    expect(samples.get('fairbot_jobs_running')).toBe(0);
    // Only successful generations are timed; the histogram's buckets add up.
    expect(samples.get('fairbot_generation_seconds_count')).toBe(2);
    expect(samples.get('fairbot_generation_seconds_bucket{le="+Inf"}')).toBe(2);
    expect(samples.get('fairbot_generation_seconds_sum')).toBeGreaterThan(0);
    expect(samples.get('fairbot_cold_starts_total')).toBe(1);
    expect(samples.get('fairbot_cold_start_seconds_count')).toBe(1);
    expect(samples.get('fairbot_cold_start_seconds_sum')).toBeGreaterThanOrEqual(1.4);
    expect(samples.get('fairbot_gpu_server_up')).toBe(1);
    expect(samples.get('fairbot_platform_api_errors_total{code="fatal_error",platform="slack"}')).toBe(1);
    expect(sum(samples, 'fairbot_platform_api_errors_total{')).toBe(1);
    expect(r.fair.startPrograms()).toBe(1);
    expect(await healthz(r)).toEqual({ status: 200, body: { ok: true } });
  });

  it('counts a refused upload and a refused ephemeral as Slack API errors', async () => {
    const r = await rig({ fair: { coldStartMs: 200 }, slack: { channels: { C0PRIVATE: { member: false } } } });
    // Not in the channel: the upload is refused, and so is the ephemeral fallback (the
    // response_url is spent), so both errors are counted.
    const responseUrl = r.slack.newResponseUrl({ userId: 'U0EMMA', channelId: 'C0PRIVATE', maxPosts: 0 });
    await r.slack.sendSlashCommand(r.eventsUrl, {
      command: '/imagine',
      text: 'nowhere',
      user_id: 'U0EMMA',
      channel_id: 'C0PRIVATE',
      response_url: responseUrl,
    });
    await r.slack.waitFor(
      () => r.logs.entries().some((e) => e.msg === 'could not tell the user the outcome of their command'),
      20_000,
      'the undeliverable outcome',
    );
    const { samples } = await scrape(r);
    expect(samples.get('fairbot_platform_api_errors_total{code="not_in_channel",platform="slack"}')).toBeGreaterThanOrEqual(2);
    expect(samples.get('fairbot_jobs_total{outcome="delivery-failed"}')).toBe(1);
  });
});

describe('/healthz with Slack over Socket Mode', () => {
  it('is 503 with the reason while the Socket Mode connection is down, 200 again once it is back', async () => {
    const r = await rig({ socketMode: true });
    expect(await healthz(r)).toEqual({ status: 200, body: { ok: true } });
    // Slack asks for a reconnect, and apps.connections.open fails twice (retried about a second apart).
    r.slack.setFault('apps.connections.open', { status: 500, times: 2 });
    r.slack.disconnectSockets();
    await r.slack.waitFor(() => r.app.slack!.health?.().ok === false, 5_000, 'the lost connection');
    expect(await healthz(r)).toEqual({ status: 503, body: { ok: false, reason: 'slack: Socket Mode not connected' } });
    await r.slack.waitFor(
      () => r.slack.callsTo('apps.connections.open').some((c) => c.status === 200 && c !== r.slack.callsTo('apps.connections.open')[0]),
      15_000,
      'the reconnection',
    );
    await r.slack.waitFor(() => r.app.slack!.health?.().ok === true, 15_000, 'health to recover');
    expect(await healthz(r)).toEqual({ status: 200, body: { ok: true } });
  });
});
