/**
 * The GPU server's life on Fair, through the real job service: one start however many
 * jobs wait, adopting a server that already answers, long cold starts, the startup
 * timeout and its backoff, crashes, idle shutdown, /gpu kill and a taken host port.
 */
import { createServer, type Server } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { gpu } from '../src/commands/gpu.js';
import { loadConfig } from '../src/config.js';
import type { GpuState } from '../src/fair/lifecycle.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { FAST_TIMING, LogCapture, eventually, startCoreRig, type CoreRig } from './helpers/app.js';
import { failureOf, imageOf, outcome, record, steps, submit, user } from './helpers/jobs.js';
import { startDiffusionStandin, waitForEvent, type DiffusionStandin } from './standins/diffusion.js';
import { pngForPrompt } from './standins/png.js';
import { cleanupAfterEach } from './helpers/cleanup.js';

const cleanup = cleanupAfterEach();
const rig = (opts: Parameters<typeof startCoreRig>[0] = {}): Promise<CoreRig> => cleanup.closing(startCoreRig(opts));
const handDiffusion = (opts: Parameters<typeof startDiffusionStandin>[0] = {}): Promise<DiffusionStandin> => cleanup.closing(startDiffusionStandin(opts));

/** Services of a second bot process sharing the rig's Fair and DATA_DIR (a restart). */
function restartedServices(r: CoreRig, logs = new LogCapture()): Services {
  const services = createServices(loadConfig(r.env), { logDestination: logs, timing: FAST_TIMING });
  cleanup.defer(async () => {
    await services.jobs.shutdown(0);
    await services.lifecycle.close();
    await services.inference.close();
  });
  return services;
}

async function stopServices(s: Services): Promise<void> {
  await s.jobs.shutdown(0);
  await s.lifecycle.close();
  await s.inference.close();
}

const admin = user('admin-1');
const adminEnv = { ADMIN_IDS: `discord:${admin.userId}` };

const startEvents = (r: CoreRig) => programRequests(r, 'Create');
/** When the stand-in received each program of a kind ('Create' for a start, 'Kill'), in performance.now() time. */
const programRequests = (r: CoreRig, type: 'Create' | 'Kill') =>
  r.fair.requests.filter(
    (q) => q.method === 'PUT' && /\/programs$/.test(q.path) && (q.body as { commands?: Array<{ type?: string }> }).commands?.[0]?.type === type,
  );
const stateEvents = (s: Services) => {
  const seen: GpuState[] = [];
  s.lifecycle.on('state', (state: GpuState) => seen.push(state));
  return seen;
};

