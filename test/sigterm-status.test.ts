/**
 * A Slack job whose image is posted during the SIGTERM grace (issue 17, item 6): its user's
 * status message must end as "Done" without the Cancel button, not stay "Generating your
 * image..." with a live Cancel forever. The real bot process, a real SIGTERM.
 */
import { describe, expect, it } from 'vitest';
import { ACTIONS } from '../src/bots/slack/blocks.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { recordedJobs } from './helpers/faults.js';
import { slackEventsUrl, slackProcessRig, spawnBot } from './helpers/faults-process.js';
import { DONE_TEXT } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();

describe('SIGTERM while a Slack job generates', () => {
  it('the image posted in the grace ends its status as Done, without a Cancel button, before the process exits', async () => {
    const { slack, fair, dataDir, env } = await slackProcessRig(cleanup.defer, { coldStartMs: 50, diffusion: { generationMs: 4_000 } });
    const bot = spawnBot(env);
    cleanup.defer(() => bot.kill());
    const url = await slackEventsUrl(bot);
    const prompt = 'an image finished during the grace';
    await slack.sendSlashCommand(url, { command: '/imagine', text: prompt, user_id: 'U0GRACE' });
    const diffusion = await fair.waitForDiffusion(15_000);
    // The status shows the generation, with its Cancel button, when the deploy comes.
    await slack.waitFor(() => slack.userView('U0GRACE').at(-1)?.text.startsWith('Generating your image'), 15_000, 'the generating status');
    expect(diffusion.infers).toHaveLength(1);

    // Slack is slow to take the Re-roll button message that follows the image.
    slack.setDelay('chat.postMessage', 2_000);
    bot.child.kill('SIGTERM');
    expect(await bot.exit(10_000)).toEqual({ code: 0, signal: null });

    expect(slack.channelFiles()).toHaveLength(1);
    expect(slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    expect(recordedJobs(dataDir).map((j) => j.state)).toEqual(['delivered']);
    const status = slack.userView('U0GRACE');
    expect(status).toHaveLength(1);
    expect(status[0]!.text).toBe(DONE_TEXT);
    expect(slack.buttons(status[0]).map((b) => b.action_id)).not.toContain(ACTIONS.cancel);
  }, 60_000);
});
