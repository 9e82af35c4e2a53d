/**
 * Images waiting for upload (issue 17, item 9): with the platform's uploads stalled, a
 * user's generated-but-not-posted images count toward USER_MAX_PENDING, and the images
 * held in memory are bounded: past the budget, the next generation waits for an upload to end.
 * The real app and Bolt against the Slack stand-in, whose upload URL stops answering.
 */
import { describe, expect, it } from 'vitest';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { messages } from '../src/messages.js';
import { lastSlackText } from './helpers/faults.js';
import { captionOf, slackRigs } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';

const rig = slackRigs();
const uploadsTried = (r: Awaited<ReturnType<typeof rig>>) => r.slack.callsTo('upload').length;

describe('uploads stalled', () => {
  it('images not yet posted count toward USER_MAX_PENDING; once an upload ends, the user may ask again', async () => {
    const r = await rig({ fair: { coldStartMs: 50 }, env: { USER_MAX_PENDING: '3' } });
    r.slack.setFault('upload', { hang: true });
    for (const n of [1, 2, 3]) {
      const ack = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: `stalled ${n}`, user_id: 'U0STALL' });
      expect(ack.text).toMatch(/^(Queued|Warming up the GPU)/);
    }
    // All three generated; their uploads hang.
    await r.slack.waitFor(() => uploadsTried(r) === 3, 15_000, 'three uploads under way');

    const fourth = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'stalled 4', user_id: 'U0STALL' });
    expect(fourth.text).toBe(escapeMrkdwn(messages.userLimit(3)));

    // The uploads finally fail: each user hears it, and the slots are free again.
    r.slack.setFault('upload', undefined);
    r.slack.releaseHanging(500);
    const told = () => r.slack.userView('U0STALL').filter((m) => m.text.startsWith('Your image was generated but could not be posted')).length;
    await r.slack.waitFor(() => told() === 3, 10_000, 'the three failure notices');
    const again = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'after the stall', user_id: 'U0STALL' });
    expect(again.text).toMatch(/^(Queued|Warming up the GPU|Generating)/);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 15_000, 'the image after the stall');
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('after the stall'))).toBe(true);
  });

  it('past the memory budget for images waiting for upload, the next generation waits for an upload to end', async () => {
    // A budget of one byte: one image held at a time.
    const r = await rig({ fair: { coldStartMs: 50 }, app: { heldImageBytesMax: 1 } });
    r.slack.setFault('upload', { hang: true, times: 1 });
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'first, stuck in upload', user_id: 'U0ONE' });
    await r.slack.waitFor(() => uploadsTried(r) === 1, 15_000, 'the first upload under way');
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: 'second, held', user_id: 'U0TWO' });
    await r.slack.waitFor(
      () => r.logs.entries().some((e) => e.msg === 'generation held: images waiting for upload fill the memory budget'),
      10_000,
      'the second generation to be held',
    );
    const diffusion = await r.fair.waitForDiffusion(1_000);
    expect(diffusion.infers.map((i) => i.prompt)).toEqual(['first, stuck in upload']);
    expect(lastSlackText(r.slack, 'U0TWO')).toMatch(/^Queued/);

    // The stuck upload fails: its image leaves memory and the held generation runs and is posted.
    r.slack.releaseHanging(500);
    const share = await r.slack.waitFor(() => r.slack.channelFiles()[0], 15_000, 'the second image');
    expect(share.files[0]!.bytes.equals(pngForPrompt('second, held'))).toBe(true);
    expect(captionOf(share).text).toContain('asked by @U0TWO');
    expect(diffusion.infers.map((i) => i.prompt)).toEqual(['first, stuck in upload', 'second, held']);
    await r.slack.waitFor(() => /could not be posted/.test(lastSlackText(r.slack, 'U0ONE') ?? ''), 10_000, 'the first user told');
  });
});
