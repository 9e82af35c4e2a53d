/**
 * What the durable job queue promises across restarts, pinned where mutation testing
 * (`npm run mutation`, test/MUTATION.md) found the suite silent: the crash-loop guard on a
 * job's recorded attempts, what a restart gives back of a job, and what pruning keeps.
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { createServices } from '../src/app.js';
import { cancel } from '../src/commands/cancel.js';
import { imagine } from '../src/commands/imagine.js';
import { reroll } from '../src/commands/reroll.js';
import { loadConfig } from '../src/config.js';
import type { Job } from '../src/jobs/job.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { FAST_TIMING, LogCapture, eventually, fairEnv, startCoreRig, tempDir, type CoreRig } from './helpers/app.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { failureOf, imageOf, outcome, record, submit, user, withStore } from './helpers/jobs.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();
const slack = (userId: string) => ({ platform: 'slack' as const, userId, userName: `user ${userId}`, channelId: 'C1' });

/** A Fair stand-in and an empty DATA_DIR, both removed after the test. */
async function fairAndDataDir(fairOptions: FairOptions = {}): Promise<{ fair: FairStandin; dataDir: string; env: Record<string, string> }> {
  const fair = await cleanup.closing(startFairStandin({ email: 'admin@example.com', password: 'test-password-s3cret', ...fairOptions }));
  const dir = tempDir();
  cleanup.defer(() => dir.remove());
  return { fair, dataDir: dir.path, env: fairEnv(fair, await freePort(), dir.path) };
}

/** The durable core of a bot process on `env`'s DATA_DIR, stopped after the test. */
function boot(env: Record<string, string>): { services: Services; logs: LogCapture } {
  const logs = new LogCapture();
  const services = createServices(loadConfig(env), { logDestination: logs, timing: FAST_TIMING, durable: true });
  cleanup.defer(async () => {
    await services.jobs.shutdown(0);
    await services.lifecycle.close();
    await services.inference.close();
    services.jobs.close();
  });
  return { services, logs };
}

/** Every job the restarted bot hands to the Slack adapter, by id. */
function recoverSlackJobs(services: Services): Map<string, Job> {
  const recovered = new Map<string, Job>();
  services.jobs.onRecovered('slack', (job) => recovered.set(job.id, job));
  services.jobs.recover();
  return recovered;
}

describe('the crash-loop guard (MAX_ATTEMPTS = 3)', () => {
  it('a job whose record says it crashed the bot twice runs again; one that did three times is dropped with a message', async () => {
    const { fair, dataDir, env } = await fairAndDataDir();
    withStore(dataDir, (store) => {
      // Each start of a generation counts an attempt; a crash leaves the job 'running'.
      store.insert('twice', slack('U1'), 'crashed twice', {});
      store.insert('thrice', slack('U2'), 'crashed three times', {});
      for (let i = 0; i < 2; i++) store.markRunning('twice');
      for (let i = 0; i < 3; i++) store.markRunning('thrice');
      expect([store.get('twice')?.attempts, store.get('thrice')?.attempts]).toEqual([2, 3]);
    });

    const { services, logs } = boot(env);
    const recovered = recoverSlackJobs(services);
    expect([...recovered.keys()]).toEqual(['twice', 'thrice']);
    expect(await failureOf(recovered.get('thrice')!)).toBe(messages.inferenceFailed('the job was tried 3 times without finishing'));
    expect((await imageOf(recovered.get('twice')!)).equals(pngForPrompt('crashed twice'))).toBe(true);
    // The dropped job never reached the GPU.
    expect(fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['crashed twice']);
    expect(logs.entries()).toContainEqual(expect.objectContaining({ jobId: 'thrice', attempts: 3, msg: 'job dropped after repeated attempts' }));
    const [twice, thrice] = withStore(dataDir, (store) => [store.get('twice'), store.get('thrice')]);
    expect(thrice).toMatchObject({ state: 'failed', error: 'too many attempts', attempts: 3 });
    expect(twice).toMatchObject({ attempts: 3 });
  });
});

