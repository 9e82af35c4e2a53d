/**
 * The diffusion server client (`GET /healthcheck`, `POST /infer`): every bad answer becomes a failed job with a
 * sentence saying what the server did wrong, never a crash; the bot keeps serving.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { InferenceClient, InferenceError } from '../src/inference/client.js';
import { MAX_IMAGE_BYTES, parseInferAnswer, sniffImage } from '../src/inference/image.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { FAST_TIMING, LogCapture, tempDir } from './helpers/app.js';
import { failureOf, outcome, submit } from './helpers/jobs.js';
import { startDiffusionStandin, type DiffusionFault, type DiffusionStandin } from './standins/diffusion.js';
import { freePort } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const JPEG = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]), Buffer.from('JFIF\0 a tiny jpeg body'), Buffer.from([0xff, 0xd9])]);
const WEBP = (() => {
  const body = Buffer.from('WEBPVP8 a tiny webp body');
  const head = Buffer.from('RIFF\0\0\0\0');
  head.writeUInt32LE(body.length, 4);
  return Buffer.concat([head, body]);
})();

function imageFor(prompt: string): Buffer {
  if (prompt.startsWith('jpeg')) return JPEG;
  if (prompt.startsWith('webp')) return WEBP;
  return pngForPrompt(prompt);
}

/** Services without Fair credentials, using a server that runs (INFERENCE_URL), with INFER_TIMEOUT_S=1. */
function servicesFor(url: string, logs: LogCapture, dataDir: string): Services {
  const config = loadConfig({ INFERENCE_URL: url, DATA_DIR: dataDir, INFER_TIMEOUT_S: '1', LOG_LEVEL: 'debug', USER_MAX_PENDING: '20' });
  return createServices(config, { logDestination: logs, timing: FAST_TIMING });
}

describe('bad answers through the job pipeline', () => {
  // Each case gets its own server and services: no case depends on what an earlier one left.
  let diffusion: DiffusionStandin;
  let services: Services;
  let logs: LogCapture;
  let dir: ReturnType<typeof tempDir>;

  beforeEach(async () => {
    dir = tempDir();
    diffusion = await startDiffusionStandin({ imageFor });
    logs = new LogCapture();
    services = servicesFor(diffusion.url, logs, dir.path);
  });

  afterEach(async () => {
    await services.jobs.shutdown(0);
    await services.lifecycle.close();
    await services.inference.close();
    await diffusion.close();
    dir.remove();
  });

  const cases: Array<[fault: DiffusionFault, reason: string]> = [
    ['500', 'the GPU server answered HTTP 500 ("{"error":"CUDA out of memory"}")'],
    ['non-json', 'the GPU server answered something that is not JSON ("<html><body><h1>502 Bad Gateway</h1></body></html>")'],
    ['no-image', 'the GPU server answered without an image (no output.image_b64)'],
    ['bad-base64', 'the GPU server sent an image that is not valid base64'],
    ['not-image', 'the GPU server sent bytes that are not a PNG, JPEG or WebP image'],
    ['huge', `the GPU server sent an image larger than ${MAX_IMAGE_BYTES / 1024 / 1024} MB`],
    ['503', 'the GPU server is still loading its model (503)'],
    ['hang', 'the GPU server took longer than 1 s (INFER_TIMEOUT_S)'],
    ['reset', 'the GPU server dropped the connection mid-generation (it may have crashed)'],
  ];

  it.each(cases)('fault %s: the job fails with a clear message, logged once with its reason, and the next job works', async (fault, reason) => {
    diffusion.setFault(fault, { times: 1 });
    const victim = submit(services, `victim of ${fault}`);
    const text = await failureOf(victim, 15_000);
    expect(text).toBe(messages.inferenceFailed(reason));
    const logged = logs.entries().filter((e) => e.msg === 'generation failed');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ jobId: victim.id, reason });

    const next = await outcome(submit(services, `after ${fault}`), 15_000);
    expect(next.type).toBe('done');
    expect(next.type === 'done' && next.image.bytes.equals(pngForPrompt(`after ${fault}`))).toBe(true);
  });

  it('JPEG and WebP answers are accepted as they are, with their type', async () => {
    const jpeg = await outcome(submit(services, 'jpeg please'));
    const webp = await outcome(submit(services, 'webp please'));
    expect(jpeg).toMatchObject({ type: 'done', image: { mime: 'image/jpeg', extension: 'jpg' } });
    expect(webp).toMatchObject({ type: 'done', image: { mime: 'image/webp', extension: 'webp' } });
    expect(jpeg.type === 'done' && jpeg.image.bytes.equals(JPEG)).toBe(true);
    expect(webp.type === 'done' && webp.image.bytes.equals(WEBP)).toBe(true);
  });
});

