import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Job } from '../src/jobs/job.js';
import type { JobEvent } from '../src/jobs/types.js';
import type { Services } from '../src/services.js';
import { JobStore } from '../src/jobs/store.js';
import { keepSqliteObjects } from '../src/storage/sqlite.js';
import { FAST_TIMING, LogCapture, eventually, fairEnv, tempDir } from './helpers/app.js';
import { withStore } from './helpers/jobs.js';
import { freePort, startFairStandin, type FairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const slack = (userId: string) => ({ platform: 'slack' as const, userId, channelId: 'C1' });

/** A bot process as far as the core is concerned: durable services on one DATA_DIR. */
function boot(env: Record<string, string>): { services: Services; logs: LogCapture } {
  const logs = new LogCapture();
  const services = createServices(loadConfig(env), { logDestination: logs, timing: FAST_TIMING, durable: true });
  return { services, logs };
}

async function stopHard(services: Services) {
  // A crash: nothing is recorded on the way out, the store is simply released.
  await services.lifecycle.close();
  await services.inference.close();
  services.jobs.close();
}

describe('durable jobs', () => {
  let fair: FairStandin;
  let dir: ReturnType<typeof tempDir>;
  const running: Services[] = [];

  afterEach(async () => {
    for (const s of running.splice(0)) await stopHard(s).catch(() => undefined);
    await fair?.close();
    dir?.remove();
  });

  async function setup(fairOpts: Parameters<typeof startFairStandin>[0] = {}) {
    fair = await startFairStandin({ email: 'admin@example.com', password: 'test-password-s3cret', ...fairOpts });
    dir = tempDir();
    return fairEnv(fair, await freePort(), dir.path);
  }

  it('a deploy (SIGTERM path) loses no queued job: the next run generates them in their original order', async () => {
    const env = await setup({ coldStartMs: 60_000 }); // the GPU never comes up in the first run
    const first = boot(env);
    running.push(first.services);
    const prompts = ['one', 'two', 'three', 'four'];
    const submitted = prompts.map((p, i) => first.services.jobs.submit(slack(`U${i}`), p, { responseUrl: `r${i}` }));
    await first.services.jobs.shutdown(50);
    // Nobody was told their job failed: it is kept for the restart.
    for (const job of submitted) expect(job.ended).toBe(false);
    await stopHard(first.services);
    running.pop();
    await fair.close();

    fair = await startFairStandin({ email: 'admin@example.com', password: 'test-password-s3cret', coldStartMs: 20 });
    const env2 = { ...env, FAIR_SERVER_URL: fair.url };
    const second = boot(env2);
    running.push(second.services);
    const recovered: Job[] = [];
    second.services.jobs.onRecovered('slack', (job) => recovered.push(job));
    expect(second.services.jobs.recover()).toBe(4);
    expect(recovered.map((j) => j.prompt)).toEqual(prompts);
    expect(recovered.map((j) => j.reply)).toEqual(prompts.map((_, i) => ({ responseUrl: `r${i}` })));
    const outcomes = await Promise.all(recovered.map((j) => j.outcome));
    for (const [i, outcome] of outcomes.entries()) {
      expect(outcome.type).toBe('done');
      if (outcome.type === 'done') expect(outcome.image.bytes.equals(pngForPrompt(prompts[i]!))).toBe(true);
    }
    const diffusion = fair.diffusion()!;
    expect(diffusion.infers.map((r) => r.prompt)).toEqual(prompts);
    expect(fair.startPrograms()).toBe(1);
  });

  it('an image generated but not delivered before a crash is delivered after the restart, without generating again', async () => {
    const env = await setup();
    const first = boot(env);
    running.push(first.services);
    const job = first.services.jobs.submit(slack('U1'), 'a lighthouse at dusk');
    const outcome = await job.outcome;
    expect(outcome.type).toBe('done');
    // The adapter never got to post it: crash.
    await eventually(() => withStore(dir.path, (store) => store.unfinished().some((r) => r.state === 'generated')), 2_000, 'image recorded');
    await stopHard(first.services);
    running.pop();
    const infersBefore = fair.diffusion()!.infers.length;

    const second = boot(env);
    running.push(second.services);
    const events: JobEvent[] = [];
    second.services.jobs.onRecovered('slack', (j) => j.subscribe((e) => events.push(e)));
    expect(second.services.jobs.recover()).toBe(1);
    const done = events.find((e) => e.type === 'done');
    expect(done && done.type === 'done' && done.image.bytes.equals(pngForPrompt('a lighthouse at dusk'))).toBe(true);
    expect(fair.diffusion()!.infers.length).toBe(infersBefore);

    second.services.jobs.delivered(job.id);
    await stopHard(second.services);
    running.pop();
    // Delivered is final: a third run has nothing to deliver.
    const third = boot(env);
    running.push(third.services);
    third.services.jobs.onRecovered('slack', () => {
      throw new Error('a delivered job came back');
    });
    expect(third.services.jobs.recover()).toBe(0);
  });

  it('an image delivered before its copy in DATA_DIR is written stays delivered: no file left, nothing after a restart', async () => {
    const env = await setup();
    const first = boot(env);
    running.push(first.services);
    const job = first.services.jobs.submit(slack('U1'), 'a quick delivery');
    // The platform takes the image at once, before the file (written off the event loop) is there.
    job.subscribe((e) => {
      if (e.type === 'done') first.services.jobs.delivered(job.id);
    });
    expect((await job.outcome).type).toBe('done');
    await eventually(() => first.logs.text.includes('the job ended before its image was kept'), 2_000, 'the late file dropped');
    expect(readdirSync(join(dir.path, 'images'))).toEqual([]);
    expect(withStore(dir.path, (store) => store.get(job.id)?.state)).toBe('delivered');
    await stopHard(first.services);
    running.pop();

    const second = boot(env);
    running.push(second.services);
    expect(second.services.jobs.recover()).toBe(0);
  });

  it('lets the generation on the GPU finish within the grace period on shutdown', async () => {
    const env = await setup({ diffusion: { generationMs: 300 } });
    const { services } = boot(env);
    running.push(services);
    const job = services.jobs.submit(slack('U1'), 'slow one');
    await eventually(() => job.lastEvent.type === 'generating', 5_000, 'generation to start');
    await services.jobs.shutdown(5_000);
    const outcome = await job.outcome;
    expect(outcome.type).toBe('done');
    expect(services.jobs.submit.bind(services.jobs, slack('U2'), 'late')).toThrow(/not taking new jobs/);
  });

  it('a generation cut off by the shutdown runs again after the restart', async () => {
    const env = await setup({ diffusion: { generationMs: 2_000 } });
    const first = boot(env);
    running.push(first.services);
    const job = first.services.jobs.submit(slack('U1'), 'cut off');
    await eventually(() => job.lastEvent.type === 'generating', 5_000, 'generation to start');
    await first.services.jobs.shutdown(20);
    expect(job.ended).toBe(false);
    await stopHard(first.services);
    running.pop();
    fair.diffusionOptions.generationMs = 0;
    fair.diffusion()!.setFault(null);

    const second = boot(env);
    running.push(second.services);
    const recovered: Job[] = [];
    second.services.jobs.onRecovered('slack', (j) => recovered.push(j));
    second.services.jobs.recover();
    expect(recovered.map((j) => j.id)).toEqual([job.id]);
    const outcome = await recovered[0]!.outcome;
    expect(outcome.type).toBe('done');
  });

  it('a deploy during a cold start: the next run waits for the same container, one start program in all', async () => {
    // Like Docker: the container's port accepts (and resets) while the app inside starts.
    const env = await setup({ coldStartMs: 1_500, dockerProxy: true });
    const first = boot(env);
    running.push(first.services);
    const job = first.services.jobs.submit(slack('U1'), 'through a deploy');
    await eventually(() => first.services.lifecycle.status().containerId !== undefined, 5_000, 'the container to be created');
    await first.services.jobs.shutdown(0);
    await stopHard(first.services);
    running.pop();
    expect(job.ended).toBe(false);

    const second = boot(env);
    running.push(second.services);
    const recovered: Job[] = [];
    second.services.jobs.onRecovered('slack', (j) => recovered.push(j));
    second.services.jobs.recover();
    const outcome = await recovered[0]!.outcome;
    expect(outcome.type === 'done' && outcome.image.bytes.equals(pngForPrompt('through a deploy'))).toBe(true);
    expect(fair.startPrograms()).toBe(1);
    expect(fair.killPrograms()).toEqual([]);
  });

  it('prunes ended jobs older than 7 days and keeps the rest', async () => {
    dir = tempDir();
    fair = await startFairStandin();
    const store = new JobStore(dir.path);
    store.insert('old', slack('U1'), 'p', {});
    store.markEnded('old', 'delivered');
    store.insert('new', slack('U1'), 'p', {});
    // Backdate "old" by 8 days.
    const backdate = (store as unknown as { db: { prepare(s: string): { run(...a: unknown[]): void } } }).db.prepare(
      'UPDATE jobs SET updated_at = ? WHERE id = ?',
    );
    keepSqliteObjects(backdate); // Node 24 aborts if a better-sqlite3 12 statement is collected (src/storage/sqlite.ts)
    backdate.run(Date.now() - 8 * 24 * 3600 * 1000, 'old');
    expect(store.prune()).toBe(1);
    expect(store.get('old')).toBeUndefined();
    expect(store.get('new')?.state).toBe('queued');
    store.close();
  });
});
