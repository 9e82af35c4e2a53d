/**
 * Lifecycle paths the invariant suites did not reach, found by coverage and mutation testing
 * (test/MUTATION.md): which node a start goes to, what a job reads when the cluster cannot
 * take a start, the stale-epoch guard of markDown, a lifecycle used after close(), the
 * control-plane check of /gpu status, and status facts shared between processes.
 * All through the real services against the Fair and diffusion stand-ins.
 */
import { describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { StartupError } from '../src/fair/lifecycle.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { FAST_TIMING, LogCapture, eventually, startCoreRig, tempDir, type CoreRig } from './helpers/app.js';
import { failureOf, imageOf, submit } from './helpers/jobs.js';
import { startDiffusionStandin } from './standins/diffusion.js';
import { freePort } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();
const rig = (opts: Parameters<typeof startCoreRig>[0] = {}): Promise<CoreRig> => cleanup.closing(startCoreRig(opts));

function services(env: Record<string, string>): Services {
  const s = createServices(loadConfig(env), { logDestination: new LogCapture(), timing: FAST_TIMING });
  cleanup.defer(async () => {
    await s.jobs.shutdown(0);
    await s.lifecycle.close();
    await s.inference.close();
  });
  return s;
}

async function startupError(promise: Promise<unknown>): Promise<StartupError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(StartupError);
  return error as StartupError;
}

describe('which node a start goes to', () => {
  const twoNodes = {
    nodes: [
      { node_id: 'node-a', host_address: '127.0.0.2' },
      { node_id: 'node-b', host_address: '127.0.0.3' },
    ],
  };

  it('FAIR_NODE names a node: the start program goes there, and the server is reached at its host_address', async () => {
    const r = await rig({ fair: twoNodes, env: { FAIR_NODE: 'node-b' } });
    expect((await imageOf(submit(r.services, 'on node b'))).equals(pngForPrompt('on node b'))).toBe(true);
    expect(r.fair.liveContainers().map((c) => [c.node, c.hostAddress])).toEqual([['node-b', '127.0.0.3']]);
    expect(r.services.lifecycle.status()).toMatchObject({ node: 'node-b', hostAddress: '127.0.0.3', endpoint: `http://127.0.0.3:${r.hostPort}` });
  });

  it('FAIR_NODE=any takes the first listed node that has a host_address', async () => {
    const r = await rig({ fair: { nodes: [{ node_id: 'bare' }, ...twoNodes.nodes] } });
    await imageOf(submit(r.services, 'first with an address'));
    expect(r.fair.liveContainers().map((c) => c.node)).toEqual(['node-a']);
  });

  it('a FAIR_NODE the cluster does not list: the job says so and names the nodes; nothing is started', async () => {
    const r = await rig({ fair: twoNodes, env: { FAIR_NODE: 'node-z' } });
    expect(await failureOf(submit(r.services, 'nowhere'))).toBe(
      messages.startupFailed('FAIR_NODE "node-z" is not a node of this cluster (nodes: node-a, node-b)'),
    );
    expect(r.fair.startPrograms()).toBe(0);
  });

  it('a cluster with no nodes, and nodes without host_address (no INFERENCE_URL): each said in words, nothing started', async () => {
    const empty = await rig();
    empty.fair.removeNode('node-1');
    expect(await failureOf(submit(empty.services, 'empty cluster'))).toBe(messages.startupFailed('the Fair cluster has no nodes'));

    const bare = await rig({ fair: { nodes: [{ node_id: 'bare-1' }, { node_id: 'bare-2' }] } });
    expect(await failureOf(submit(bare.services, 'no address'))).toBe(messages.startupFailed('Fair lists no node with a host_address; set INFERENCE_URL'));

    const named = await rig({ fair: { nodes: [{ node_id: 'bare-1' }] }, env: { FAIR_NODE: 'bare-1' } });
    expect(await failureOf(submit(named.services, 'named, no address'))).toBe(
      messages.startupFailed("Fair lists no host_address for node bare-1; set INFERENCE_URL to the server's address"),
    );
    for (const r of [empty, bare, named]) expect(r.fair.startPrograms()).toBe(0);
  });

  it('a refused login says which settings to check', async () => {
    const r = await rig({ env: { FAIR_PASSWORD: 'not-the-password' } });
    const text = await failureOf(submit(r.services, 'wrong password'));
    expect(text).toMatch(/^.*Fair refused the login \(.+\); check FAIR_EMAIL and FAIR_PASSWORD/);
    expect(text).not.toContain('not-the-password');
    expect(r.fair.startPrograms()).toBe(0);
  });
});