describe('what a restart gives back', () => {
  it('a recovered job has its requester as submitted: name and channel, or none', async () => {
    const { dataDir, env } = await fairAndDataDir();
    const named = slack('U1');
    const bare = { platform: 'slack' as const, userId: 'U2' };
    withStore(dataDir, (store) => {
      store.insert('named', named, 'with a name', { responseUrl: 'r1' });
      store.insert('bare', bare, 'without one', {});
    });

    const { services } = boot(env);
    const recovered = recoverSlackJobs(services);
    expect(recovered.get('named')?.requester).toEqual(named);
    expect(recovered.get('bare')?.requester).toStrictEqual({ ...bare, userName: undefined, channelId: undefined });
    expect(recovered.get('named')?.reply).toEqual({ responseUrl: 'r1' });
  });

  it('prunes jobs that ended over 7 days ago, keeps younger ones for late buttons, and removes images no job waits for', async () => {
    const { dataDir, env } = await fairAndDataDir();
    const DAY_MS = 24 * 60 * 60 * 1000;
    withStore(dataDir, (store) => {
      writtenAt(Date.now() - 8 * DAY_MS, () => {
        store.insert('old', slack('U1'), 'eight days ago', {});
        store.markEnded('old', 'delivered');
      });
      writtenAt(Date.now() - 6 * DAY_MS, () => {
        store.insert('recent', slack('U1'), 'six days ago', {});
        store.markEnded('recent', 'cancelled');
      });
    });
    writeFileSync(join(dataDir, 'images', 'orphan.png'), pngForPrompt('nobody waits for me'));

    const { services } = boot(env);
    expect(recoverSlackJobs(services).size).toBe(0);
    expect(services.jobs.describeJob('old')).toBeUndefined();
    expect(services.jobs.describeJob('recent')).toEqual({ prompt: 'six days ago', requester: slack('U1'), state: 'cancelled' });
    expect(readdirSync(join(dataDir, 'images'))).toEqual([]);
  });
});

/** Runs `write` with the clock at `time`, as if the store had been written then. */
function writtenAt(time: number, write: () => void): void {
  const clock = vi.spyOn(Date, 'now').mockReturnValue(time);
  try {
    write();
  } finally {
    clock.mockRestore();
  }
}

describe('recovery by platform', () => {
  it("a dead CLI run's job is ended; a Discord job waits for its adapter; a second recover() hands nothing twice", async () => {
    const { dataDir, env } = await fairAndDataDir();
    withStore(dataDir, (store) => {
      store.insert('from-cli', { platform: 'cli', userId: 'me' }, 'a cli job', {});
      store.insert('from-discord', { platform: 'discord', userId: 'D1', channelId: 'C1' }, 'a discord job', {});
      store.insert('from-slack', slack('U1'), 'a slack job', {});
    });

    const first = boot(env);
    const handed: string[] = [];
    first.services.jobs.onRecovered('slack', (job) => handed.push(job.id));
    expect(first.services.jobs.recover()).toBe(1);
    expect(first.services.jobs.recover()).toBe(0);
    expect(handed).toEqual(['from-slack']);
    expect(first.logs.entries()).toContainEqual(expect.objectContaining({ msg: 'jobs recovered from the last run', recovered: 1 }));
    expect(first.logs.entries()).toContainEqual(
      expect.objectContaining({ msg: 'job kept for a platform that is not running', jobId: 'from-discord', platform: 'discord' }),
    );
    const [cli, discord] = withStore(dataDir, (store) => [store.get('from-cli'), store.get('from-discord')]);
    expect(cli).toMatchObject({ state: 'failed', error: 'the CLI process ended' });
    expect(discord).toMatchObject({ state: 'queued' });
  });

  it('a job that was running when the bot stopped is back to queued in DATA_DIR while it waits for its turn', async () => {
    const { dataDir, env } = await fairAndDataDir({ coldStartMs: 60_000 }); // the GPU stays cold: the queue does not move
    withStore(dataDir, (store) => {
      store.insert('ahead', slack('U1'), 'first in line', {});
      store.insert('cut-off', slack('U2'), 'was generating', {});
      store.markRunning('cut-off');
    });
    const { services } = boot(env);
    recoverSlackJobs(services);
    await eventually(() => withStore(dataDir, (store) => store.get('ahead')?.state === 'running'), 5_000, 'the first job to take the GPU slot');
    expect(withStore(dataDir, (store) => store.get('cut-off'))).toMatchObject({ state: 'queued', attempts: 1 });
  });
});

const rig = (opts: Parameters<typeof startCoreRig>[0] = {}): Promise<CoreRig> => cleanup.closing(startCoreRig(opts));

