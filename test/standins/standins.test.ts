// Tests of the stand-ins themselves, over real sockets with plain fetch.
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { performance } from 'node:perf_hooks';
import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { startDiffusionStandin, type DiffusionStandin } from './diffusion.js';
import { freePort, startFairStandin, waitForEvent, type FairStandin } from './fair.js';
import { crc32, PNG_SIGNATURE, pngForPrompt } from './png.js';
import { cleanupAfterEach } from '../helpers/cleanup.js';

const cleanup = cleanupAfterEach();
const diffusion = (opts: Parameters<typeof startDiffusionStandin>[0] = {}): Promise<DiffusionStandin> => cleanup.closing(startDiffusionStandin(opts));
const fair = (opts: Parameters<typeof startFairStandin>[0] = {}): Promise<FairStandin> => cleanup.closing(startFairStandin(opts));

/** The error code under undici's "fetch failed" (ECONNREFUSED, ECONNRESET, UND_ERR_SOCKET...). */
async function fetchFailure(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => {
      throw new Error('expected fetch to fail');
    },
    (e: unknown) => e as { cause?: { code?: string } },
  );
  return err.cause?.code ?? 'unknown';
}

/** Splits a PNG into chunks, checking every CRC. */
function pngChunks(png: Buffer): Array<{ type: string; data: Buffer }> {
  expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
  const chunks: Array<{ type: string; data: Buffer }> = [];
  for (let o = 8; o < png.length; ) {
    const len = png.readUInt32BE(o);
    const type = png.toString('ascii', o + 4, o + 8);
    const data = png.subarray(o + 8, o + 8 + len);
    expect(png.readUInt32BE(o + 8 + len)).toBe(crc32(png.subarray(o + 4, o + 8), data));
    chunks.push({ type, data });
    o += 12 + len;
  }
  return chunks;
}

function decodeRows(png: Buffer): { width: number; height: number; rows: Buffer } {
  const chunks = pngChunks(png);
  expect(chunks.map((c) => c.type)).toEqual(['IHDR', 'IDAT', 'IEND']);
  const ihdr = chunks[0]!.data;
  const rows = inflateSync(chunks[1]!.data);
  return { width: ihdr.readUInt32BE(0), height: ihdr.readUInt32BE(4), rows };
}

describe('pngForPrompt', () => {
  it('is a valid, deterministic PNG that differs per prompt', () => {
    const a = pngForPrompt('a cat');
    expect(pngForPrompt('a cat').equals(a)).toBe(true);
    expect(pngForPrompt('a dog').equals(a)).toBe(false);
    const { width, height, rows } = decodeRows(a);
    expect([width, height]).toEqual([64, 64]);
    expect(rows.length).toBe(height * (1 + width * 3));
  });

  it('honours minBytes quickly', () => {
    const t0 = performance.now();
    const big = pngForPrompt('big', { minBytes: 5 * 1024 * 1024 });
    const ms = performance.now() - t0;
    expect(big.length).toBeGreaterThanOrEqual(5 * 1024 * 1024);
    expect(big.length).toBeLessThan(5 * 1024 * 1024 + 64 * 1024);
    expect(ms).toBeLessThan(1000); // typically ~50 ms; generous for loaded CI machines
    const { width, height, rows } = decodeRows(big);
    expect(rows.length).toBe(height * (1 + width * 3));
    expect(pngForPrompt('big', { minBytes: 5 * 1024 * 1024 }).equals(big)).toBe(true);
    expect(pngForPrompt('other', { minBytes: 5 * 1024 * 1024 }).equals(big)).toBe(false);
  });
});

