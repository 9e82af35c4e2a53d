// Slack buttons end to end (issue 7): Re-roll under each image, Cancel on a job's
// status, Confirm / Keep for /gpu kill, /gpu status as Block Kit, escaped captions,
// ETAs and throttled status edits. The real app (startApp) and Bolt against the Slack
// stand-in over real sockets; clicks are signed block_actions posts (HTTP) or
// `interactive` envelopes (Socket Mode), as Slack sends them.
import { describe, expect, it } from 'vitest';
import { ACTIONS } from '../src/bots/slack/blocks.js';
import { messages, slackMessages } from '../src/messages.js';
import { captionOf, DONE_TEXT as DONE, lastSeen, rerollPosts, SLACK_ADMIN, slackRigs, type SlackRig } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';
import { renderSlackMessage } from './standins/slack.js';

const rig = slackRigs();
const STATUS = /^(Queued|Warming up the GPU|Retrying the GPU start|Generating your image)/;
const actionIds = (r: SlackRig, m: { blocks?: unknown } | undefined) => r.slack.buttons(m).map((b) => b.action_id);

async function imagine(r: SlackRig, user: string, prompt: string) {
  const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: user });
  expect(res.status).toBe(200);
  return res;
}

describe('Slack Re-roll', () => {
  it('a click makes a second image for the clicker, with the same bytes, and leaves the first alone', async () => {
    const r = await rig({ fair: { coldStartMs: 300 } });
    const prompt = 'a red fox in the snow';
    await imagine(r, 'U0ALICE', prompt);
    await r.slack.waitFor(() => rerollPosts(r.slack).length === 1, 20_000, 'the image and its Re-roll button');
    const [first] = r.slack.channelFiles();
    expect(first!.files[0]!.bytes.equals(pngForPrompt(prompt))).toBe(true);
    const [button] = rerollPosts(r.slack);
    expect(r.slack.buttons(button)).toMatchObject([{ action_id: ACTIONS.reroll, text: slackMessages.rerollButton }]);
    expect(renderSlackMessage(button!).text).toContain(`"${prompt}"`);

    const click = await r.slack.click(r.eventsUrl, 'U0BOB', button, ACTIONS.reroll);
    expect('status' in click && click.status).toBe(200);
    expect(click.ackMs).toBeLessThan(1_000);

    // Bob sees his job's status privately, with a Cancel button, then the image lands for him.
    await r.slack.waitFor(() => STATUS.test(r.slack.userView('U0BOB')[0]?.text ?? ''), 5_000, "Bob's status");
    expect(actionIds(r, r.slack.userView('U0BOB')[0])).toEqual([ACTIONS.cancel]);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 2, 20_000, 'the second image');
    const second = r.slack.channelFiles()[1]!;
    expect(second.files[0]!.bytes.equals(first!.files[0]!.bytes)).toBe(true);
    expect(captionOf(second).text).toBe(messages.imageCaption(prompt, { platform: 'slack', userId: 'U0BOB', userName: '@U0BOB' }));
    expect(captionOf(second).pings).toEqual(['@U0BOB']);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0BOB')?.text === DONE, 5_000, "Bob's done status");
    expect(actionIds(r, lastSeen(r.slack, 'U0BOB'))).toEqual([]);

    // The new image has its own Re-roll; the first image's message was never touched.
    await r.slack.waitFor(() => rerollPosts(r.slack).length === 2, 5_000, 'the second Re-roll button');
    expect(button!.replacedViaResponseUrl).toBeUndefined();
    expect(button!.edited).toBeUndefined();
    expect(r.slack.userView('U0ALICE').map((m) => m.text)).toEqual([DONE]);
    expect(r.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual([prompt, prompt]);
    expect(r.slack.responseUrlPosts.every((p) => p.accepted)).toBe(true);
  });

  it('still works after the app restarts on the same DATA_DIR', async () => {
    const r = await rig({ fair: { coldStartMs: 200 } });
    await imagine(r, 'U0ALICE', 'a lighthouse before the restart');
    await r.slack.waitFor(() => rerollPosts(r.slack).length === 1, 20_000, 'the image and its Re-roll button');
    await r.restart(0);
    const [button] = rerollPosts(r.slack);
    await r.slack.click(r.eventsUrl, 'U0CARL', button, ACTIONS.reroll);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 2, 20_000, 'the re-rolled image');
    const shares = r.slack.channelFiles();
    expect(shares[1]!.files[0]!.bytes.equals(shares[0]!.files[0]!.bytes)).toBe(true);
    expect(captionOf(shares[1]!).text).toContain('"a lighthouse before the restart"');
    expect(captionOf(shares[1]!).pings).toEqual(['@U0CARL']);
  });

  it('works over Socket Mode (interactive envelopes), and refuses in words under the same limits', async () => {
    const r = await rig({ socketMode: true, fair: { coldStartMs: 200, diffusion: { generationMs: 1_500 } } });
    await r.slack.sendSocketCommand({ command: '/imagine', text: 'a socket of stars', user_id: 'U0JOY' });
    await r.slack.waitFor(() => rerollPosts(r.slack).length === 1, 20_000, 'the image and its Re-roll button');
    const [button] = rerollPosts(r.slack);
    // U0DAN already has USER_MAX_PENDING (3) jobs: his Re-roll is refused, privately.
    for (const p of ['one', 'two', 'three']) await r.slack.sendSocketCommand({ command: '/imagine', text: p, user_id: 'U0DAN' });
    await r.slack.click('socket', 'U0DAN', button, ACTIONS.reroll);
    await r.slack.waitFor(() => r.slack.userView('U0DAN').some((m) => m.text === messages.userLimit(3)), 5_000, 'the refusal');
    // Anyone else's Re-roll goes through.
    const click = await r.slack.click('socket', 'U0KIM', button, ACTIONS.reroll);
    expect(click.ackMs).toBeLessThan(1_000);
    await r.slack.waitFor(() => r.slack.channelFiles().some((s) => captionOf(s).pings.includes('@U0KIM')), 25_000, "Kim's re-rolled image");
    const kim = r.slack.channelFiles().find((s) => captionOf(s).pings.includes('@U0KIM'))!;
    expect(kim.files[0]!.bytes.equals(pngForPrompt('a socket of stars'))).toBe(true);
  });

  it('a button whose value is not a job id is answered, not crashed on', async () => {
    const r = await rig();
    const res = await r.slack.sendBlockAction(r.eventsUrl, { user_id: 'U0EVE', action_id: ACTIONS.reroll, value: '../../etc/passwd' });
    expect(res.status).toBe(200);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0EVE')?.text === slackMessages.buttonUnreadable, 5_000, 'the answer');
    const unknown = await r.slack.sendBlockAction(r.eventsUrl, { user_id: 'U0EVE', action_id: ACTIONS.reroll, value: 'zzzzzzzzzz' });
    expect(unknown.status).toBe(200);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0EVE')?.text === messages.rerollUnknown, 5_000, 'the unknown-job answer');
    const other = await r.slack.sendBlockAction(r.eventsUrl, { user_id: 'U0EVE', action_id: 'something_else', value: 'x' });
    expect(other.status).toBe(200);
    const forged = await r.slack.sendBlockAction(r.eventsUrl, { user_id: 'U0EVE', action_id: ACTIONS.cancel, value: 'abc' }, { badSignature: true });
    expect(forged.status).toBe(401);
    expect(r.fair.startPrograms()).toBe(0);
  });
});