describe('estimates', () => {
  it('queued and generating events carry ETAs from the median generation time and the GPU slots', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 200 } }, env: { QUEUE_CONCURRENCY: '2' } });
    const warmUp = [submit(r.services, 'warm-up 1', user('u1')), submit(r.services, 'warm-up 2', user('u2'))];
    const behind = submit(r.services, 'behind the warm-up', user('u3'));
    expect(behind.lastEvent).toEqual({ type: 'queued', position: 1, etaS: undefined }); // nothing to judge from yet
    await Promise.all([...warmUp, behind].map((j) => imageOf(j)));
    const median = r.services.jobs.medianGenerationMs()!;
    expect(median).toBeGreaterThan(0);

    const onGpu = [submit(r.services, 'a', user('ua')), submit(r.services, 'b', user('ub'))];
    const seenA = record(onGpu[0]!);
    await eventually(() => r.services.jobs.counts().running === 2, 5_000, 'both GPU slots taken');
    const waiting = ['c', 'd', 'e'].map((p) => submit(r.services, p, user(`u${p}`)));
    // Two slots: the first two waiting start after one generation, the third after two.
    expect(waiting.map((j) => j.lastEvent)).toEqual([
      { type: 'queued', position: 1, etaS: (2 * median) / 1000 },
      { type: 'queued', position: 2, etaS: (2 * median) / 1000 },
      { type: 'queued', position: 3, etaS: (3 * median) / 1000 },
    ]);
    expect(seenA).toContainEqual({ type: 'generating', etaS: median / 1000 });
    await Promise.all([...onGpu, ...waiting].map((j) => imageOf(j)));
    expect(r.services.jobs.generationsLastHour()).toBe(8);
    expect(r.services.jobs.generationsLastHour(Date.now() + 3_600_001)).toBe(0);
  });
});

describe('buttons on a job', () => {
  it('Cancel while waiting ends the job; on an image already generated it is too late', async () => {
    const r = await rig({ fair: { coldStartMs: 10_000 } });
    const owner = user('owner');
    const job = submit(r.services, 'to be cancelled', owner);
    expect(cancel({ requester: user('someone else'), jobId: job.id }, r.services)).toEqual({ ok: false, message: messages.cancelNotOwner });
    expect(r.services.jobs.describeJob(job.id)).toEqual({ prompt: 'to be cancelled', requester: owner, state: 'running' });
    expect(cancel({ requester: owner, jobId: job.id }, r.services)).toEqual({ ok: true, message: messages.cancelDone });
    expect(await failureOf(job)).toBe(messages.cancelled);
    expect(r.services.jobs.describeJob(job.id)).toEqual({ prompt: 'to be cancelled', requester: owner, state: 'cancelled' });
    expect(cancel({ requester: owner, jobId: job.id }, r.services)).toEqual({ ok: false, message: messages.cancelTooLate });
    expect(r.services.jobs.cancel('no-such-job')).toBe(false);
  });

  it('Re-roll of a delivered job, without DATA_DIR, runs its prompt again for whoever clicked', async () => {
    const r = await rig();
    const first = submit(r.services, 'a fox in the snow', user('alice'));
    await imageOf(first);
    r.services.jobs.delivered(first.id);
    expect(first.state).toBe('delivered');
    // Another job goes through in between: the prompt is still remembered.
    await imageOf(submit(r.services, 'something else', user('carol')));
    const again = await reroll({ requester: user('bob'), jobId: first.id }, r.services);
    if (!again.ok) throw new Error(`re-roll refused: ${again.message}`);
    expect(again.job.requester).toEqual(user('bob'));
    expect((await imageOf(again.job)).equals(pngForPrompt('a fox in the snow'))).toBe(true);
    expect(await reroll({ requester: user('bob'), jobId: 'never-existed' }, r.services)).toEqual({ ok: false, message: messages.rerollUnknown });
  });

  it('a delivery that failed ends the job as failed, for observers too', async () => {
    const r = await rig();
    const ended: unknown[] = [];
    r.services.jobs.events.on('ended', (e) => ended.push(e));
    const job = submit(r.services, 'cannot be posted', user('alice'));
    await imageOf(job);
    r.services.jobs.deliveryFailed(job.id, 'the channel is gone');
    expect(job.state).toBe('failed');
    expect(ended).toEqual([{ jobId: job.id, outcome: 'delivery-failed' }]);
    expect(r.services.jobs.describeJob(job.id)?.state).toBe('failed');
    expect(r.logs.entries()).toContainEqual(expect.objectContaining({ msg: 'job delivery failed', jobId: job.id, reason: 'the channel is gone' }));
  });
});

describe('following a job', () => {
  it('a listener that unsubscribed hears nothing more; the others still get every event to the end', async () => {
    const r = await rig();
    const job = submit(r.services, 'followed', user('alice'));
    const left: string[] = [];
    const stayed: string[] = [];
    const unsubscribe = job.subscribe((e) => left.push(e.type));
    job.subscribe((e) => stayed.push(e.type));
    unsubscribe();
    await imageOf(job);
    expect(left).toHaveLength(1); // the latest event, delivered at once on subscribing
    expect(stayed.at(-1)).toBe('done');
  });
});