const infer = (d: DiffusionStandin, prompt: string) =>
  fetch(`${d.url}/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: { text: prompt } }) });

describe('diffusion stand-in', () => {
  it('loads, then generates the PNG for the prompt', async () => {
    // A load delay far beyond what a loaded machine needs for three requests: no race with it.
    const d = await diffusion({ loadDelayMs: 3_000, generationMs: 30 });
    expect((await fetch(`${d.url}/`)).status).toBe(200);
    expect((await fetch(`${d.url}/healthcheck`)).status).toBe(503);
    expect((await infer(d, 'early')).status).toBe(503);
    await d.waitForLoaded(10_000);
    expect((await fetch(`${d.url}/healthcheck`)).status).toBe(200);

    const res = await infer(d, 'a red fox');
    expect(res.status).toBe(200);
    const json = (await res.json()) as { output: { image_b64: string }; analytics: { inference_time_ms: number } };
    expect(Buffer.from(json.output.image_b64, 'base64').equals(pngForPrompt('a red fox'))).toBe(true);
    expect(json.analytics.inference_time_ms).toBeGreaterThanOrEqual(25);
    expect(d.infers).toHaveLength(1);
    const rec = d.infers[0]!;
    expect(rec.prompt).toBe('a red fox');
    expect(rec.endedAt! - rec.startedAt).toBeGreaterThanOrEqual(25);
  });

  it('legacy servers have no /healthcheck', async () => {
    const d = await diffusion({ legacy: true });
    expect((await fetch(`${d.url}/healthcheck`)).status).toBe(404);
    expect((await fetch(`${d.url}/`)).status).toBe(200);
  });

  it('rejects malformed bodies with 400 JSON', async () => {
    const d = await diffusion();
    for (const body of ['not json', '{"prompt":"flat"}', '{}']) {
      const res = await fetch(`${d.url}/infer`, { method: 'POST', body });
      expect(res.status).toBe(400);
      expect(await res.json()).toHaveProperty('error');
    }
    expect(d.infers).toHaveLength(0);
  });

  it('waitForInfers resolves on events', async () => {
    const d = await diffusion({ generationMs: 20 });
    const waiting = d.waitForInfers(2, 2000);
    await Promise.all([infer(d, 'one'), infer(d, 'two')]);
    expect((await waiting).map((r) => r.prompt).sort()).toEqual(['one', 'two']);
    await expect(d.waitForInfers(3, 50)).rejects.toThrow(/timed out/);
  });

  it('answers faults with statuses and bodies, `times` then clears', async () => {
    const d = await diffusion();
    const b64 = async (r: Response) => ((await r.json()) as { output: { image_b64?: string } }).output.image_b64;

    d.setFault('500', { times: 1 });
    const r500 = await infer(d, 'x');
    expect(r500.status).toBe(500);
    expect(await r500.json()).toHaveProperty('error');
    expect((await infer(d, 'x')).status).toBe(200); // cleared after one

    d.setFault('503');
    expect((await infer(d, 'x')).status).toBe(503);
    expect((await infer(d, 'x')).status).toBe(503); // until cleared
    d.setFault(null);

    d.setFault('non-json', { times: 1 });
    const html = await infer(d, 'x');
    expect(html.status).toBe(200);
    expect(html.headers.get('content-type')).toContain('text/html');
    await expect(html.json()).rejects.toThrow();

    d.setFault('no-image', { times: 1 });
    expect(await b64(await infer(d, 'x'))).toBeUndefined();

    d.setFault('bad-base64', { times: 1 });
    expect(await b64(await infer(d, 'x'))).toBe('%%%not base64%%%');

    d.setFault('not-image', { times: 1 });
    const notImage = Buffer.from((await b64(await infer(d, 'x')))!, 'base64');
    expect(notImage.length).toBeGreaterThan(0);
    expect(notImage.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(false);
    expect(notImage[0]).not.toBe(0xff); // not JPEG
    expect(notImage.toString('ascii', 0, 4)).not.toBe('RIFF'); // not WebP

    d.setFault('huge', { times: 1 });
    const huge = Buffer.from((await b64(await infer(d, 'x')))!, 'base64');
    expect(huge.length).toBeGreaterThan(25 * 1024 * 1024);
    expect(huge.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);

    expect(d.infers.map((r) => r.fault ?? 'ok')).toEqual(['500', 'ok', '503', '503', 'non-json', 'no-image', 'bad-base64', 'not-image', 'huge']);
  });

  it("'reset' resets just that connection", async () => {
    const d = await diffusion();
    d.setFault('reset', { times: 1 });
    expect(await fetchFailure(infer(d, 'x'))).toBe('ECONNRESET');
    expect((await infer(d, 'x')).status).toBe(200);
  });

  it("'crash' drops the request and the server refuses later connections", async () => {
    const d = await diffusion();
    const closed = waitForEvent<{ crashed: boolean }>(d.events, 'close', 2000);
    d.setFault('crash');
    expect(await fetchFailure(infer(d, 'x'))).not.toBe('unknown');
    expect((await closed).crashed).toBe(true);
    expect(await fetchFailure(fetch(`${d.url}/`))).toBe('ECONNREFUSED');
    await d.close(); // still fine after a crash
  });

  it("'hang' never answers, and close() still ends it", async () => {
    const d = await diffusion();
    d.setFault('hang');
    const started = waitForEvent(d.events, 'infer-start', 2000);
    const pending = fetchFailure(infer(d, 'x'));
    await started;
    await d.close();
    expect(await pending).not.toBe('unknown');
  });

  it('close() ends keep-alive connections at once', async () => {
    const d = await diffusion();
    expect((await fetch(`${d.url}/`)).status).toBe(200); // leaves a keep-alive socket in undici's pool
    const t0 = performance.now();
    await d.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(await fetchFailure(fetch(`${d.url}/`))).toBe('ECONNREFUSED');
  });
});

// ---- Fair control plane ----

const startProgram = (hostPort: number, over: Record<string, unknown> = {}, wait = false) => ({
  version: 'V018',
  commands: [
    {
      type: 'Create',
      container_desc: {
        image: 'faircompute/diffusion-octo:v1',
        runtime: 'nvidia',
        ports: [
          [
            { port: hostPort, ip: 'null' },
            { port: 8080, protocol: 'Tcp' },
          ],
        ],
        command: [],
        host_config: { network_mode: 'bridge' },
        ...over,
      },
    },
    { type: 'Start', container_id: '$0' },
    ...(wait ? [{ type: 'Wait', container_id: '$0' }] : []),
  ],
});
const killProgram = (containerId: string) => ({ version: 'V018', commands: [{ type: 'Kill', container_id: containerId }] });
const waitProgram = (containerId: string) => ({ version: 'V018', commands: [{ type: 'Wait', container_id: containerId }] });

type Created = { Ok: { container_id: string } };

class Client {
  token = '';
  constructor(readonly f: FairStandin) {}
  async login(password = 'test-password', version = 'V018'): Promise<Response> {
    const res = await fetch(`${this.f.url}/api/v0/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: 'admin@example.com', password, version }),
    });
    if (res.ok) this.token = ((await res.clone().json()) as { token: string }).token;
    return res;
  }
  call(method: string, path: string, body?: unknown): Promise<Response> {
    return fetch(`${this.f.url}/api/v0${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }
  /** Creates a program, returning the ids as the exact decimal text of the response. */
  async program(node: string, body: unknown): Promise<{ programId: string; bucketId: string; raw: string }> {
    const res = await this.call('PUT', `/nodes/${node}/programs`, body);
    const raw = await res.text();
    expect(res.status, raw).toBe(200);
    const m = /^\{"program_id":(\d+),"bucket_id":(\d+)\}$/.exec(raw);
    expect(m, raw).not.toBeNull();
    return { programId: m![1]!, bucketId: m![2]!, raw };
  }
  async info(node: string, programId: string): Promise<string> {
    const res = await this.call('GET', `/nodes/${node}/programs/${programId}/info`);
    expect(res.status).toBe(200);
    return ((await res.json()) as { status: string }).status;
  }
  async result(node: string, programId: string): Promise<unknown[]> {
    const res = await this.call('GET', `/nodes/${node}/programs/${programId}/result`);
    expect(res.status).toBe(200);
    return ((await res.json()) as { result: unknown[] }).result;
  }
  /** The result once the program has completed. */
  async finalResult(node: string, programId: string): Promise<unknown[]> {
    await this.f.waitForProgram(programId);
    expect(await this.info(node, programId)).toBe('Completed');
    return this.result(node, programId);
  }
  /** Starts a container and waits for its diffusion server; returns the container id. */
  async running(node: string, hostPort: number): Promise<string> {
    const listening = waitForEvent(this.f.events, 'diffusion-listening', 5000);
    const { programId } = await this.program(node, startProgram(hostPort));
    const [created] = (await this.finalResult(node, programId)) as Created[];
    await listening;
    return created!.Ok.container_id;
  }
}

async function loggedIn(opts: Parameters<typeof startFairStandin>[0] = {}): Promise<Client> {
  const c = new Client(await fair(opts));
  expect((await c.login()).status).toBe(200);
  return c;
}

describe('fair stand-in', () => {
  it('logs in, and refuses calls without a valid token', async () => {
    const c = new Client(await fair());
    expect((await c.call('GET', '/nodes')).status).toBe(401);
    const bad = await c.login('wrong');
    expect(bad.status).toBe(401);
    expect(await bad.json()).toHaveProperty('message');
    expect((await c.login('test-password', 'V017')).status).toBe(400);
    expect((await c.login()).status).toBe(200);
    const nodes = await c.call('GET', '/nodes');
    expect(await nodes.json()).toEqual({ nodes: [{ node_id: 'node-1', host_address: '127.0.0.1' }] });
    c.f.expireTokens();
    expect((await c.call('GET', '/nodes')).status).toBe(401);
    expect(c.f.logins()).toBe(3);
  });

  it('expires tokens after tokenTtlMs', async () => {
    const c = await loggedIn({ tokenTtlMs: 0 });
    expect((await c.call('GET', '/nodes')).status).toBe(401);
  });

  it('starts a container: 64-bit ids, eof, info, result, diffusion after the cold start, kill', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 30 });
    const listening = waitForEvent<DiffusionStandin>(c.f.events, 'diffusion-listening', 5000);
    const { programId, bucketId } = await c.program('node-1', startProgram(hostPort));
    expect(BigInt(programId)).toBeGreaterThan(2n ** 53n);
    expect(BigInt(bucketId)).toBeGreaterThan(2n ** 53n);
    expect(String(Number(programId))).not.toBe(programId); // a JS number would lose it

    const eof = await c.call('PUT', `/buckets/${bucketId}/%23stdin/eof`);
    expect(eof.status).toBe(204);
    expect(c.f.eofs()).toEqual([bucketId]);
    expect(c.f.requests.some((r) => r.path === `/api/v0/buckets/${bucketId}/%23stdin/eof`)).toBe(true);
    expect((await c.call('GET', `/nodes/node-1/programs/${BigInt(Number(programId))}/info`)).status).toBe(404); // rounded id is unknown

    const result = await c.finalResult('node-1', programId);
    const containerId = (result[0] as Created).Ok.container_id;
    expect(containerId).toMatch(/^[0-9a-f]{64}$/);
    expect(result).toEqual([{ Ok: { container_id: containerId } }, { Ok: {} }]);
    expect(c.f.startPrograms()).toBe(1);

    const d = await listening;
    expect(d.port).toBe(hostPort);
    expect(c.f.diffusion()).toBe(d);
    expect(c.f.containers.get(containerId)).toMatchObject({ hostPort, running: true, state: 'running', node: 'node-1' });
    expect((await fetch(`http://127.0.0.1:${hostPort}/healthcheck`)).status).toBe(200);

    const exited = waitForEvent(c.f.events, 'exited', 5000);
    const kill = await c.program('node-1', killProgram(containerId));
    expect(await c.finalResult('node-1', kill.programId)).toEqual([{ Ok: {} }]);
    expect(await exited).toEqual({ node: 'node-1', containerId, exitCode: 137 });
    expect(c.f.killPrograms()).toEqual([{ node: 'node-1', containerId }]);
    expect(c.f.containers.get(containerId)).toMatchObject({ running: false, state: 'exited', exitCode: 137 });
    expect(c.f.diffusion()).toBeUndefined();
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');

    // Killing it again, or something unknown, is an Err.
    const again = await c.program('node-1', killProgram(containerId));
    expect(await c.finalResult('node-1', again.programId)).toEqual([{ Err: `Cannot kill container: ${containerId}: Container ${containerId} is not running` }]);
    const unknown = await c.program('node-1', killProgram('f'.repeat(64)));
    expect(await c.finalResult('node-1', unknown.programId)).toEqual([{ Err: `No such container: ${'f'.repeat(64)}` }]);
    expect(c.f.programCounts()).toEqual({ Create: 1, Kill: 3, Wait: 0 });
  });

  it('queues a program, then runs it command by command: result grows as each finishes', async () => {
    const hostPort = await freePort();
    // Steps long enough that each state is seen over HTTP before the next one begins.
    const c = await loggedIn({ queueMs: 800, pullMs: 800, startMs: 800, coldStartMs: 0 });
    const processing = waitForEvent(c.f.events, 'program-status', 5000);
    const created = waitForEvent<{ containerId: string }>(c.f.events, 'created', 5000);
    const { programId } = await c.program('node-1', startProgram(hostPort));
    expect(await c.info('node-1', programId)).toBe('Queued');
    expect(await c.result('node-1', programId)).toEqual([]);

    await processing; // pulling the image
    expect(await c.info('node-1', programId)).toBe('Processing');
    expect(await c.result('node-1', programId)).toEqual([]);
    expect(c.f.containers.size).toBe(0);

    const { containerId } = await created; // pulled: the container exists, not yet started
    expect(await c.info('node-1', programId)).toBe('Processing');
    expect(await c.result('node-1', programId)).toEqual([{ Ok: { container_id: containerId } }]);
    expect(c.f.containers.get(containerId)).toMatchObject({ state: 'created', running: false });
    expect(c.f.liveContainers()).toEqual([]);

    expect(await c.finalResult('node-1', programId)).toEqual([{ Ok: { container_id: containerId } }, { Ok: {} }]);
    expect(c.f.liveContainers()).toEqual([{ node: 'node-1', containerId, programId, hostPort, hostAddress: '127.0.0.1' }]);
    expect(c.f.programs()).toEqual([
      {
        node: 'node-1',
        programId,
        bucketId: expect.any(String),
        kind: 'Create',
        status: 'Completed',
        result: [{ Ok: { container_id: containerId } }, { Ok: {} }],
      },
    ]);
  });

  it('forwards diffusion options and follows programStatusSequence (commands then run at once)', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0, diffusion: { legacy: true }, programStatusSequence: ['Queued', 'Completed'] });
    const { programId } = await c.program('node-1', startProgram(hostPort));
    expect(await c.info('node-1', programId)).toBe('Queued');
    expect(await c.info('node-1', programId)).toBe('Completed');
    expect(await c.info('node-1', programId)).toBe('Completed');
    const d = await c.f.waitForDiffusion(5000);
    expect((await fetch(`${d.url}/healthcheck`)).status).toBe(404);
  });

  it('reports a taken host port as Docker does; the container stays created', async () => {
    const hostPort = await freePort();
    const squatter: NetServer = createNetServer();
    await new Promise<void>((r) => squatter.listen(hostPort, '127.0.0.1', r));
    cleanup.defer(() => new Promise<void>((r) => squatter.close(() => r())));
    const c = await loggedIn();
    const { programId } = await c.program('node-1', startProgram(hostPort, {}, true));
    const result = await c.finalResult('node-1', programId);
    // The Err ends the program: its Wait never runs.
    expect(result).toEqual([{ Ok: { container_id: expect.any(String) } }, { Err: `Bind for 0.0.0.0:${hostPort} failed: port is already allocated` }]);
    const containerId = (result[0] as Created).Ok.container_id;
    expect(c.f.containers.get(containerId)?.state).toBe('created');
    // Neither running nor killable; a Wait on it answers at once (docker wait).
    const kill = await c.program('node-1', killProgram(containerId));
    expect(await c.finalResult('node-1', kill.programId)).toEqual([{ Err: expect.stringContaining('is not running') }]);
    const wait = await c.program('node-1', waitProgram(containerId));
    expect(await c.finalResult('node-1', wait.programId)).toEqual([{ Ok: { exit_code: 0 } }]);
  });

  it('a second Start on the same host port fails, even when concurrent', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0 });
    const [p1, p2] = await Promise.all([c.program('node-1', startProgram(hostPort)), c.program('node-1', startProgram(hostPort))]);
    const results = [await c.finalResult('node-1', p1.programId), await c.finalResult('node-1', p2.programId)];
    expect(results.map((r) => Object.keys(r[1] as object)[0]).sort()).toEqual(['Err', 'Ok']);
    expect(c.f.startPrograms()).toBe(2);
    await c.f.waitForDiffusion(5000);
    expect(c.f.liveContainers()).toHaveLength(1);
  });

  it('with dockerProxy, resets connections during the cold start', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 60_000, dockerProxy: true });
    const started = waitForEvent<{ containerId: string }>(c.f.events, 'start', 5000);
    await c.program('node-1', startProgram(hostPort));
    const { containerId } = await started;
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNRESET');
    const kill = await c.program('node-1', killProgram(containerId));
    expect(await c.finalResult('node-1', kill.programId)).toEqual([{ Ok: {} }]);
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');
  });

  it('rejects malformed programs with 400 and records why', async () => {
    const hostPort = await freePort();
    const c = await loggedIn();
    const res = await c.call(
      'PUT',
      '/nodes/node-1/programs',
      startProgram(hostPort, {
        ports: [
          [
            { port: hostPort, ip: null },
            { port: 8080, protocol: 'Tcp' },
          ],
        ],
      }),
    );
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/ip.*"null"/);
    expect((await c.call('PUT', '/nodes/node-1/programs', startProgram(hostPort, { extra: 1 }))).status).toBe(400);
    expect((await c.call('PUT', '/nodes/node-1/programs', { ...startProgram(hostPort), version: 'V017' })).status).toBe(400);
    expect((await c.call('PUT', '/nodes/node-1/programs', waitProgram('$0'))).status).toBe(400);
    const startThenWaitOther = startProgram(hostPort, {}, true);
    startThenWaitOther.commands[2]!.container_id = 'abc';
    expect((await c.call('PUT', '/nodes/node-1/programs', startThenWaitOther)).status).toBe(400);
    expect((await c.call('PUT', '/nodes/nope/programs', startProgram(hostPort))).status).toBe(404);
    expect(c.f.rejections).toHaveLength(5);
    expect(c.f.startPrograms()).toBe(0);
  });

  it('crashDiffusion kills the live server abruptly', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0 });
    await c.program('node-1', startProgram(hostPort));
    const d = await c.f.waitForDiffusion(5000);
    c.f.crashDiffusion();
    expect(d.closed()).toBe(true);
    expect(c.f.diffusion()).toBeUndefined();
    expect([...c.f.containers.values()][0]).toMatchObject({ running: false, exitCode: 1 });
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');
  });

  it('faults: down, 500, slow, login-refused', async () => {
    const c = await loggedIn();
    c.f.setFault('down', { times: 1 });
    expect(await fetchFailure(c.call('GET', '/nodes'))).toBe('ECONNRESET');
    c.f.setFault('500', { times: 1 });
    expect((await c.call('GET', '/nodes')).status).toBe(500);
    c.f.setFault('slow', { times: 1, slowMs: 100 });
    const t0 = performance.now();
    expect((await c.call('GET', '/nodes')).status).toBe(200);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
    c.f.setFault('login-refused', { times: 1 });
    expect((await c.call('GET', '/nodes')).status).toBe(200); // only logins are refused
    expect((await c.login()).status).toBe(401);
    expect((await c.login()).status).toBe(200);
  });
});