describe('Slack Cancel', () => {
  it('the owner cancels a waiting job: the status says so, loses its button, and the job never generates', async () => {
    const r = await rig({ fair: { coldStartMs: 2_500 } });
    const ack = await imagine(r, 'U0ALICE', 'never to be generated');
    const status = r.slack.userView('U0ALICE')[0]!;
    expect(status.text).toMatch(STATUS);
    expect(r.slack.buttons(status)).toMatchObject([{ action_id: ACTIONS.cancel, text: slackMessages.cancelButton }]);
    expect(ack.json).toMatchObject({ blocks: expect.any(Array) });

    await r.slack.click(r.eventsUrl, 'U0ALICE', status, ACTIONS.cancel);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0ALICE')?.text === messages.cancelled, 5_000, 'the cancelled status');
    // The same message, edited in place: no new message, no button left.
    expect(r.slack.userView('U0ALICE')).toHaveLength(1);
    expect(actionIds(r, lastSeen(r.slack, 'U0ALICE'))).toEqual([]);

    // Another job runs to its end afterwards: only it reached the GPU.
    await imagine(r, 'U0BOB', 'generated instead');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, "Bob's image");
    expect(r.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['generated instead']);
    expect(captionOf(r.slack.channelFiles()[0]!).pings).toEqual(['@U0BOB']);
    expect(r.logs.entries().some((e) => e.msg === 'job cancelled')).toBe(true);
  });

  it('anyone else is refused privately, and the job still completes', async () => {
    const r = await rig({ fair: { coldStartMs: 1_500 } });
    await imagine(r, 'U0ALICE', 'not yours to cancel');
    const status = r.slack.userView('U0ALICE')[0]!;
    await r.slack.click(r.eventsUrl, 'U0MALLORY', status, ACTIONS.cancel);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0MALLORY')?.text === messages.cancelNotOwner, 5_000, 'the refusal');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, "Alice's image");
    expect(r.slack.channelFiles()[0]!.files[0]!.bytes.equals(pngForPrompt('not yours to cancel'))).toBe(true);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0ALICE')?.text === DONE, 5_000, "Alice's done status");
    expect(r.slack.userView('U0ALICE')).toHaveLength(1);
    expect(actionIds(r, lastSeen(r.slack, 'U0ALICE'))).toEqual([]);
  });

  it("an admin may cancel anyone's job", async () => {
    const r = await rig({ fair: { coldStartMs: 2_500 } });
    await imagine(r, 'U0ALICE', 'stopped by an admin');
    const jobId = r.slack.buttons(r.slack.userView('U0ALICE')[0]).find((b) => b.action_id === ACTIONS.cancel)!.value!;
    await r.slack.sendBlockAction(r.eventsUrl, { user_id: SLACK_ADMIN, action_id: ACTIONS.cancel, value: jobId });
    await r.slack.waitFor(() => lastSeen(r.slack, SLACK_ADMIN)?.text === messages.cancelDone, 5_000, "the admin's confirmation");
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0ALICE')?.text === messages.cancelled, 5_000, "Alice's cancelled status");
    expect(r.slack.userView('U0ALICE')).toHaveLength(1);
    expect(actionIds(r, lastSeen(r.slack, 'U0ALICE'))).toEqual([]);
  });

  it("a Cancel left behind on a Re-roll's status (not editable in place) says the job is over, and loses its button", async () => {
    const r = await rig({ fair: { coldStartMs: 200 } });
    await imagine(r, 'U0ALICE', 'done before the click');
    await r.slack.waitFor(() => rerollPosts(r.slack).length === 1, 20_000, 'the image and its Re-roll button');
    await r.slack.click(r.eventsUrl, 'U0BOB', rerollPosts(r.slack)[0], ACTIONS.reroll);
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0BOB')?.text === DONE, 20_000, "Bob's done status");
    // Editing it would have meant replace_original on the channel message: it was left as it was.
    const stale = r.slack.userView('U0BOB')[0]!;
    expect(stale.text).toMatch(STATUS);
    expect(actionIds(r, stale)).toEqual([ACTIONS.cancel]);
    await r.slack.click(r.eventsUrl, 'U0BOB', stale, ACTIONS.cancel);
    await r.slack.waitFor(() => r.slack.userView('U0BOB')[0]?.text === messages.cancelTooLate, 5_000, 'the too-late answer');
    expect(actionIds(r, r.slack.userView('U0BOB')[0])).toEqual([]);
    expect(r.slack.channelFiles()).toHaveLength(2);
  });
});

