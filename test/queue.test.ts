/**
 * The job queue as users meet it: limits refused at once in words, positions that
 * move, FIFO order, the GPU slot freed once the image bytes are in hand, and prompts
 * cleaned or refused.
 */
import { describe, expect, it } from 'vitest';
import { imagine } from '../src/commands/imagine.js';
import { cleanPrompt, MAX_PROMPT_LENGTH } from '../src/commands/prompt.js';
import { messages } from '../src/messages.js';
import { eventually, startCoreRig, type CoreRig } from './helpers/app.js';
import { imageOf, outcome, record, steps, submit, user } from './helpers/jobs.js';
import { waitForEvent, type InferRecord } from './standins/diffusion.js';
import { pngForPrompt } from './standins/png.js';
import { cleanupAfterEach } from './helpers/cleanup.js';

const cleanup = cleanupAfterEach();
const rig = (opts: Parameters<typeof startCoreRig>[0] = {}): Promise<CoreRig> => cleanup.closing(startCoreRig(opts));

describe('limits', () => {
  it("refuses a user's job beyond USER_MAX_PENDING at once, naming the limit; other users still get in", async () => {
    const r = await rig({ fair: { coldStartMs: 10_000 }, env: { USER_MAX_PENDING: '2' } });
    const alice = user('alice');
    submit(r.services, 'one', alice);
    submit(r.services, 'two', alice);
    const third = imagine({ requester: alice, prompt: 'three' }, r.services);
    expect(third).toEqual({ ok: false, message: messages.userLimit(2) });
    expect(messages.userLimit(2)).toContain('USER_MAX_PENDING');
    expect(messages.userLimit(2)).toMatch(/already have 2 jobs/);
    // Same id on another platform is another user.
    expect(imagine({ requester: user('alice', 'slack'), prompt: 'mine' }, r.services).ok).toBe(true);
    expect(imagine({ requester: user('bob'), prompt: 'his' }, r.services).ok).toBe(true);
    expect(r.services.jobs.counts().waiting + r.services.jobs.counts().running).toBe(4);
  });

  it('a user may submit again once a job of theirs is posted (generated is not enough)', async () => {
    const r = await rig({ env: { USER_MAX_PENDING: '1' } });
    const alice = user('alice');
    const first = submit(r.services, 'first', alice);
    expect(imagine({ requester: alice, prompt: 'too soon' }, r.services)).toEqual({ ok: false, message: messages.userLimit(1) });
    await imageOf(first);
    expect(imagine({ requester: alice, prompt: 'still too soon' }, r.services)).toEqual({ ok: false, message: messages.userLimit(1) });
    r.services.jobs.delivered(first.id); // what the adapter reports once the image is up
    expect((await imageOf(submit(r.services, 'second', alice))).equals(pngForPrompt('second'))).toBe(true);
  });

  it('refuses any job beyond QUEUE_MAX waiting, naming the limit', async () => {
    const r = await rig({ fair: { coldStartMs: 10_000 }, env: { QUEUE_MAX: '3' } });
    submit(r.services, 'on the gpu', user('u0'));
    await eventually(() => r.services.jobs.counts().running === 1, 5_000, 'the first job to take the GPU slot');
    for (const i of [1, 2, 3]) submit(r.services, `waiting ${i}`, user(`u${i}`));
    const refused = imagine({ requester: user('u4'), prompt: 'one too many' }, r.services);
    expect(refused).toEqual({ ok: false, message: messages.queueFull(3) });
    expect(messages.queueFull(3)).toContain('QUEUE_MAX');
    expect(r.services.jobs.counts()).toEqual({ waiting: 3, running: 1 });
  });
});