describe('why a job failed', () => {
  it('each failed start gives its waiting jobs the reason observers count it by: startup-timeout, startup-failed', async () => {
    const slow = await rig({ fair: { diffusion: { loadDelayMs: 60_000 } }, env: { STARTUP_TIMEOUT_S: '1', USER_MAX_PENDING: '5' } });
    const timedOut = [submit(slow.services, 'one'), submit(slow.services, 'two')];
    const finals = await Promise.all(timedOut.map((j) => outcome(j)));
    expect(finals.map((f) => f.type === 'failed' && f.reason)).toEqual(['startup-timeout', 'startup-timeout']);

    const nowhere = await rig({ env: { FAIR_NODE: 'node-9' } });
    expect(await outcome(submit(nowhere.services, 'nowhere'))).toMatchObject({ type: 'failed', reason: 'startup-failed' });
  });
});

describe('shutdown without DATA_DIR', () => {
  it('tells the waiting and the running job that the bot shut down', async () => {
    const r = await rig({ fair: { coldStartMs: 10_000 } });
    const running = submit(r.services, 'on the gpu', user('a'));
    await eventually(() => r.services.jobs.counts().running === 1, 5_000, 'the first job to take the GPU slot');
    const waiting = submit(r.services, 'in line', user('b'));
    await r.services.jobs.shutdown(0);
    expect(await outcome(waiting)).toMatchObject({ type: 'failed', message: messages.stoppedForShutdown, reason: 'shutdown' });
    expect(await outcome(running)).toMatchObject({ type: 'failed', message: messages.stoppedForShutdown, reason: 'shutdown' });
    expect(r.services.jobs.counts()).toEqual({ waiting: 0, running: 0 });
  });
});

describe('DATA_DIR', () => {
  it('a job that cannot be recorded is refused at the door with a message', async () => {
    const { env } = await fairAndDataDir();
    const { services, logs } = boot(env);
    services.jobs.close(); // the database is gone from under the bot
    expect(imagine({ requester: slack('U1'), prompt: 'unrecorded' }, services)).toEqual({ ok: false, message: messages.storageFailed });
    expect(logs.entries()).toContainEqual(expect.objectContaining({ msg: 'could not record a job' }));
  });

  it('what an adapter adds to a reply is merged and kept, live and after a restart', async () => {
    const { dataDir, env } = await fairAndDataDir({ coldStartMs: 60_000 });
    const first = boot(env);
    const job = first.services.jobs.submit(slack('U1'), 'kept reply', { responseUrl: 'r1' });
    first.services.jobs.updateReply(job.id, { messageTs: '111.222' });
    expect(job.reply).toEqual({ responseUrl: 'r1', messageTs: '111.222' });
    await first.services.jobs.shutdown(0);

    const second = boot(env);
    // Before its adapter takes it back, the job is only in DATA_DIR: the update merges there.
    second.services.jobs.updateReply(job.id, { thread: 't1' });
    const recovered = recoverSlackJobs(second.services);
    expect(recovered.get(job.id)?.reply).toEqual({ responseUrl: 'r1', messageTs: '111.222', thread: 't1' });
    expect(withStore(dataDir, (store) => store.get(job.id)?.reply)).toEqual({ responseUrl: 'r1', messageTs: '111.222', thread: 't1' });
  });
});

describe('the log of a job', () => {
  it('an operator can follow a job from queued to delivered, and a cancelled one, by its id', async () => {
    const r = await rig();
    const since = Date.now();
    const job = submit(r.services, 'logged', user('alice'));
    const image = await imageOf(job);
    r.services.jobs.delivered(job.id);
    const cancelled = submit(r.services, 'changed my mind', user('bob'));
    r.services.jobs.cancel(cancelled.id);
    const upTo = Date.now() - since; // no duration logged can be longer than the test so far
    const duration = expect.toSatisfy((ms: number) => ms >= 0 && ms <= upTo);

    const lines = r.logs.entries();
    const line = (msg: string, jobId: string) => lines.find((l) => l.msg === msg && l.jobId === jobId);
    expect(line('job queued', job.id)).toMatchObject({ component: 'jobs', platform: 'discord', userId: 'alice', position: 1 });
    expect(line('image generated', job.id)).toMatchObject({ generationMs: duration, bytes: image.length });
    expect(line('job delivered', job.id)).toMatchObject({ queuedMs: duration, runMs: duration, deliveryMs: duration });
    expect(line('job failed', cancelled.id)).toMatchObject({ reason: 'cancelled', queuedMs: duration });
  });
});
