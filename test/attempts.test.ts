/**
 * The crash-loop guard (issue 17, item 5): a job whose generation was under way when the bot
 * crashed three times is dropped with a message, but a deploy (SIGTERM, a clean shutdown that
 * suspends the job) is no crash, however often it happens during a long generation.
 */
import { describe, expect, it } from 'vitest';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { messages } from '../src/messages.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { lastSlackText, recordedJobs } from './helpers/faults.js';
import { slackEventsUrl, slackProcessRig, spawnBot } from './helpers/faults-process.js';
import { startSlackRig } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();

describe('attempts of a job across restarts', () => {
  it('three deploys (SIGTERM) during a long generation do not drop the job: the fourth run posts its image', async () => {
    const r = await cleanup.closing(startSlackRig({ fair: { coldStartMs: 50, diffusion: { generationMs: 1_500 } } }));
    const prompt = 'a generation longer than the grace';
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: 'U0DEPLOY' });
    const diffusion = await r.fair.waitForDiffusion(15_000);
    for (const generation of [1, 2, 3]) {
      await r.slack.waitFor(() => diffusion.infers.length === generation, 15_000, `generation ${generation} to start`);
      await r.restart(20); // the grace ends before the generation does: the job is suspended
    }
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 15_000, 'the image after the fourth start');
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    expect(diffusion.infers.map((i) => i.prompt)).toEqual([prompt, prompt, prompt, prompt]);
  }, 60_000);

  it('a job that was generating when the bot crashed (kill -9) three times is dropped, with a message, after exactly three', async () => {
    // The generation never ends on its own: every run of the bot crashes in the middle of it.
    const { slack, fair, dataDir, env } = await slackProcessRig(cleanup.defer, { coldStartMs: 50, diffusion: { generationMs: 120_000 } });
    const prompt = 'a prompt that crashes the bot';

    for (const crash of [1, 2, 3]) {
      const bot = spawnBot(env);
      cleanup.defer(() => bot.kill());
      const url = await slackEventsUrl(bot);
      if (crash === 1) await slack.sendSlashCommand(url, { command: '/imagine', text: prompt, user_id: 'U0CRASH' });
      const diffusion = await fair.waitForDiffusion(15_000);
      await slack.waitFor(() => diffusion.infers.length === crash, 20_000, `generation ${crash} to start`);
      bot.child.kill('SIGKILL');
      await bot.exit(10_000);
    }

    // The fourth start: no fourth generation; the user is told why.
    const last = spawnBot(env);
    cleanup.defer(() => last.kill());
    await slackEventsUrl(last);
    const dropped = messages.inferenceFailed('the job was tried 3 times without finishing');
    await slack.waitFor(() => lastSlackText(slack, 'U0CRASH') === escapeMrkdwn(dropped), 15_000, 'the message that the job was dropped');
    await last.waitForLog((e) => e.msg === 'job dropped after repeated attempts', 5_000, 'the drop');
    const diffusion = await fair.waitForDiffusion(1_000);
    expect(diffusion.infers.map((i) => i.prompt)).toEqual([prompt, prompt, prompt]);
    expect(recordedJobs(dataDir).map((j) => j.state)).toEqual(['failed']);
    last.child.kill('SIGTERM');
    expect(await last.exit(10_000)).toEqual({ code: 0, signal: null });
  }, 120_000);
});
