/**
 * A deploy (`docker stop` sends SIGTERM) with the real bot process: a job is on the GPU,
 * another waits behind it. The process finishes the first (its image is posted), records
 * the second, and exits 0 within docker's 10 s. Started again on the same DATA_DIR, it
 * runs the second job and posts its image exactly once; nothing is delivered twice.
 *
 * The bot runs as `node --import tsx src/main.ts` (what `npm start` runs, from source),
 * against the Slack, Fair and diffusion stand-ins of this test process.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { messages, slackMessages } from '../src/messages.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { imagesByPrompt, lastSlackText, recordedJobs } from './helpers/faults.js';
import { slackEventsUrl, slackProcessRig, spawnBot } from './helpers/faults-process.js';
import { pngForPrompt } from './standins/png.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** docker stop's SIGKILL comes 10 s after SIGTERM. */
const DOCKER_STOP_GRACE_MS = 10_000;

describe('SIGTERM (docker stop) with a job on the GPU and one queued', () => {
  it('finishes the running job, records the queued one, exits 0; the next start runs it and posts it once', async () => {
    const { slack, fair, dataDir, env } = await slackProcessRig((fn) => cleanups.push(fn), {
      coldStartMs: 50,
      diffusion: { generationMs: 2_500 },
    });
    const running = 'the job on the GPU at SIGTERM';
    const queued = 'the job waiting behind it';

    // --- first run: one job generating, one waiting ---------------------------------
    const first = spawnBot(env);
    cleanups.push(() => first.kill());
    const firstUrl = await slackEventsUrl(first);
    const a = await slack.sendSlashCommand(firstUrl, { command: '/imagine', text: running, user_id: 'U0RUN' });
    expect(a.status).toBe(200);
    const diffusion = await fair.waitForDiffusion(15_000);
    await slack.waitFor(() => diffusion.infers.length === 1, 15_000, 'the first generation to start');
    const b = await slack.sendSlashCommand(firstUrl, { command: '/imagine', text: queued, user_id: 'U0WAIT' });
    expect(b.text).toMatch(/^Queued: you are next/);

    first.child.kill('SIGTERM');
    expect(await first.exit(DOCKER_STOP_GRACE_MS)).toEqual({ code: 0, signal: null });

    // The running job finished and its image is in the channel; the waiting one is recorded,
    // not failed, and its user was told it is kept.
    expect(imagesByPrompt(slack, [running, queued])).toEqual({ [running]: 1 });
    expect(slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt(running))).toBe(true);
    expect(recordedJobs(dataDir).map((j) => [j.prompt, j.state])).toEqual([
      [running, 'delivered'],
      [queued, 'queued'],
    ]);
    expect(lastSlackText(slack, 'U0WAIT')).toBe(escapeMrkdwn(slackMessages.restarting));
    expect(diffusion.infers.map((i) => i.prompt)).toEqual([running]);

    // --- second run on the same DATA_DIR ----------------------------------------------
    const second = spawnBot(env);
    cleanups.push(() => second.kill());
    await slackEventsUrl(second);
    await slack.waitFor(() => imagesByPrompt(slack, [running, queued])[queued] === 1, 20_000, "the queued job's image");
    await second.waitForLog((e) => e.msg === 'job delivered', 10_000, 'the delivery');
    await slack.waitFor(
      () =>
        lastSlackText(slack, 'U0WAIT') ===
        messages.progress({ type: 'done', image: { bytes: Buffer.alloc(0), mime: 'image/png', extension: 'png' }, generationMs: 0 }),
      10_000,
      'the done status',
    );

    second.child.kill('SIGTERM');
    expect(await second.exit(DOCKER_STOP_GRACE_MS)).toEqual({ code: 0, signal: null });

    // Each image exactly once; each prompt generated once; the server the first run started was reused.
    expect(imagesByPrompt(slack, [running, queued])).toEqual({ [running]: 1, [queued]: 1 });
    expect(slack.channelFiles().find((s) => s.files[0]!.bytes.equals(pngForPrompt(queued)))).toBeDefined();
    expect(diffusion.infers.map((i) => i.prompt)).toEqual([running, queued]);
    expect(fair.startPrograms()).toBe(1);
    expect(recordedJobs(dataDir).map((j) => [j.prompt, j.state])).toEqual([
      [running, 'delivered'],
      [queued, 'delivered'],
    ]);
    expect(second.entries.filter((e) => e.msg === 'jobs recovered from the last run').map((e) => e.recovered)).toEqual([1]);
    expect(first.stderr()).toBe('');
    expect(second.stderr()).toBe('');
  }, 90_000);
});