describe('fair stand-in: Wait', () => {
  it('[Wait ID] stays Processing while the container runs and completes with 137 after a Kill', async () => {
    const c = await loggedIn({ coldStartMs: 0 });
    const containerId = await c.running('node-1', await freePort());
    const wait = await c.program('node-1', waitProgram(containerId));
    await c.f.waitForProgram(wait.programId, 'Processing');
    expect(await c.info('node-1', wait.programId)).toBe('Processing');
    expect(await c.result('node-1', wait.programId)).toEqual([]);

    const kill = await c.program('node-1', killProgram(containerId));
    expect(await c.finalResult('node-1', kill.programId)).toEqual([{ Ok: {} }]);
    expect(await c.finalResult('node-1', wait.programId)).toEqual([{ Ok: { exit_code: 137 } }]);
    // On an exited container it answers at once; on an unknown one it is an Err.
    const again = await c.program('node-1', waitProgram(containerId));
    expect(await c.finalResult('node-1', again.programId)).toEqual([{ Ok: { exit_code: 137 } }]);
    const unknown = await c.program('node-1', waitProgram('0123abc'));
    expect(await c.finalResult('node-1', unknown.programId)).toEqual([{ Err: 'No such container: 0123abc' }]);
    expect(c.f.programCounts()).toEqual({ Create: 1, Kill: 1, Wait: 3 });
  });

  it('[Create, Start, Wait $0] completes when the server crashes, with the crash exit code', async () => {
    const c = await loggedIn({ coldStartMs: 0 });
    const listening = waitForEvent(c.f.events, 'diffusion-listening', 5000);
    const { programId } = await c.program('node-1', startProgram(await freePort(), {}, true));
    await listening;
    const { result } = await c.f.waitForProgram(programId, 'Processing');
    expect(await c.info('node-1', programId)).toBe('Processing');
    const containerId = (result[0] as Created).Ok.container_id;
    expect(await c.result('node-1', programId)).toEqual([{ Ok: { container_id: containerId } }, { Ok: {} }]);
    expect(c.f.startPrograms()).toBe(1);

    const exited = waitForEvent(c.f.events, 'exited', 5000);
    c.f.crashDiffusion(3);
    expect(await exited).toEqual({ node: 'node-1', containerId, exitCode: 3 });
    expect(await c.finalResult('node-1', programId)).toEqual([{ Ok: { container_id: containerId } }, { Ok: {} }, { Ok: { exit_code: 3 } }]);
    expect(c.f.liveContainers()).toEqual([]);
  });

  it('a diffusion server closing by itself is an exit too (code 0)', async () => {
    const c = await loggedIn({ coldStartMs: 0 });
    const containerId = await c.running('node-1', await freePort());
    const wait = await c.program('node-1', waitProgram(containerId));
    await c.f.waitForProgram(wait.programId, 'Processing');
    await c.f.diffusion()!.close();
    expect(await c.finalResult('node-1', wait.programId)).toEqual([{ Ok: { exit_code: 0 } }]);
  });
});

