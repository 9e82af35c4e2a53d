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

const startProgram = (hostPort: number, over: Record<string, unknown> = {}) => ({
  version: 'V018',
  commands: [
    {
      type: 'Create',
      container_desc: {
        image: 'faircompute/diffusion-octo:v1',
        runtime: 'nvidia',
        ports: [[{ port: hostPort, ip: 'null' }, { port: 8080, protocol: 'Tcp' }]],
        command: [],
        host_config: { network_mode: 'bridge' },
        ...over,
      },
    },
    { type: 'Start', container_id: '$0' },
  ],
});

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
  async result(node: string, programId: string): Promise<unknown[]> {
    const res = await this.call('GET', `/nodes/${node}/programs/${programId}/result`);
    expect(res.status).toBe(200);
    return ((await res.json()) as { result: unknown[] }).result;
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

    const info = async (id: string) => c.call('GET', `/nodes/node-1/programs/${id}/info`);
    expect(await (await info(programId)).json()).toEqual({ status: 'Queued' });
    expect(await (await info(programId)).json()).toEqual({ status: 'Processing' });
    expect((await info(BigInt(Number(programId)).toString())).status).toBe(404); // rounded id is unknown

    const result = await c.result('node-1', programId);
    const containerId = (result[0] as { Ok: { container_id: string } }).Ok.container_id;
    expect(containerId).toMatch(/^[0-9a-f]{64}$/);
    expect(result).toEqual([{ Ok: { container_id: containerId } }, { Ok: {} }]);
    expect(c.f.startPrograms()).toBe(1);

    const d = await listening;
    expect(d.port).toBe(hostPort);
    expect(c.f.diffusion()).toBe(d);
    expect(c.f.containers.get(containerId)).toMatchObject({ hostPort, running: true, node: 'node-1' });
    expect((await fetch(`http://127.0.0.1:${hostPort}/healthcheck`)).status).toBe(200);

    const kill = await c.program('node-1', { version: 'V018', commands: [{ type: 'Kill', container_id: containerId }] });
    expect(await c.result('node-1', kill.programId)).toEqual([{ Ok: {} }]);
    expect(c.f.killPrograms()).toEqual([{ node: 'node-1', containerId }]);
    expect(c.f.containers.get(containerId)?.running).toBe(false);
    expect(c.f.diffusion()).toBeUndefined();
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');

    // Killing it again, or something unknown, is an Err.
    const again = await c.program('node-1', { version: 'V018', commands: [{ type: 'Kill', container_id: containerId }] });
    expect(await c.result('node-1', again.programId)).toEqual([{ Err: expect.stringContaining('is not running') }]);
    const unknown = await c.program('node-1', { version: 'V018', commands: [{ type: 'Kill', container_id: 'f'.repeat(64) }] });
    expect(await c.result('node-1', unknown.programId)).toEqual([{ Err: expect.stringContaining('No such container') }]);
  });

  it('forwards diffusion options and follows programStatusSequence', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0, diffusion: { legacy: true }, programStatusSequence: ['Completed'] });
    const { programId } = await c.program('node-1', startProgram(hostPort));
    expect(await (await c.call('GET', `/nodes/node-1/programs/${programId}/info`)).json()).toEqual({ status: 'Completed' });
    const d = await c.f.waitForDiffusion(5000);
    expect((await fetch(`${d.url}/healthcheck`)).status).toBe(404);
  });

  it('reports a taken host port as Docker does', async () => {
    const hostPort = await freePort();
    const squatter: NetServer = createNetServer();
    await new Promise<void>((r) => squatter.listen(hostPort, '127.0.0.1', r));
    cleanup.defer(() => new Promise<void>((r) => squatter.close(() => r())));
    const c = await loggedIn();
    const { programId } = await c.program('node-1', startProgram(hostPort));
    const result = await c.result('node-1', programId);
    expect(result[1]).toEqual({ Err: `Bind for 0.0.0.0:${hostPort} failed: port is already allocated` });
  });

  it('a second Start on the same host port fails, even when concurrent', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 0 });
    const [p1, p2] = await Promise.all([c.program('node-1', startProgram(hostPort)), c.program('node-1', startProgram(hostPort))]);
    const results = [await c.result('node-1', p1.programId), await c.result('node-1', p2.programId)];
    expect(results.map((r) => Object.keys(r[1] as object)[0]).sort()).toEqual(['Err', 'Ok']);
    expect(c.f.startPrograms()).toBe(2);
    await c.f.waitForDiffusion(5000);
  });

  it('with dockerProxy, resets connections during the cold start', async () => {
    const hostPort = await freePort();
    const c = await loggedIn({ coldStartMs: 60_000, dockerProxy: true });
    const { programId } = await c.program('node-1', startProgram(hostPort));
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNRESET');
    const [created] = (await c.result('node-1', programId)) as Array<{ Ok: { container_id: string } }>;
    await c.program('node-1', { version: 'V018', commands: [{ type: 'Kill', container_id: created!.Ok.container_id }] });
    expect(await fetchFailure(fetch(`http://127.0.0.1:${hostPort}/`))).toBe('ECONNREFUSED');
  });

  it('rejects malformed programs with 400 and records why', async () => {
    const hostPort = await freePort();
    const c = await loggedIn();
    const res = await c.call('PUT', '/nodes/node-1/programs', startProgram(hostPort, { ports: [[{ port: hostPort, ip: null }, { port: 8080, protocol: 'Tcp' }]] }));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/ip.*"null"/);
    expect((await c.call('PUT', '/nodes/node-1/programs', startProgram(hostPort, { extra: 1 }))).status).toBe(400);
    expect((await c.call('PUT', '/nodes/node-1/programs', { ...startProgram(hostPort), version: 'V017' })).status).toBe(400);
    expect((await c.call('PUT', '/nodes/nope/programs', startProgram(hostPort))).status).toBe(404);
    expect(c.f.rejections).toHaveLength(3);
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
    expect([...c.f.containers.values()][0]?.running).toBe(false);
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