describe('Slack /gpu kill confirmation', () => {
  it('Keep leaves the server alone; Confirm kills it and ends the waiting jobs with the admin-stopped text', async () => {
    const r = await rig({ fair: { coldStartMs: 2_000, diffusion: { generationMs: 1_500 } } });
    await imagine(r, 'U0ONE', 'kept running');
    const ask = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'kill', user_id: SLACK_ADMIN });
    expect(ask.text).toBe(messages.gpuKillConfirm(0, 1));
    const question = lastSeen(r.slack, SLACK_ADMIN)!;
    expect(r.slack.buttons(question).map((b) => [b.action_id, b.text])).toEqual([
      [ACTIONS.killConfirm, slackMessages.killConfirmButton],
      [ACTIONS.killKeep, slackMessages.killKeepButton],
    ]);
    await r.slack.click(r.eventsUrl, SLACK_ADMIN, question, ACTIONS.killKeep);
    await r.slack.waitFor(() => lastSeen(r.slack, SLACK_ADMIN)?.text === messages.gpuKillAborted, 5_000, 'the kept answer');
    expect(actionIds(r, lastSeen(r.slack, SLACK_ADMIN))).toEqual([]);
    // A forged Confirm from someone who is not an admin changes nothing either.
    await r.slack.sendBlockAction(r.eventsUrl, { user_id: 'U0NOBODY', action_id: ACTIONS.killConfirm, value: 'kill' });
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0NOBODY')?.text === messages.adminOnly, 5_000, 'the admin-only refusal');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the first image');
    expect(r.fair.killPrograms()).toEqual([]);

    // Two more jobs: one on the GPU, one waiting. This time the admin confirms.
    await imagine(r, 'U0TWO', 'ended by the admin');
    await imagine(r, 'U0THREE', 'also ended by the admin');
    await r.slack.waitFor(() => r.app.services.jobs.counts().running === 1, 5_000, 'a running job');
    await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'kill', user_id: SLACK_ADMIN });
    const again = lastSeen(r.slack, SLACK_ADMIN)!;
    expect(again.text).toBe(messages.gpuKillConfirm(1, 1));
    const [container] = [...r.fair.containers.values()];
    await r.slack.click(r.eventsUrl, SLACK_ADMIN, again, ACTIONS.killConfirm);
    await r.slack.waitFor(() => lastSeen(r.slack, SLACK_ADMIN)?.text === messages.gpuKilled(2), 10_000, 'the kill result');
    expect(actionIds(r, lastSeen(r.slack, SLACK_ADMIN))).toEqual([]);
    expect(r.fair.killPrograms()).toEqual([{ node: container!.node, containerId: container!.id }]);
    for (const user of ['U0TWO', 'U0THREE']) {
      await r.slack.waitFor(() => lastSeen(r.slack, user)?.text === messages.killedByAdmin, 5_000, `${user}'s ended status`);
      expect(actionIds(r, lastSeen(r.slack, user))).toEqual([]);
    }
    expect(r.slack.channelFiles()).toHaveLength(1);
  });

  it('without jobs waiting, /gpu kill asks nothing', async () => {
    const r = await rig({ fair: { coldStartMs: 200 } });
    await imagine(r, 'U0ONE', 'warm');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image');
    await r.slack.waitFor(() => r.app.services.jobs.counts().running === 0, 5_000, 'an idle GPU');
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'kill', user_id: SLACK_ADMIN });
    expect(res.text).toMatch(/^Stopped the GPU server/);
    expect((res.json as { blocks?: unknown }).blocks).toBeUndefined();
    expect(r.fair.killPrograms()).toHaveLength(1);
  });
});