describe('fair stand-in: time and crashes', () => {
  it('a Kill sent while the image is pulled cannot name the container: it comes up anyway', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ pullMs: 800, coldStartMs: 0 });
    const listening = waitForEvent(c.f.events, 'diffusion-listening', 5000);
    const start = await c.program('node-1', startProgram(hostPort));
    await c.f.waitForProgram(start.programId, 'Processing');
    // All a client knows while pulling is the program id, and the result names no container yet.
    expect(await c.result('node-1', start.programId)).toEqual([]);
    const guess = await c.program('node-1', killProgram(start.programId));
    expect(await c.finalResult('node-1', guess.programId)).toEqual([{ Err: `No such container: ${start.programId}` }]);

    await listening;
    const [created] = (await c.finalResult('node-1', start.programId)) as Created[];
    expect(c.f.liveContainers().map((l) => l.containerId)).toEqual([created!.Ok.container_id]);
  });

  it('programs queue for queueMs and a Kill takes killMs, per node too', async () => {
    const c = await loggedIn({
      queueMs: 0,
      coldStartMs: 0,
      nodes: [
        { node_id: 'fast', host_address: '127.0.0.2' },
        { node_id: 'slow', host_address: '127.0.0.3', queueMs: 60_000 },
      ],
    });
    const hostPort = await freePort();
    const stuck = await c.program('slow', startProgram(hostPort));
    const containerId = await c.running('fast', hostPort);
    expect(await c.info('slow', stuck.programId)).toBe('Queued');
    c.f.setTiming({ killMs: 60_000 }, 'fast');
    const kill = await c.program('fast', killProgram(containerId));
    await c.f.waitForProgram(kill.programId, 'Processing');
    expect(await c.result('fast', kill.programId)).toEqual([]);
    expect(c.f.liveContainers()).toHaveLength(1); // the Kill has not acted yet
  });

  it('crashDuringStartup: the next container exits during its cold start, before the server listens', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 60_000, crashDuringStartup: { exitCode: 3, afterMs: 30 } });
    const exited = waitForEvent<{ containerId: string; exitCode: number }>(c.f.events, 'exited', 5000);
    const { programId } = await c.program('node-1', startProgram(hostPort, {}, true));
    const result = await c.finalResult('node-1', programId);
    const { containerId } = await exited;
    expect(result).toEqual([{ Ok: { container_id: containerId } }, { Ok: {} }, { Ok: { exit_code: 3 } }]);
    expect(c.f.diffusion()).toBeUndefined();
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');

    // Only the next one: the one after comes up, until the method arms it again.
    c.f.crashDuringStartup({ exitCode: 5, afterMs: 0 });
    const crashed = waitForEvent<{ exitCode: number }>(c.f.events, 'exited', 5000);
    await c.program('node-1', startProgram(hostPort));
    expect((await crashed).exitCode).toBe(5);
    const started = waitForEvent<{ containerId: string }>(c.f.events, 'start', 5000);
    const third = await c.program('node-1', startProgram(hostPort));
    await c.f.waitForProgram(third.programId);
    expect(c.f.liveContainers().map((l) => l.containerId)).toEqual([(await started).containerId]);
  });

  it('close() ends everything at once, whatever state programs are in', async () => {
    const f = await fair({
      coldStartMs: 0,
      nodes: [
        { node_id: 'a', host_address: '127.0.0.2' },
        { node_id: 'b', host_address: '127.0.0.3', pullMs: 60_000 },
      ],
    });
    const c = new Client(f);
    await c.login();
    const hostPort = await freePort();
    const containerId = await c.running('a', hostPort);
    await c.program('a', waitProgram(containerId)); // blocks on the running container
    await c.program('b', startProgram(hostPort)); // pulling for a minute
    f.setTiming({ queueMs: 60_000 }, 'a');
    await c.program('a', killProgram(containerId)); // queued for a minute
    f.setNotResponding('a');
    const events: string[] = [];
    for (const e of ['created', 'start', 'exited', 'kill', 'program-status']) f.events.on(e, () => events.push(e));
    await f.close();
    expect(await fetchFailure(fetch(`http://127.0.0.2:${hostPort}/`))).toBe('ECONNREFUSED');
    expect(await fetchFailure(fetch(`${f.url}/api/v0/nodes`))).toBe('ECONNREFUSED');
    expect(events).toEqual([]);
  });
});