describe('cold start: exactly one start', () => {
  it('20 concurrent jobs during a cold start: one start program, every job gets its exact image', async () => {
    const r = await rig({ fair: { coldStartMs: 300 }, env: { QUEUE_CONCURRENCY: '2' } });
    const prompts = Array.from({ length: 20 }, (_, i) => `prompt number ${i}`);
    const jobs = prompts.map((p, i) => submit(r.services, p, user(`u${i}`)));
    const images = await Promise.all(jobs.map((j) => imageOf(j)));
    images.forEach((bytes, i) => {
      expect(bytes.equals(pngForPrompt(prompts[i]!))).toBe(true);
    });
    expect(r.fair.startPrograms()).toBe(1);
    expect(startEvents(r)).toHaveLength(1);
    expect(r.fair.rejections).toEqual([]);
    expect(
      r.fair
        .diffusion()!
        .infers.map((i) => i.prompt)
        .sort(),
    ).toEqual([...prompts].sort());
  });

  it('holds jobs through a cold start that is long against the probe interval (refused, then 503 while loading)', async () => {
    // 1 s before the port opens plus 1 s of model loading: ~100 probes at 20 ms. What matters is
    // that the jobs are held for as long as STARTUP_TIMEOUT_S allows (here its 600 s default),
    // however many probes fail, so a real 30-120 s image pull behaves the same.
    const r = await rig({ fair: { coldStartMs: 1_000, diffusion: { loadDelayMs: 1_000 } } });
    const listening = waitForEvent<DiffusionStandin>(r.fair.events, 'diffusion-listening', 10_000);
    const jobs = [submit(r.services, 'a long wait', user('a')), submit(r.services, 'another one', user('b'))];
    const seen = jobs.map(record);

    const diffusion = await listening;
    const loadingProbes: string[] = [];
    diffusion.events.on('request', (q: { path: string }) => loadingProbes.push(q.path));
    let loadedAt = 0;
    diffusion.events.once('loaded', () => (loadedAt = performance.now()));
    const firstInfer = waitForEvent<{ startedAt: number }>(diffusion.events, 'infer-start', 10_000);

    expect((await imageOf(jobs[0]!)).equals(pngForPrompt('a long wait'))).toBe(true);
    expect((await imageOf(jobs[1]!)).equals(pngForPrompt('another one'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
    // It kept probing while the model loaded (503), and saw readiness within 250 ms (probes at most 200 ms apart).
    expect(loadingProbes.filter((p) => p === '/healthcheck').length).toBeGreaterThan(5);
    expect((await firstInfer).startedAt - loadedAt).toBeLessThan(250);
    // The first job heard that the GPU was warming up, and never failed; the second waited its turn.
    expect(steps(seen[0]!)).toEqual(['warming', 'generating', 'done']);
    expect(steps(seen[1]!)).toEqual(['queued 1', 'generating', 'done']);
    const warming = seen[0]!.filter((e) => e.type === 'warming');
    expect(warming.length).toBeGreaterThan(3);
    expect((warming.at(-1) as { elapsedS: number }).elapsedS).toBeGreaterThan(1);
  });

  it('adopts a server started by hand (INFERENCE_URL answers): no start program', async () => {
    const byHand = await handDiffusion();
    const r = await rig({ env: { INFERENCE_URL: byHand.url } });
    const job = submit(r.services, 'by hand');
    expect((await imageOf(job)).equals(pngForPrompt('by hand'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(0);
    expect(byHand.infers.map((i) => i.prompt)).toEqual(['by hand']);
  });

  it('a restarted bot adopts the server an earlier run recorded in DATA_DIR: no second start, and can stop it', async () => {
    const r = await rig({ env: adminEnv });
    expect((await imageOf(submit(r.services, 'first run'))).equals(pngForPrompt('first run'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
    const [container] = [...r.fair.containers.values()];
    await stopServices(r.services); // the bot exits; the GPU server stays up, remembered in DATA_DIR

    const next = restartedServices(r);
    await next.lifecycle.recover();
    expect(next.lifecycle.state).toBe('ready');
    const status = await gpu({ requester: admin, subcommand: 'status' }, next);
    expect(status.message).toContain('GPU server: ready');
    expect(status.message).toContain(`Container: ${container!.id.slice(0, 12)}`);
    expect(status.status?.programId).toBe(container!.programId);

    expect((await imageOf(submit(next, 'second run'))).equals(pngForPrompt('second run'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);

    const killed = await gpu({ requester: admin, subcommand: 'kill' }, next);
    expect(killed.message).toBe(messages.gpuKilled(0));
    expect(r.fair.killPrograms()).toEqual([{ node: 'node-1', containerId: container!.id }]);
  });

  it('a restarted bot whose recorded server no longer answers starts a fresh one (one start)', async () => {
    const r = await rig();
    await imageOf(submit(r.services, 'first run'));
    await stopServices(r.services);
    r.fair.crashDiffusion();

    const next = restartedServices(r);
    await next.lifecycle.recover();
    expect(next.lifecycle.state).toBe('stopped');
    expect((await imageOf(submit(next, 'after the crash'))).equals(pngForPrompt('after the crash'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(2);
  });
});

describe('readiness on older servers and behind docker-proxy', () => {
  it('a legacy server without /healthcheck (404) is ready when GET / answers', async () => {
    const r = await rig({ fair: { diffusion: { legacy: true } } });
    const paths: string[] = [];
    r.fair.events.once('diffusion-listening', (d: DiffusionStandin) => d.events.on('request', (q: { path: string }) => paths.push(q.path)));
    expect((await imageOf(submit(r.services, 'old server'))).equals(pngForPrompt('old server'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
    const probe = paths.indexOf('/healthcheck');
    expect(probe).toBeGreaterThanOrEqual(0);
    expect(paths[probe + 1]).toBe('/');
  });

  it('docker-proxy resetting connections during the cold start means "not yet", not a failure', async () => {
    const r = await rig({ fair: { coldStartMs: 400, dockerProxy: true } });
    const jobs = [submit(r.services, 'behind the proxy', user('a')), submit(r.services, 'me too', user('b'))];
    expect((await imageOf(jobs[0]!)).equals(pngForPrompt('behind the proxy'))).toBe(true);
    expect((await imageOf(jobs[1]!)).equals(pngForPrompt('me too'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
    expect(r.services.lifecycle.state).toBe('ready');
  });
});

describe('startup timeout and backoff', () => {
  it('fails every waiting job with the timeout message, stops the half-started container, and backs off before the next start', async () => {
    const backoffMs = 600;
    const r = await rig({
      // The model never finishes loading within STARTUP_TIMEOUT_S=1.
      fair: { diffusion: { loadDelayMs: 60_000 } },
      env: { STARTUP_TIMEOUT_S: '1', USER_MAX_PENDING: '5' },
      timing: { backoffMs: [backoffMs] },
    });
    let failedAt = 0;
    r.services.lifecycle.once('start-failed', () => (failedAt = performance.now()));
    const jobs = ['one', 'two', 'three'].map((p) => submit(r.services, p));
    const texts = await Promise.all(jobs.map((j) => failureOf(j, 10_000)));
    expect(texts).toEqual([messages.startupTimeout(1), messages.startupTimeout(1), messages.startupTimeout(1)]);
    expect(texts[0]).toContain('STARTUP_TIMEOUT_S');
    expect(r.fair.startPrograms()).toBe(1);
    // The container that never became ready does not hold the port or the GPU.
    await eventually(() => r.fair.killPrograms().length === 1, 5_000, 'the Kill of the half-started container');
    expect(r.services.lifecycle.status().lastError).toBe(messages.startupTimeout(1));

    // The next job waits out the backoff, then a fresh start (now loading at once) serves it.
    r.fair.diffusionOptions.loadDelayMs = 0;
    const retry = submit(r.services, 'after the backoff');
    expect(r.services.lifecycle.status().nextStartAttemptAt).toBeInstanceOf(Date);
    expect((await imageOf(retry)).equals(pngForPrompt('after the backoff'))).toBe(true);
    // The jobs heard of the failure first, then its container was killed; the next start program came a backoff later.
    const [, secondStart] = programRequests(r, 'Create');
    expect(programRequests(r, 'Kill')[0]!.at).toBeLessThan(secondStart!.at);
    // (1 ms: the backoff is measured on Date.now(), the requests on performance.now())
    expect(secondStart!.at - failedAt).toBeGreaterThanOrEqual(backoffMs - 1);
    expect(r.fair.startPrograms()).toBe(2);
    expect(r.services.lifecycle.status().lastError).toBeUndefined();
  });

  it('a timeout while the start program is still queued on Fair (an image pull) leaves no container behind', async () => {
    const r = await rig({
      // The image pull outlasts STARTUP_TIMEOUT_S=1: Fair names the container only after the job gave up.
      fair: { pullMs: 2_500 },
      env: { STARTUP_TIMEOUT_S: '1' },
      timing: { programPollMs: 20 },
    });
    const started = waitForEvent<{ containerId: string }>(r.fair.events, 'start', 10_000);
    expect(await failureOf(submit(r.services, 'pulling'))).toBe(messages.startupTimeout(1));
    expect(r.fair.killPrograms()).toHaveLength(0); // nothing to name yet
    const container = await started;
    await eventually(() => r.fair.killPrograms().length === 1, 5_000, 'the Kill of the abandoned container');
    expect(r.fair.killPrograms()).toEqual([{ node: 'node-1', containerId: container.containerId }]);
    // Forgotten only once Fair confirmed the Kill.
    await eventually(() => r.services.lifecycle.status().containerId === undefined, 5_000, 'the record to be cleared');
    expect(r.fair.liveContainers()).toEqual([]);
  });

  it("a start program Fair refuses fails the waiting jobs with Fair's reason", async () => {
    const r = await rig({ env: { FAIR_NODE: 'node-9' } });
    const text = await failureOf(submit(r.services, 'nowhere'));
    expect(text).toContain('Could not start the GPU server');
    expect(text).toContain('FAIR_NODE "node-9" is not a node of this cluster (nodes: node-1)');
    expect(r.fair.startPrograms()).toBe(0);
  });
});

describe('crashes', () => {
  it('a crash mid-job fails that job clearly; one restart serves the later jobs', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 50 } }, env: { USER_MAX_PENDING: '5' } });
    r.fair.events.once('diffusion-listening', (d: DiffusionStandin) => d.setFault('crash', { times: 1 }));
    const crashed = submit(r.services, 'the crash');
    const later = ['later one', 'later two', 'later three'].map((p) => submit(r.services, p));
    expect(await failureOf(crashed)).toBe(messages.inferenceFailed('the GPU server dropped the connection mid-generation (it may have crashed)'));
    for (const [i, job] of later.entries()) {
      expect((await imageOf(job)).equals(pngForPrompt(['later one', 'later two', 'later three'][i]!))).toBe(true);
    }
    expect(r.fair.startPrograms()).toBe(2);
    expect(r.fair.rejections).toEqual([]);
  });

  it('a server that died between jobs (connection refused) is restarted once and the job still gets its image', async () => {
    const r = await rig();
    await imageOf(submit(r.services, 'before'));
    r.fair.crashDiffusion();
    const jobs = [submit(r.services, 'after', user('a')), submit(r.services, 'after too', user('b'))];
    expect((await imageOf(jobs[0]!)).equals(pngForPrompt('after'))).toBe(true);
    expect((await imageOf(jobs[1]!)).equals(pngForPrompt('after too'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(2);
  });
});

describe('idle shutdown', () => {
  it('stops the server with a Kill program after IDLE_SHUTDOWN_MIN (decimals: 0.002 min = 120 ms)', async () => {
    const r = await rig({ env: { IDLE_SHUTDOWN_MIN: '0.002' } });
    const killed = waitForEvent<{ containerId: string; ok: boolean }>(r.fair.events, 'kill', 10_000);
    await imageOf(submit(r.services, 'then idle'));
    const [container] = [...r.fair.containers.values()];
    expect(await killed).toEqual({ node: 'node-1', containerId: container!.id, ok: true });
    // Not before the idle time had passed since the generation ended.
    const generationEnd = container!.diffusion!.infers[0]!.endedAt!;
    expect(programRequests(r, 'Kill')[0]!.at - generationEnd).toBeGreaterThanOrEqual(110);
    await eventually(() => r.services.lifecycle.state === 'stopped', 5_000, 'state stopped');
    expect(r.services.lifecycle.status().containerId).toBeUndefined();
  });

  it('never stops while a job waits or runs, even when a generation outlasts the idle time', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 400 } }, env: { IDLE_SHUTDOWN_MIN: '0.002' } });
    const jobs = [submit(r.services, 'slow one', user('a')), submit(r.services, 'slow two', user('b')), submit(r.services, 'slow three', user('c'))];
    const killsSeenAtDone: number[] = [];
    for (const job of jobs) job.subscribe((e) => e.type === 'done' && killsSeenAtDone.push(r.fair.killPrograms().length));
    const killed = waitForEvent(r.fair.events, 'kill', 10_000);
    for (const job of jobs) await imageOf(job);
    // While a job still ran or waited, no Kill (the third is the last: the idle time starts then).
    expect(killsSeenAtDone.slice(0, 2)).toEqual([0, 0]);
    await killed;
    const lastInferEnd = Math.max(
      ...r.fair.containers
        .values()
        .next()
        .value!.diffusion!.infers.map((i) => i.endedAt ?? Infinity),
    );
    expect(programRequests(r, 'Kill')[0]!.at - lastInferEnd).toBeGreaterThanOrEqual(110);
    expect(r.fair.killPrograms()).toHaveLength(1);
    expect(r.fair.startPrograms()).toBe(1);
  });

  it('IDLE_SHUTDOWN_MIN=0 never stops it', async () => {
    const r = await rig({ env: { IDLE_SHUTDOWN_MIN: '0' } });
    await imageOf(submit(r.services, 'stay up'));
    expect(r.services.lifecycle.status().idleShutdownAt).toBeUndefined();
  });

  it('a job that arrives while the server is stopping waits for a fresh start', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 30 } }, env: { IDLE_SHUTDOWN_MIN: '0.002' } });
    const first = submit(r.services, 'before the stop');
    // Once the server runs nothing else talks to Fair until the idle stop: make that Kill slow.
    first.subscribe((e) => e.type === 'generating' && r.fair.setFault('slow', { times: 1, slowMs: 400 }));
    await imageOf(first);
    await waitForEvent(r.services.lifecycle, 'state', 5_000, (s: GpuState) => s === 'stopping');
    const order: string[] = [];
    r.fair.events.on('kill', () => order.push('kill'));
    r.fair.events.on('start', () => order.push('start'));
    const second = submit(r.services, 'during the stop');
    expect((await imageOf(second)).equals(pngForPrompt('during the stop'))).toBe(true);
    expect(order).toEqual(['kill', 'start']);
    expect(r.fair.startPrograms()).toBe(2);
  });
});

describe('/gpu kill', () => {
  it('ends waiting jobs during a cold start with the admin message; no start loop; the next job starts it again', async () => {
    const r = await rig({ fair: { coldStartMs: 1_000 }, env: adminEnv });
    const started = waitForEvent(r.fair.events, 'start', 5_000);
    const states = stateEvents(r.services);
    const jobs = [submit(r.services, 'w1', user('a')), submit(r.services, 'w2', user('b')), submit(r.services, 'w3', user('c'))];
    await started;
    // With jobs waiting, the admin is asked first; nothing stops until confirmed.
    const question = await gpu({ requester: admin, subcommand: 'kill' }, r.services);
    expect(question.needsConfirmation).toBe(true);
    expect(question.message).toBe(messages.gpuKillConfirm(2, 1));
    expect(r.fair.killPrograms()).toHaveLength(0);
    const result = await gpu({ requester: admin, subcommand: 'kill', confirmed: true }, r.services);
    expect(result.ok).toBe(true);
    expect(result.message).toBe(messages.gpuKilled(3));
    for (const job of jobs) expect(await failureOf(job)).toBe(messages.killedByAdmin);
    expect(r.services.lifecycle.state).toBe('stopped');
    expect(r.fair.killPrograms()).toHaveLength(1);
    expect(r.fair.startPrograms()).toBe(1);
    expect(states.at(-1)).toBe('stopped');

    // Nothing restarts on its own; the next /imagine does, once.
    const next = submit(r.services, 'after the kill');
    const restarted = await outcome(next, 15_000);
    expect(restarted.type).toBe('done');
    expect(r.fair.startPrograms()).toBe(2);
  });

  it('ends a running generation with the admin message and stops the server', async () => {
    const r = await rig({ fair: { diffusion: { generationMs: 5_000 } }, env: adminEnv });
    const job = submit(r.services, 'interrupted');
    const diffusion = await r.fair.waitForDiffusion();
    await waitForEvent(diffusion.events, 'infer-start', 5_000);
    const result = await gpu({ requester: admin, subcommand: 'kill', confirmed: true }, r.services);
    expect(result.message).toBe(messages.gpuKilled(1));
    expect(await failureOf(job)).toBe(messages.killedByAdmin);
    expect(r.fair.killPrograms()).toHaveLength(1);
    expect(r.services.lifecycle.state).toBe('stopped');

    r.fair.diffusionOptions.generationMs = 0;
    expect((await imageOf(submit(r.services, 'again'))).equals(pngForPrompt('again'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(2);
  });

  it('a kill while the start program is still queued on Fair leaves no container behind', async () => {
    const r = await rig({
      fair: { programStatusSequence: ['Queued', 'Queued', 'Queued', 'Queued', 'Queued', 'Queued', 'Queued', 'Queued', 'Processing'] },
      env: adminEnv,
    });
    const created = waitForEvent(r.fair.events, 'start', 5_000);
    const job = submit(r.services, 'queued on fair');
    await created; // the container exists on the node; the client still polls info
    await gpu({ requester: admin, subcommand: 'kill', confirmed: true }, r.services);
    expect(await failureOf(job)).toBe(messages.killedByAdmin);
    await eventually(() => [...r.fair.containers.values()].every((c) => !c.running), 5_000, 'no container left running');

    expect((await imageOf(submit(r.services, 'fresh'))).equals(pngForPrompt('fresh'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(2);
    expect(r.fair.rejections).toEqual([]);
  });

  it('non-admins are refused in words', async () => {
    const r = await rig({ env: adminEnv });
    const result = await gpu({ requester: user('mallory'), subcommand: 'kill' }, r.services);
    expect(result.ok).toBe(false);
    expect(result.message).toBe(messages.adminOnly);
    expect(r.fair.killPrograms()).toHaveLength(0);
  });
});

describe('host port already allocated', () => {
  it('uses a diffusion server already answering on the port', async () => {
    const r = await rig({ env: { IDLE_SHUTDOWN_MIN: '0.002' } });
    const squatter = await handDiffusion({ port: r.hostPort });
    const job = submit(r.services, 'on the taken port');
    expect((await imageOf(job)).equals(pngForPrompt('on the taken port'))).toBe(true);
    expect(squatter.infers.map((i) => i.prompt)).toEqual(['on the taken port']);
    expect(r.fair.startPrograms()).toBe(1);
    // Not ours to stop: the idle timer leaves a server the bot did not start alone.
    expect(r.services.lifecycle.status().idleShutdownAt).toBeUndefined();
    expect(r.fair.killPrograms()).toHaveLength(0);
  });

  it('says so, naming FAIR_PORTS, when something else holds the port', async () => {
    const r = await rig();
    const other: Server = createServer((s) => s.destroy());
    await new Promise<void>((resolve) => other.listen(r.hostPort, '127.0.0.1', resolve));
    cleanup.defer(() => new Promise((resolve) => other.close(resolve)));
    const text = await failureOf(submit(r.services, 'blocked'));
    expect(text).toContain(`host port ${r.hostPort} is already taken on node node-1`);
    expect(text).toContain('FAIR_PORTS');
  });
});