describe('Slack /gpu status as blocks', () => {
  it('shows state, node and address, container, uptime, cold start, jobs, generations, median and the idle countdown', async () => {
    const r = await rig({ fair: { coldStartMs: 300 }, env: { IDLE_SHUTDOWN_MIN: '5' } });
    await imagine(r, 'U0ONE', 'for the record');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the image');
    await r.slack.waitFor(() => r.app.services.lifecycle.status().idleShutdownAt !== undefined, 5_000, 'the idle countdown');
    const res = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/gpu', text: 'status', user_id: SLACK_ADMIN });
    const body = res.json as { text: string; blocks: unknown[] };
    expect(body.text).toMatch(/^GPU server: ready \(since \d+ s ago\)/);
    const [container] = [...r.fair.containers.values()];
    const shown = renderSlackMessage({ blocks: body.blocks }).text.split('\n');
    expect(shown[0]).toBe('GPU server: ready');
    const field = (label: string) => {
      const i = shown.indexOf(label);
      expect(i, label).toBeGreaterThan(0);
      return shown[i + 1]!;
    };
    // Labels are bold mrkdwn: render gives "*Label*" lines followed by the value.
    expect(field(`*${slackMessages.statusFieldState}*`)).toMatch(/^ready for \d+ s$/);
    expect(field(`*${slackMessages.statusFieldNode}*`)).toBe('node-1 (127.0.0.1)');
    expect(field(`*${slackMessages.statusFieldContainer}*`)).toBe(container!.id.slice(0, 12));
    expect(field(`*${slackMessages.statusFieldUptime}*`)).toMatch(/^\d+ s$/);
    expect(field(`*${slackMessages.statusFieldColdStart}*`)).toMatch(/^\d+\.\d s$/);
    expect(field(`*${slackMessages.statusFieldJobs}*`)).toBe('0 waiting, 0 running');
    expect(field(`*${slackMessages.statusFieldGenerations}*`)).toBe('1');
    expect(field(`*${slackMessages.statusFieldMedian}*`)).toMatch(/^\d+\.\d s$/);
    expect(field(`*${slackMessages.statusFieldIdle}*`)).toMatch(/^in (\d+ s|5 min)$/);
    // Checked as it is shown: Fair answered this very status request.
    expect(shown).toContain(messages.statusControlPlane({ ok: true, nodes: 1 }));
    expect(renderSlackMessage({ blocks: body.blocks }).pings).toEqual([]);
  });
});

