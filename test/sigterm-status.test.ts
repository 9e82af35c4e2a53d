/**
 * A Slack job whose image is posted during the SIGTERM grace (issue 17, item 6): its user's
 * status message must end as "Done" without the Cancel button, not stay "Generating your
 * image..." with a live Cancel forever. The real bot process, a real SIGTERM.
 */
import { describe, expect, it } from 'vitest';
import { ACTIONS } from '../src/bots/slack/blocks.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { fairEnv, FAIR_EMAIL, FAIR_PASSWORD, tempDir } from './helpers/app.js';
import { recordedJobs } from './helpers/faults.js';
import { slackEventsUrl, spawnBot } from './helpers/faults-process.js';
import { DONE_TEXT } from './helpers/slack.js';
import { freePort, startFairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';
import { startSlackStandin } from './standins/slack.js';

const cleanup = cleanupAfterEach();

describe('SIGTERM while a Slack job generates', () => {
  it('the image posted in the grace ends its status as Done, without a Cancel button, before the process exits', async () => {
    const slack = await startSlackStandin();
    cleanup.defer(() => slack.close());
    const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, coldStartMs: 50, diffusion: { generationMs: 4_000 } });
    cleanup.defer(() => fair.close());
    const dir = tempDir('fairbot-sigterm-status-');
    cleanup.defer(() => dir.remove());
    const env = fairEnv(fair, await freePort(), dir.path, {
      SLACK_BOT_TOKEN: slack.botToken,
      SLACK_SIGNING_SECRET: slack.signingSecret,
      SLACK_API_URL: slack.apiUrl,
      SLACK_PORT: '0',
      LOG_LEVEL: 'info',
    });
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
    expect(recordedJobs(dir.path).map((j) => j.state)).toEqual(['delivered']);
    const status = slack.userView('U0GRACE');
    expect(status).toHaveLength(1);
    expect(status[0]!.text).toBe(DONE_TEXT);
    expect(slack.buttons(status[0]).map((b) => b.action_id)).not.toContain(ACTIONS.cancel);
  }, 60_000);
});