describe('order and progress', () => {
  it('positions update as the queue moves: queued 3 → 2 → 1 → generating → done, in FIFO order', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 60 } } });
    const first = submit(r.services, 'p0', user('u0'));
    await eventually(() => r.services.jobs.counts().running === 1, 5_000, 'the first job to take the GPU slot');
    const waiting = [1, 2, 3].map((i) => submit(r.services, `p${i}`, user(`u${i}`)));
    const seen = waiting.map(record);
    const doneOrder: string[] = [];
    for (const job of [first, ...waiting]) job.outcome.then(() => doneOrder.push(job.prompt));

    for (const job of [first, ...waiting]) expect((await imageOf(job)).equals(pngForPrompt(job.prompt))).toBe(true);
    expect(steps(seen[0]!)).toEqual(['queued 1', 'generating', 'done']);
    expect(steps(seen[1]!)).toEqual(['queued 2', 'queued 1', 'generating', 'done']);
    expect(steps(seen[2]!)).toEqual(['queued 3', 'queued 2', 'queued 1', 'generating', 'done']);
    // What the user reads for those steps.
    expect(messages.progress({ type: 'queued', position: 3 })).toBe('Queued: position 3.');
    expect(messages.progress({ type: 'queued', position: 1 })).toBe('Queued: you are next.');

    const infers = r.fair.diffusion()!.infers.map((i) => i.prompt);
    expect(infers).toEqual(['p0', 'p1', 'p2', 'p3']);
    expect(doneOrder).toEqual(['p0', 'p1', 'p2', 'p3']);
  });

  it('positions close up when a waiting job is cancelled or fails', async () => {
    const r = await rig({ fair: { coldStartMs: 10_000 } });
    submit(r.services, 'p0', user('u0'));
    await eventually(() => r.services.jobs.counts().running === 1, 5_000, 'the first job to take the GPU slot');
    const a = submit(r.services, 'p1', user('u1'));
    const b = submit(r.services, 'p2', user('u2'));
    const seen = record(b);
    expect(r.services.jobs.cancel(a.id)).toBe(true);
    expect(await outcome(a)).toMatchObject({ type: 'failed', message: messages.cancelled });
    expect(steps(seen)).toEqual(['queued 2', 'queued 1']);
  });

  it('every job ends in exactly one final event', async () => {
    const r = await rig({ env: { QUEUE_CONCURRENCY: '2' } });
    const jobs = [0, 1, 2, 3, 4].map((i) => submit(r.services, `once ${i}`, user(`u${i}`)));
    const finals = jobs.map((job) => {
      const events = record(job);
      return () => events.filter((e) => e.type === 'done' || e.type === 'failed').length;
    });
    await Promise.all(jobs.map((j) => imageOf(j)));
    await Promise.all(jobs.map((j) => j.outcome));
    expect(finals.map((count) => count())).toEqual([1, 1, 1, 1, 1]);
  });
});

describe('the GPU slot', () => {
  it('is freed as soon as the image bytes are in hand: the next /infer starts before the first delivery is acknowledged', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 30 } } });
    const first = submit(r.services, 'first', user('a'));
    const second = submit(r.services, 'second', user('b'));
    const d = await r.fair.waitForDiffusion();
    const secondStarted = d.infers.some((i) => i.prompt === 'second')
      ? Promise.resolve()
      : waitForEvent<InferRecord>(d.events, 'infer-start', 5_000, (i) => i.prompt === 'second');
    expect((await imageOf(first)).equals(pngForPrompt('first'))).toBe(true);
    // Nobody has acknowledged the first delivery (jobs.delivered), yet the GPU moves on.
    await secondStarted;
    expect(first.state).toBe('generated');
    expect((await imageOf(second)).equals(pngForPrompt('second'))).toBe(true);
    expect(first.state).toBe('generated');
    r.services.jobs.delivered(first.id);
    r.services.jobs.delivered(second.id);
    expect(first.state).toBe('delivered');
    expect(d.infers.map((i) => i.prompt)).toEqual(['first', 'second']);
  });
});

describe('prompt validation', () => {
  it('refuses an empty or whitespace-only prompt in words', async () => {
    const r = await rig();
    for (const prompt of ['', '   ', '\t\n  \r', '\u200B\u2060\uFEFF', '\u0000\u0007']) {
      expect(imagine({ requester: user('a'), prompt }, r.services)).toEqual({ ok: false, message: messages.promptEmpty });
    }
    expect(r.services.jobs.counts()).toEqual({ waiting: 0, running: 0 });
  });

  it('refuses 1001 characters, naming the length and the limit; takes 1000', async () => {
    const r = await rig({ env: { USER_MAX_PENDING: '5' } });
    expect(imagine({ requester: user('a'), prompt: 'x'.repeat(1001) }, r.services)).toEqual({
      ok: false,
      message: messages.promptTooLong(1001, MAX_PROMPT_LENGTH),
    });
    expect(messages.promptTooLong(1001, 1000)).toMatch(/1001 characters.*limit is 1000/);
    expect(imagine({ requester: user('a'), prompt: 'x'.repeat(1000) }, r.services).ok).toBe(true);
    // Length counts characters as users see them, not UTF-16 units.
    expect(cleanPrompt('🦊'.repeat(1000))).toEqual({ ok: true, prompt: '🦊'.repeat(1000) });
    expect(cleanPrompt('🦊'.repeat(1001))).toEqual({ ok: false, problem: 'too-long', length: 1001 });
  });

  it('removes control, zero-width and bidi characters and sends the cleaned prompt to the GPU', async () => {
    const r = await rig();
    const raw = '  a\u200B red\u202E\u0007 fox\n\tin the\u2066 snow\uFEFF  ';
    const cleaned = 'a red fox in the snow';
    expect(cleanPrompt(raw)).toEqual({ ok: true, prompt: cleaned });
    const job = submit(r.services, raw);
    expect(job.prompt).toBe(cleaned);
    expect((await imageOf(job)).equals(pngForPrompt(cleaned))).toBe(true);
    expect(r.fair.diffusion()!.infers.map((i) => i.prompt)).toEqual([cleaned]);
  });

  it('keeps ordinary non-ASCII text as it is (NFC)', () => {
    expect(cleanPrompt('cafe\u0301 mit Käse, 東京の夜')).toEqual({ ok: true, prompt: 'café mit Käse, 東京の夜' });
  });
});