describe('fair stand-in: injected faults', () => {
  it('failCall fails one call kind, optionally for one program kind, `times` times; callCount counts', async () => {
    const c = new Client(await fair({ coldStartMs: 0 }));
    c.f.failCall({ call: 'login', status: 503 });
    expect((await c.login()).status).toBe(503);
    expect((await c.login()).status).toBe(200);
    c.f.failCall({ call: 'nodes', status: 500, times: 2 });
    expect((await c.call('GET', '/nodes')).status).toBe(500);
    expect((await c.call('GET', '/nodes')).status).toBe(500);
    expect((await c.call('GET', '/nodes')).status).toBe(200);

    const hostPort = await freePort();
    c.f.failCall({ call: 'create', kind: 'Kill', status: 502 });
    c.f.failCall({ call: 'info', kind: 'Create', status: 503 });
    c.f.failCall({ call: 'result', status: 500 });
    c.f.failCall({ call: 'eof', status: 'down' });
    const start = await c.program('node-1', startProgram(hostPort)); // a create of another kind: not failed
    expect(await fetchFailure(c.call('PUT', `/buckets/${start.bucketId}/%23stdin/eof`))).toBe('ECONNRESET');
    expect(c.f.eofs()).toEqual([]);
    const info = await c.call('GET', `/nodes/node-1/programs/${start.programId}/info`);
    expect(info.status).toBe(503);
    expect(await info.json()).toEqual({ message: 'service unavailable' });
    expect((await c.call('GET', `/nodes/node-1/programs/${start.programId}/result`)).status).toBe(500);
    const [created] = (await c.finalResult('node-1', start.programId)) as Created[];
    const refused = await c.call('PUT', '/nodes/node-1/programs', killProgram(created!.Ok.container_id));
    expect(refused.status).toBe(502);
    expect(c.f.killPrograms()).toEqual([]); // failed before acting: no program

    expect(c.f.callCount('login')).toBe(2);
    expect(c.f.callCount('nodes')).toBe(3);
    expect(c.f.callCount('create')).toBe(2);
    expect(c.f.callCount('create', 'Kill')).toBe(1);
    expect(c.f.callCount('eof', 'Create')).toBe(1);
    expect(c.f.callCount('info', 'Create')).toBe(2);
    expect(c.f.callCount('result')).toBe(2);
    expect(c.f.requests.at(-1)).toMatchObject({ call: 'create', kind: 'Kill' });
  });

  it("'500-after-acting': the program is created and runs, but the answer is a 500", async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0 });
    c.f.failCall({ call: 'create', kind: 'Create', status: '500-after-acting' });
    const listening = waitForEvent(c.f.events, 'diffusion-listening', 5000);
    const res = await c.call('PUT', '/nodes/node-1/programs', startProgram(hostPort));
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ message: 'internal server error' });
    await listening;
    expect(c.f.startPrograms()).toBe(1);
    expect(c.f.programs()).toEqual([expect.objectContaining({ kind: 'Create', status: 'Completed' })]);
    expect(c.f.liveContainers()).toHaveLength(1);
    expect(c.f.eofs()).toEqual([]); // the client never learnt the bucket
  });

  it('a NotResponding node: its programs answer so and do not advance until it is back', async () => {
    const c = await loggedIn({ queueMs: 0, pullMs: 0, coldStartMs: 0 });
    c.f.setNotResponding('node-1');
    const { programId } = await c.program('node-1', startProgram(await freePort()));
    expect(await c.info('node-1', programId)).toBe('NotResponding');
    expect(await c.info('node-1', programId)).toBe('NotResponding');
    expect(c.f.programs()[0]!.status).toBe('Queued');
    expect(c.f.containers.size).toBe(0);

    c.f.setNotResponding('node-1', false);
    const result = await c.finalResult('node-1', programId);
    expect(result).toEqual([{ Ok: { container_id: expect.any(String) } }, { Ok: {} }]);
  });

  it('setProgramStatus: info of one program kind answers an unknown status (Expired)', async () => {
    const c = await loggedIn({ coldStartMs: 0 });
    const containerId = await c.running('node-1', await freePort());
    c.f.setProgramStatus('Kill', 'Expired');
    const kill = await c.program('node-1', killProgram(containerId));
    await c.f.waitForProgram(kill.programId);
    expect(await c.info('node-1', kill.programId)).toBe('Expired');
    expect(await c.result('node-1', kill.programId)).toEqual([{ Ok: {} }]); // it did run
    const start = await c.program('node-1', startProgram(await freePort()));
    await c.f.waitForProgram(start.programId);
    expect(await c.info('node-1', start.programId)).toBe('Completed');
    c.f.setProgramStatus('Kill', null);
    expect(await c.info('node-1', kill.programId)).toBe('Completed');
  });
});

