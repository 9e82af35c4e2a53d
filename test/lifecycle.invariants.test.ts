/**
 * The lifecycle's promises under a Fair that takes real time and fails calls (issue: never an
 * orphaned GPU, never a false "Stopped"): every container the bot asks for is tracked until Fair
 * confirms it gone, "Stopped" only after a confirmed Kill, an adopted server is stoppable or
 * labelled, one DATA_DIR shared by several processes, deadlines on every wait, a crash during
 * start-up noticed with its exit code, and honest words during a backoff.
 */
import { describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { gpu } from '../src/commands/gpu.js';
import { loadConfig } from '../src/config.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { FAST_TIMING, LogCapture, eventually, startCoreRig, type CoreRig } from './helpers/app.js';
import { failureOf, imageOf, outcome, record, submit, user } from './helpers/jobs.js';
import { startDiffusionStandin, waitForEvent } from './standins/diffusion.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();
const admin = user('admin-1');
const adminEnv = { ADMIN_IDS: `discord:${admin.userId}` };
const rig = (opts: Parameters<typeof startCoreRig>[0] = {}): Promise<CoreRig> => cleanup.closing(startCoreRig({ ...opts, env: { ...adminEnv, ...opts.env } }));

/** Another fairbot process (the CLI, or a restarted bot) on the rig's Fair and DATA_DIR. */
function otherProcess(r: CoreRig, env: Record<string, string> = {}): Services {
  const services = createServices(loadConfig({ ...r.env, ...env }), { logDestination: new LogCapture(), timing: FAST_TIMING });
  cleanup.defer(async () => {
    await services.jobs.shutdown(0);
    await services.lifecycle.close();
    await services.inference.close();
  });
  return services;
}

const kill = (s: Services) => gpu({ requester: admin, subcommand: 'kill', confirmed: true }, s);
const status = (s: Services) => gpu({ requester: admin, subcommand: 'status' }, s);
const createRequest = (r: CoreRig) =>
  waitForEvent(r.fair.events, 'request', 10_000, (q: { call?: string; kind?: string }) => q.call === 'create' && q.kind === 'Create');

describe('/gpu kill during a cold start', () => {
  it('while the start program is Queued: "Stopped" only once Fair confirmed the Kill, and nothing is left running', async () => {
    const r = await rig({ fair: { queueMs: 300 } });
    const sent = createRequest(r);
    const job = submit(r.services, 'queued on fair');
    await sent;
    const reply = await kill(r.services);
    // The reply came after the container was named and killed: at that moment nothing runs.
    expect(r.fair.liveContainers()).toEqual([]);
    expect(reply.message).toBe(messages.gpuKilled(1));
    expect(await failureOf(job)).toBe(messages.killedByAdmin);
    const [killed] = r.fair.killPrograms();
    expect(killed?.containerId).toBe([...r.fair.containers.keys()][0]);
    expect(r.services.lifecycle.status().containerId).toBeUndefined();
    // A second kill has nothing left to stop, and says so.
    expect((await kill(r.services)).message).toBe(messages.gpuNotRunning);
    expect(r.fair.killPrograms()).toHaveLength(1);
  });

  it('while Create pulls longer than the stop deadline: says what is pending, then kills the container as soon as Fair names it', async () => {
    const r = await rig({ fair: { pullMs: 3_000 }, timing: { stopTimeoutMs: 1_000 } });
    const created = waitForEvent<{ containerId: string }>(r.fair.events, 'created', 10_000);
    const sent = createRequest(r);
    const job = submit(r.services, 'a long pull');
    await sent;
    const reply = await kill(r.services);
    expect(reply.ok).toBe(false);
    expect(reply.message).not.toContain('Stopped');
    expect(reply.message).toMatch(/^Not stopped yet: Fair has not created the container of start program \d+ yet/);
    expect(await failureOf(job)).toBe(messages.killedByAdmin);
    expect((await status(r.services)).message).toMatch(/Pending: the start program \d+ is killed as soon as Fair creates its container/);
    // A second kill claims a stop only once Fair confirmed it.
    const again = await kill(r.services);
    if ([messages.gpuKilled(0), messages.gpuNotRunning].includes(again.message)) expect(r.fair.liveContainers()).toEqual([]);
    else expect(again.ok).toBe(false);

    const { containerId } = await created;
    await eventually(() => r.fair.killPrograms().some((k) => k.containerId === containerId), 5_000, 'the Kill of the named container');
    await eventually(() => r.services.lifecycle.status().pendingKill === undefined, 5_000, 'the pending kill to be confirmed');
    expect(r.fair.liveContainers()).toEqual([]);
    expect((await status(r.services)).message).toContain('GPU server: stopped');
  });

  it('a pending kill survives a restart of the bot: the next process kills the container when Fair names it', async () => {
    const r = await rig({ fair: { pullMs: 2_500 }, timing: { stopTimeoutMs: 1_000 } });
    const created = waitForEvent<{ containerId: string }>(r.fair.events, 'created', 10_000);
    const sent = createRequest(r);
    submit(r.services, 'pulling while the bot restarts');
    await sent;
    expect((await kill(r.services)).message).toMatch(/^Not stopped yet/);
    await r.services.jobs.shutdown(0);
    await r.services.lifecycle.close(); // the bot exits with the kill still pending

    const next = otherProcess(r);
    await next.lifecycle.recover();
    const { containerId } = await created;
    await eventually(() => r.fair.killPrograms().some((k) => k.containerId === containerId), 5_000, 'the Kill by the restarted bot');
    await eventually(() => next.lifecycle.status().pendingKill === undefined, 5_000, 'the record to be cleared');
    expect(r.fair.liveContainers()).toEqual([]);
  });
});

describe('a failed Fair call after the start program was accepted', () => {
  it('one 500 on the stdin eof is retried: the start goes on, one start program, the image arrives', async () => {
    const r = await rig();
    r.fair.failCall({ call: 'eof', kind: 'Create', status: 500, times: 1 });
    expect((await imageOf(submit(r.services, 'after an eof blip'))).equals(pngForPrompt('after an eof blip'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
    expect(r.fair.liveContainers()).toHaveLength(1);
    expect(r.services.lifecycle.status().containerId).toBe(r.fair.liveContainers()[0]!.containerId);
  });

  it('an eof that keeps failing gives the start up, and its container is killed, not left running untracked', async () => {
    const r = await rig({ env: { STARTUP_TIMEOUT_S: '3' } });
    r.fair.failCall({ call: 'eof', kind: 'Create', status: 500, times: 1_000 });
    const created = waitForEvent<{ containerId: string }>(r.fair.events, 'created', 10_000);
    const text = await failureOf(submit(r.services, 'eof keeps failing'));
    expect(text).toBe(
      messages.startupFailed('PUT /buckets/…/%23stdin/eof answered 500: internal server error'.replace('…', text.match(/buckets\/(\d+)/)?.[1] ?? '…')),
    );
    const { containerId } = await created;
    await eventually(() => r.fair.killPrograms().some((k) => k.containerId === containerId), 5_000, 'the Kill of the abandoned container');
    await eventually(
      () => r.fair.liveContainers().length === 0 && r.services.lifecycle.status().pendingKill === undefined,
      5_000,
      'nothing running, nothing pending',
    );
    // The next job starts one fresh server: no "port is already allocated", no adoption without a container id.
    r.fair.clearCallFaults();
    expect((await imageOf(submit(r.services, 'fresh start'))).equals(pngForPrompt('fresh start'))).toBe(true);
    expect(r.services.lifecycle.status().external).toBeUndefined();
    expect(r.services.lifecycle.status().containerId).toBeDefined();
  });
});

describe('a 5xx on the start program itself', () => {
  it('a 500 before Fair acted is retried within STARTUP_TIMEOUT_S: one program made, the image arrives', async () => {
    const r = await rig();
    r.fair.failCall({ call: 'create', kind: 'Create', status: 500, times: 2 });
    expect((await imageOf(submit(r.services, 'after two 500s'))).equals(pngForPrompt('after two 500s'))).toBe(true);
    expect(r.fair.callCount('create', 'Create')).toBe(3);
    expect(r.fair.programCounts().Create).toBe(1);
    expect(r.fair.liveContainers()).toHaveLength(1);
  });

  it('a 500 after Fair acted (the program exists, the answer was lost): never two containers running, and nothing claims to stop what it cannot', async () => {
    const r = await rig({ fair: { coldStartMs: 300 } });
    r.fair.failCall({ call: 'create', kind: 'Create', status: '500-after-acting', times: 1 });
    const job = submit(r.services, 'the answer was lost');
    const final = await outcome(job, 15_000);
    // Whichever container won the port serves (or the job says why not); at most one ever runs.
    if (final.type === 'done') expect(final.image.bytes.equals(pngForPrompt('the answer was lost'))).toBe(true);
    expect(r.fair.liveContainers().length).toBeLessThanOrEqual(1);
    const live = r.fair.liveContainers()[0];
    const shown = r.services.lifecycle.status();
    // The running container is either the one the record tracks, or labelled as not started by this bot.
    if (live) expect(shown.containerId === live.containerId || shown.external === true).toBe(true);
    const reply = await kill(r.services);
    if (reply.message.startsWith('Stopped')) expect(r.fair.liveContainers()).toEqual([]);
  });
});

describe('a server on our port that this bot did not start', () => {
  it('is used, labelled as started outside the bot, and never claimed stopped', async () => {
    const r = await rig();
    cleanup.closing(startDiffusionStandin({ port: r.hostPort }));
    expect((await imageOf(submit(r.services, 'on a squatter'))).equals(pngForPrompt('on a squatter'))).toBe(true);
    expect((await status(r.services)).message).toContain('Started outside this bot');
    const reply = await kill(r.services);
    expect(reply.ok).toBe(false);
    expect(reply.message).toBe(messages.gpuKillExternal(`http://127.0.0.1:${r.hostPort}`));
    expect(r.fair.killPrograms()).toHaveLength(0);
  });
});

describe('one DATA_DIR, several processes', () => {
  it('two processes asking at once start one server between them, and both get their images', async () => {
    const r = await rig({ fair: { queueMs: 100, pullMs: 100, coldStartMs: 200 } });
    const cli = otherProcess(r);
    const [a, b] = [submit(r.services, 'from the bot'), submit(cli, 'from the cli', user('cli-user', 'cli'))];
    expect((await imageOf(a)).equals(pngForPrompt('from the bot'))).toBe(true);
    expect((await imageOf(b)).equals(pngForPrompt('from the cli'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
    expect(r.fair.liveContainers()).toHaveLength(1);
  });

  it("the bot's idle stop never kills the server under another process's generation", async () => {
    const r = await rig({ env: { IDLE_SHUTDOWN_MIN: '0.002' }, fair: { diffusion: { generationMs: 800 } } }); // idle: 120 ms
    const cli = otherProcess(r, { IDLE_SHUTDOWN_MIN: '0' });
    const long = submit(cli, 'a long generation in the cli', user('cli-user', 'cli'));
    const diffusion = await r.fair.waitForDiffusion();
    await waitForEvent(diffusion.events, 'infer-start', 5_000);
    // The bot adopts the server the CLI started; its idle time passes several times over during the generation.
    await eventually(() => r.services.lifecycle.state === 'ready', 5_000, 'the bot to adopt the server');
    expect((await imageOf(long)).equals(pngForPrompt('a long generation in the cli'))).toBe(true);
    expect(r.fair.killPrograms()).toHaveLength(0);
    // Once nobody uses it, the bot's idle stop does stop it.
    await eventually(() => r.fair.killPrograms().length === 1 && r.fair.liveContainers().length === 0, 5_000, 'the idle stop');
  });

  it('a kill from another process: the bot notices, sends no Kill of its own, and starts anew for the next job', async () => {
    const r = await rig();
    expect((await imageOf(submit(r.services, 'first'))).equals(pngForPrompt('first'))).toBe(true);
    const cli = otherProcess(r);
    expect((await kill(cli)).message).toBe(messages.gpuKilled(0));
    expect(r.fair.killPrograms()).toHaveLength(1);
    await eventually(() => r.services.lifecycle.state === 'stopped', 5_000, 'the bot to see the server stopped');
    expect((await status(r.services)).message).toContain('GPU server: stopped');
    expect((await imageOf(submit(r.services, 'second'))).equals(pngForPrompt('second'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(2);
    expect(r.fair.killPrograms()).toHaveLength(1);
  });

  it('/gpu status in one process says "starting" while another process starts the server, never "stopped"', async () => {
    const r = await rig({ fair: { pullMs: 1_000 } });
    const cli = otherProcess(r);
    const sent = createRequest(r);
    const job = submit(cli, 'started by the cli', user('cli-user', 'cli'));
    await sent;
    expect((await status(r.services)).message).toMatch(/^GPU server: starting/);
    await imageOf(job);
    await eventually(() => r.services.lifecycle.state === 'ready', 5_000, 'the bot to adopt the server');
    expect((await status(r.services)).message).toMatch(/^GPU server: ready/);
  });
});

describe('deadlines', () => {
  it('a program status Fair does not document fails the start at once, with the status named', async () => {
    const r = await rig();
    r.fair.setProgramStatus('Create', 'Expired');
    const text = await failureOf(submit(r.services, 'expired'), 5_000);
    expect(text).toBe(messages.startupFailed('program info: unknown program status "Expired"'));
  });

  it('a Kill that stays NotResponding: /gpu kill answers at its own deadline without "Stopped"; a job meanwhile is not held by the stop', async () => {
    const r = await rig({ env: { STARTUP_TIMEOUT_S: '1' }, timing: { stopTimeoutMs: 3_000 } });
    expect((await imageOf(submit(r.services, 'before'))).equals(pngForPrompt('before'))).toBe(true);
    r.fair.setNotResponding('node-1');
    const replying = kill(r.services);
    await eventually(() => r.fair.killPrograms().length === 1, 5_000, 'the Kill program');
    const order: string[] = [];
    const job = submit(r.services, 'during the stop');
    void outcome(job).then(() => order.push('job'));
    const reply = await replying;
    order.push('kill reply');
    expect(reply.ok).toBe(false);
    expect(reply.message).toBe(messages.gpuKillFailed('Fair did not confirm the Kill within 3 s'));
    // STARTUP_TIMEOUT_S (1 s) ended the job before the stop's deadline (3 s) answered the admin.
    await outcome(job);
    expect(order).toEqual(['job', 'kill reply']);
    expect((await status(r.services)).message).toContain('Pending: a Kill of container');
    // Once the node answers again, the pending Kill is finished.
    r.fair.setNotResponding('node-1', false);
    await eventually(() => r.fair.liveContainers().length === 0 && r.services.lifecycle.status().pendingKill === undefined, 10_000, 'the Kill confirmed');
  });

  it('close() returns within its few seconds while Fair hangs', async () => {
    const r = await rig();
    r.fair.setFault('slow', { slowMs: 60_000 });
    const job = submit(r.services, 'fair hangs');
    await waitForEvent(r.fair.events, 'request', 5_000);
    const closed = r.services.lifecycle.close().then(() => 'closed');
    const late = new Promise((resolve) => setTimeout(resolve, 10_000, 'still waiting')).then(String);
    expect(await Promise.race([closed, late])).toBe('closed');
    expect(job.state).not.toBe('generated');
  });
});

describe('a crash during start-up', () => {
  it('is reported with its exit code, not as a timeout, and the record is cleared', async () => {
    const r = await rig({ fair: { crashDuringStartup: { exitCode: 3, afterMs: 20 } } });
    const text = await failureOf(submit(r.services, 'crashes while loading'), 10_000);
    expect(text).toBe(messages.startupFailed(messages.serverExited(3)));
    await eventually(() => r.services.lifecycle.status().containerId === undefined, 5_000, 'the record to be cleared');
    expect(r.fair.liveContainers()).toEqual([]);
  });
});

describe('backoff', () => {
  it('users read when the start is retried; /gpu kill clears the backoff; status never says "stopped" during it', async () => {
    const r = await rig({ timing: { backoffMs: [5_000] } });
    r.fair.crashDuringStartup({ exitCode: 1 });
    await failureOf(submit(r.services, 'the first start crashes'), 10_000);
    const waiting = submit(r.services, 'during the backoff', user('u2'));
    const seen = record(waiting);
    await eventually(() => seen.some((e) => e.type === 'retrying'), 5_000, 'the retrying progress');
    expect(messages.progress(seen.find((e) => e.type === 'retrying')!)).toMatch(/^Retrying the GPU start in [45] s: the last attempt failed a moment ago\.$/);
    expect(seen.some((e) => e.type === 'warming')).toBe(false);
    const shown = (await status(r.services)).message;
    expect(shown).toMatch(/^GPU server: starting/);
    expect(shown).toMatch(/Next start attempt in [45] s/);

    expect((await kill(r.services)).message).toBe(messages.gpuKilled(1));
    expect(r.services.lifecycle.status().nextStartAttemptAt).toBeUndefined();
    // No backoff left: the next job starts at once and gets its image.
    const startsBefore = r.fair.startPrograms();
    expect((await imageOf(submit(r.services, 'right after the kill'), 4_000)).equals(pngForPrompt('right after the kill'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(startsBefore + 1);
  });
});

describe('nodes without a host_address', () => {
  it('are usable when INFERENCE_URL names the server', async () => {
    const r = await rig({ fair: { nodes: [{ node_id: 'bare-node' }] } });
    const services = otherProcess(r, { INFERENCE_URL: `http://127.0.0.1:${r.hostPort}`, FAIR_NODE: 'bare-node' });
    expect((await imageOf(submit(services, 'on a bare node'))).equals(pngForPrompt('on a bare node'))).toBe(true);
    expect(r.fair.startPrograms()).toBe(1);
  });

  it('without INFERENCE_URL the job says what to set', async () => {
    const r = await rig({ fair: { nodes: [{ node_id: 'bare-node' }] } });
    expect(await failureOf(submit(r.services, 'nowhere to reach'))).toBe(messages.startupFailed('Fair lists no node with a host_address; set INFERENCE_URL'));
  });
});