describe('Slack prompts are shown literally', () => {
  it('mentions and markup in a prompt ping nobody and render as typed, in the caption and under it', async () => {
    const r = await rig({ fair: { coldStartMs: 200 } });
    const prompt = 'a cat <!channel> <!here> <@U123> <#C0GENERAL> *bold* _it_ ~gone~ `code` & <https://x.test|link>';
    await imagine(r, 'U0ALICE', prompt);
    await r.slack.waitFor(() => rerollPosts(r.slack).length === 1, 20_000, 'the image and its Re-roll button');
    const caption = captionOf(r.slack.channelFiles()[0]!);
    expect(caption.text).toBe(`"${prompt}" (asked by @U0ALICE)`);
    expect(caption.pings).toEqual(['@U0ALICE']);
    expect(caption.formatted).toEqual([]);
    const under = renderSlackMessage(rerollPosts(r.slack)[0]!);
    expect(under.text).toContain(`"${prompt}"`);
    expect(under.pings).toEqual([]);
    expect(under.formatted).toEqual([]);
    // Nothing the bot said anywhere notified anyone but the requester.
    for (const post of [...r.slack.posts, ...r.slack.ephemerals]) expect(renderSlackMessage(post).pings).toEqual([]);
    for (const m of r.slack.userView('U0ALICE')) expect(renderSlackMessage(m).pings).toEqual([]);
  });
});

describe('Slack status messages: ETA, throttling, and silence once the job ends', () => {
  it('a queued job shows its ETA, edits come at most every 2 s, and stop with the outcome', async () => {
    const r = await rig({ fair: { coldStartMs: 200, diffusion: { generationMs: 1_200 } } });
    await imagine(r, 'U0ONE', 'sets the pace');
    await r.slack.waitFor(() => r.slack.channelFiles().length === 1, 20_000, 'the first image');
    // The median generation time is known now: the next jobs are told how long to wait.
    const acks: Awaited<ReturnType<typeof imagine>>[] = [];
    for (const u of ['U0TWO', 'U0THREE', 'U0FOUR']) acks.push(await imagine(r, u, `waiting ${u}`));
    expect(acks[2]!.text).toMatch(/^Queued: position \d+ \(about \d+ s to go\)\.$/);
    await r.slack.waitFor(() => r.slack.channelFiles().length === 4, 25_000, 'three more images');
    for (const [i, u] of ['U0TWO', 'U0THREE', 'U0FOUR'].entries()) {
      await r.slack.waitFor(() => lastSeen(r.slack, u)?.text === DONE, 5_000, `${u}'s done status`);
      const posts = r.slack.responseUrlPosts.filter((p) => p.url === acks[i]!.responseUrl);
      expect(posts.length).toBeLessThanOrEqual(5);
      expect(posts.every((p) => p.accepted)).toBe(true);
      const times = [r.slack.acks.find((a) => a.user === u)!.at, ...posts.map((p) => p.at)];
      // Every edit but the outcome waits 2 s after the previous message. The last of the three
      // waits two generations (2.4 s) and more: it had at least one edit before its outcome.
      if (u === 'U0FOUR') expect(times.length).toBeGreaterThanOrEqual(3);
      for (let k = 1; k < times.length - 1; k++) expect(times[k]! - times[k - 1]!).toBeGreaterThanOrEqual(1_900);
      // While waiting the status had a Cancel button; the outcome has none.
      for (const p of posts.slice(0, -1)) expect(actionIds(r, { blocks: p.body.blocks })).toEqual([ACTIONS.cancel]);
      expect(posts.at(-1)!.body.text).toBe(DONE);
      expect(posts.at(-1)!.body.blocks).toBeUndefined();
    }
    // Once a job has ended its status is never edited again: another full job later
    // (a barrier, not a sleep) leaves the earlier response_urls as they were.
    const before = r.slack.responseUrlPosts.length;
    const last = await imagine(r, 'U0FIVE', 'the barrier');
    await r.slack.waitFor(() => lastSeen(r.slack, 'U0FIVE')?.text === DONE, 20_000, 'the barrier job');
    const after = r.slack.responseUrlPosts.slice(before);
    expect(after.every((p) => p.url === last.responseUrl)).toBe(true);
  });
});