describe('markDown: only the server a job used is marked down', () => {
  it('a report about an earlier server (an older epoch) leaves the current one alone', async () => {
    const r = await rig();
    const lifecycle = r.services.lifecycle;
    const downLines = () => r.logs.entries().filter((e) => e.msg === 'GPU server is down; the next job starts it again').length;
    const first = await lifecycle.ensureReady();
    // While ready, ensureReady answers from memory: same server, same epoch.
    expect(await lifecycle.ensureReady()).toEqual(first);
    lifecycle.markDown(first.epoch, 'connection refused');
    expect(downLines()).toBe(1);
    // Marked down: the next caller checks the server again and gets a new epoch.
    const second = await lifecycle.ensureReady();
    expect(second.epoch).toBeGreaterThan(first.epoch);
    // A job that was still on the first server reports it down late: the second stays in use.
    lifecycle.markDown(first.epoch, 'connection refused');
    expect(downLines()).toBe(1);
    expect(await lifecycle.ensureReady()).toEqual(second);
    lifecycle.markDown(second.epoch, 'connection reset');
    expect(downLines()).toBe(2);
    expect((await lifecycle.ensureReady()).epoch).toBeGreaterThan(second.epoch);
    expect(r.fair.startPrograms()).toBe(1);
  });
});

describe('a lifecycle after close()', () => {
  it('refuses a start with the shutdown message and sends nothing to Fair; a second close is harmless', async () => {
    const r = await rig();
    await r.services.lifecycle.close();
    const error = await startupError(r.services.lifecycle.ensureReady());
    expect(error.kind).toBe('shutdown');
    expect(error.message).toBe(messages.stoppedForShutdown);
    await r.services.lifecycle.close();
    expect(r.fair.startPrograms()).toBe(0);
  });
});

describe('without a Fair account (INFERENCE_URL only)', () => {
  it('a job waits for the server on INFERENCE_URL to come up, within STARTUP_TIMEOUT_S, and gets its image', async () => {
    const port = await freePort();
    const dir = tempDir();
    cleanup.defer(() => dir.remove());
    const s = services({ INFERENCE_URL: `http://127.0.0.1:${port}`, DATA_DIR: dir.path, STARTUP_TIMEOUT_S: '10', IDLE_SHUTDOWN_MIN: '0' });
    expect(await s.lifecycle.checkControlPlane()).toBeUndefined();
    const job = submit(s, 'hand-started server');
    // Nobody answers yet: the job waits (starting); then the server is started by hand.
    await eventually(() => s.lifecycle.status().state === 'starting', 5_000, 'the job to wait for the server');
    const server = await cleanup.closing(startDiffusionStandin({ port, host: '127.0.0.1' }));
    expect((await imageOf(job)).equals(pngForPrompt('hand-started server'))).toBe(true);
    expect(server.infers.map((q) => q.prompt)).toEqual(['hand-started server']);
  });
});

describe('/gpu status facts', () => {
  it('the control-plane check: the number of nodes, or why Fair did not answer in time', async () => {
    const r = await rig({
      fair: {
        nodes: [
          { node_id: 'a', host_address: '127.0.0.2' },
          { node_id: 'b', host_address: '127.0.0.3' },
        ],
      },
    });
    expect(await r.services.lifecycle.checkControlPlane()).toEqual({ ok: true, nodes: 2 });
    r.fair.setFault('slow', { slowMs: 2_000 });
    expect(await r.services.lifecycle.checkControlPlane(200)).toEqual({ ok: false, reason: 'no answer within 0.2 s' });
  });

  it("the last generation of any process on the DATA_DIR, and another process's ready server shown as ready", async () => {
    const r = await rig();
    await imageOf(submit(r.services, 'one generation'));
    const status = r.services.lifecycle.status();
    expect(status.lastGenerationMs).toBeGreaterThanOrEqual(0);
    expect(status.lastGenerationAt).toBeInstanceOf(Date);

    // Another process on the same DATA_DIR, that has not used the server itself.
    const other = services(r.env);
    const seen = other.lifecycle.status();
    expect(seen.state).toBe('ready');
    expect(seen.containerId).toBe(r.fair.liveContainers()[0]!.containerId);
    expect(seen.lastGenerationAt?.getTime()).toBe(status.lastGenerationAt?.getTime());
    expect(seen.lastGenerationMs).toBe(status.lastGenerationMs);
  });
});