describe('answers one after another', () => {
  it('each image keeps its own bytes while later answers are read (the body buffer is reused)', async () => {
    const sizes = [300_000, 1_200_000, 40_000, 2_500_000, 900_000];
    const images = new Map(sizes.map((n, i) => [`image ${i}`, pngForPrompt(`image ${i}`, { minBytes: n })]));
    const diffusion = await startDiffusionStandin({ imageFor: (p) => images.get(p)! });
    const client = new InferenceClient({ inferTimeoutMs: 5_000 });
    try {
      const got: Buffer[] = [];
      for (const prompt of images.keys()) got.push(await client.infer(diffusion.url, prompt).then((i) => i.bytes));
      // Checked at the end: an image that pointed into a reused buffer would now hold a later body.
      expect(got.map((b, i) => b.equals(images.get(`image ${i}`)!))).toEqual(sizes.map(() => true));
    } finally {
      await client.close();
      await diffusion.close();
    }
  });
});

describe('a server that trickles its answer', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r) ?? r(undefined));
  });

  it('is cut off at INFER_TIMEOUT_S for the whole answer, not per chunk', async () => {
    const timers = new Set<NodeJS.Timeout>();
    server = createServer((req, res) => {
      if (req.url === '/healthcheck') return void res.writeHead(200).end('{}');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"output":{"image_b64":"');
      const t = setInterval(() => res.write('A'), 100);
      timers.add(t);
      res.on('close', () => clearInterval(t));
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const client = new InferenceClient({ inferTimeoutMs: 1_000 });
    try {
      const error = await client.infer(url, 'slowly').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(InferenceError);
      expect((error as InferenceError).kind).toBe('timeout');
      expect((error as InferenceError).reason).toBe('the GPU server took longer than 1 s (INFER_TIMEOUT_S)');
    } finally {
      for (const t of timers) clearInterval(t);
      await client.close();
    }
  });
});

describe('readiness probe', () => {
  const client = new InferenceClient({ inferTimeoutMs: 1_000, probeTimeoutMs: 500 });
  const started: DiffusionStandin[] = [];
  afterAll(async () => {
    await client.close();
    await Promise.all(started.map((d) => d.close()));
  });
  const standin = async (opts: Parameters<typeof startDiffusionStandin>[0]) => {
    const d = await startDiffusionStandin(opts);
    started.push(d);
    return d;
  };

  it('200 on /healthcheck is ready, 503 is loading', async () => {
    const loading = await standin({ loadDelayMs: 60_000 });
    const ready = await standin({});
    expect(await client.probe(loading.url)).toBe('loading');
    expect(await client.probe(ready.url)).toBe('ready');
  });

  it('an older server (404 on /healthcheck) is ready when GET / answers 200', async () => {
    const legacy = await standin({ legacy: true });
    expect(await client.probe(legacy.url)).toBe('ready');
  });

  it('connection refused and connection reset are "down" (not yet)', async () => {
    const port = await freePort();
    expect(await client.probe(`http://127.0.0.1:${port}`)).toBe('down');
    const resetting = (await import('node:net')).createServer((s) => s.resetAndDestroy());
    await new Promise<void>((r) => resetting.listen(0, '127.0.0.1', r));
    try {
      expect(await client.probe(`http://127.0.0.1:${(resetting.address() as AddressInfo).port}`)).toBe('down');
    } finally {
      await new Promise((r) => resetting.close(r));
    }
  });
});

describe('parseInferAnswer', () => {
  const b64 = (bytes: Buffer) => JSON.stringify({ output: { image_b64: bytes.toString('base64') }, analytics: {} });

  it('returns the exact bytes of a PNG, JPEG or WebP', () => {
    const png = pngForPrompt('exact');
    expect(parseInferAnswer(b64(png))).toEqual({ image: { bytes: png, mime: 'image/png', extension: 'png' } });
    expect(sniffImage(JPEG)).toEqual({ mime: 'image/jpeg', extension: 'jpg' });
    expect(sniffImage(WEBP)).toEqual({ mime: 'image/webp', extension: 'webp' });
  });

  it('accepts a data: URL and line-wrapped base64', () => {
    const png = pngForPrompt('wrapped');
    const wrapped = png.toString('base64').replace(/.{76}/g, '$&\n');
    const answer = parseInferAnswer(JSON.stringify({ output: { image_b64: `data:image/png;base64,${wrapped}` } }));
    expect('image' in answer && answer.image.bytes.equals(png)).toBe(true);
  });

  it('never throws, whatever the body', () => {
    for (const body of ['', 'null', '[]', '{"output":null}', '{"output":{"image_b64":42}}', '{"output":{"image_b64":""}}', '"text"']) {
      const answer = parseInferAnswer(body);
      expect('problem' in answer).toBe(true);
    }
  });
});