describe('fair stand-in: several nodes', () => {
  const twoNodes = [
    { node_id: 'gpu-a', host_address: '127.0.0.2' },
    { node_id: 'gpu-b', host_address: '127.0.0.3' },
  ];

  it('nodes on 127.0.0.2 and 127.0.0.3 publish the same host port; a port conflict is per node', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0, nodes: twoNodes });
    expect(await (await c.call('GET', '/nodes')).json()).toEqual({ nodes: twoNodes });
    const a = await c.running('gpu-a', hostPort);
    const b = await c.running('gpu-b', hostPort);
    for (const host of ['127.0.0.2', '127.0.0.3']) expect((await fetch(`http://${host}:${hostPort}/healthcheck`)).status).toBe(200);
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');
    expect(c.f.liveContainers()).toEqual([
      { node: 'gpu-a', containerId: a, programId: expect.any(String), hostPort, hostAddress: '127.0.0.2' },
      { node: 'gpu-b', containerId: b, programId: expect.any(String), hostPort, hostAddress: '127.0.0.3' },
    ]);

    const second = await c.program('gpu-a', startProgram(hostPort));
    expect((await c.finalResult('gpu-a', second.programId))[1]).toEqual({ Err: `Bind for 0.0.0.0:${hostPort} failed: port is already allocated` });
    // A container is known on its own node only.
    const elsewhere = await c.program('gpu-b', killProgram(a));
    expect(await c.finalResult('gpu-b', elsewhere.programId)).toEqual([{ Err: `No such container: ${a}` }]);
    const kill = await c.program('gpu-a', killProgram(a));
    expect(await c.finalResult('gpu-a', kill.programId)).toEqual([{ Ok: {} }]);
    expect((await fetch(`http://127.0.0.3:${hostPort}/healthcheck`)).status).toBe(200);
    expect(c.f.liveContainers().map((l) => l.node)).toEqual(['gpu-b']);
  });

  it('a node removed from GET /nodes takes no new programs; its running ones go on; it can come back', async () => {
    const c = await loggedIn({ coldStartMs: 0, pullMs: 300, nodes: twoNodes });
    const pulling = await c.program('gpu-b', startProgram(await freePort()));
    c.f.removeNode('gpu-b');
    expect(await (await c.call('GET', '/nodes')).json()).toEqual({ nodes: [twoNodes[0]] });
    const refused = await c.call('PUT', '/nodes/gpu-b/programs', startProgram(await freePort()));
    expect(refused.status).toBe(404);
    expect(await refused.json()).toEqual({ message: 'no node gpu-b' });
    expect(await c.finalResult('gpu-b', pulling.programId)).toHaveLength(2);
    c.f.restoreNode('gpu-b');
    expect(await (await c.call('GET', '/nodes')).json()).toEqual({ nodes: twoNodes });
  });

  it('a node may be listed without host_address (its containers bind 127.0.0.1)', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0, nodes: [{ node_id: 'bare' }] });
    expect(await (await c.call('GET', '/nodes')).json()).toEqual({ nodes: [{ node_id: 'bare' }] });
    await c.running('bare', hostPort);
    expect((await fetch(`http://127.0.0.1:${hostPort}/healthcheck`)).status).toBe(200);
  });
});
