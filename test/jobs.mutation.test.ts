/**
 * What the durable job queue promises across restarts, pinned where mutation testing
 * (`npm run mutation`, test/MUTATION.md) found the suite silent: the crash-loop guard on a
 * job's recorded attempts, what a restart gives back of a job, and what pruning keeps.
 */
import { describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Job } from '../src/jobs/job.js';
import { JobStore } from '../src/jobs/store.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { FAST_TIMING, LogCapture, fairEnv, tempDir } from './helpers/app.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { failureOf, imageOf } from './helpers/jobs.js';
import { freePort, startFairStandin, type FairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();
const slack = (userId: string) => ({ platform: 'slack' as const, userId, userName: `user ${userId}`, channelId: 'C1' });

/** A Fair stand-in and an empty DATA_DIR, both removed after the test. */
async function fairAndDataDir(): Promise<{ fair: FairStandin; dataDir: string; env: Record<string, string> }> {
  const fair = await cleanup.closing(startFairStandin({ email: 'admin@example.com', password: 'test-password-s3cret' }));
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

/** Opens DATA_DIR's job store for `use` (as an earlier run left it), closing it again. */
function withStore<T>(dataDir: string, use: (store: JobStore) => T): T {
  const store = new JobStore(dataDir);
  try {
    return use(store);
  } finally {
    store.close();
  }
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
    expect(await failureOf(recovered.get('thrice')!)).toBe(
      messages.inferenceFailed('the job was tried 3 times without finishing'),
    );
    expect((await imageOf(recovered.get('twice')!)).equals(pngForPrompt('crashed twice'))).toBe(true);
    // The dropped job never reached the GPU.
    expect(fair.diffusion()!.infers.map((i) => i.prompt)).toEqual(['crashed twice']);
    expect(logs.entries()).toContainEqual(
      expect.objectContaining({ jobId: 'thrice', attempts: 3, msg: 'job dropped after repeated attempts' }),
    );
    const [twice, thrice] = withStore(dataDir, (store) => [store.get('twice'), store.get('thrice')]);
    expect(thrice).toMatchObject({ state: 'failed', error: 'too many attempts', attempts: 3 });
    expect(twice).toMatchObject({ attempts: 3 });
  });
});
