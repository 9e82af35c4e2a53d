// Stand-in for the diffusion server (`GET /healthcheck`, `GET /`, `POST /infer`): a real HTTP server on 127.0.0.1
// with a model-loading phase, the legacy (no /healthcheck) variant, and fault modes.
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { PNG_SIGNATURE, pngForPrompt } from './png.js';

export type DiffusionFault =
  | '500'
  /** HTTP 500 whose plain-text body holds terminal escapes, a bell and a NUL. */
  | '500-control'
  | '503'
  | 'non-json'
  | 'no-image'
  | 'bad-base64'
  | 'not-image'
  | 'huge'
  | 'crash'
  | 'reset'
  | 'hang';

export interface DiffusionOptions {
  port?: number;
  host?: string;
  /** /healthcheck and /infer answer 503 until this long after listening; GET / is 200 at once. */
  loadDelayMs?: number;
  /** Older server: no /healthcheck route (404), readiness only via GET /. */
  legacy?: boolean;
  /** Delay of each successful /infer. */
  generationMs?: number;
  imageFor?: (prompt: string) => Buffer;
  minImageBytes?: number;
}

export interface InferRecord {
  prompt: string;
  /** performance.now() when the request body was parsed. */
  startedAt: number;
  /** performance.now() when the response was written or the socket destroyed. */
  endedAt?: number;
  /** HTTP status sent, absent when the socket was destroyed or the request hung. */
  status?: number;
  fault?: DiffusionFault;
}

export interface DiffusionStandin {
  url: string;
  port: number;
  infers: InferRecord[];
  /** 'loaded' (model ready), 'infer-start' (InferRecord), 'infer-end' (InferRecord),
   *  'request' ({method, path}), 'close' ({crashed}). */
  events: EventEmitter;
  setFault(fault: DiffusionFault | null, opts?: { times?: number }): void;
  /** Resolves once n infers have ended (immediately if they already have). */
  waitForInfers(n: number, timeoutMs?: number): Promise<InferRecord[]>;
  /** True once the model is "loaded" (loadDelayMs elapsed). */
  loaded(): boolean;
  /** Resolves once loaded() is true. */
  waitForLoaded(timeoutMs?: number): Promise<void>;
  closed(): boolean;
  /** Ends everything at once, keep-alive and hanging sockets included. */
  close(): Promise<void>;
  /** Destroys every socket and stops listening, as a dying container would. */
  crash(): void;
}

const HUGE_BYTES = 26 * 1024 * 1024; // over the 25 MB upload limit
/** The '500-control' body: what a crashing server may print, colours and all. */
const CONTROL_ERROR_BODY = '\u001b[31mCUDA error\u001b[0m\u0007\u0000: device lost\r\n\u001b]0;pwned\u0007';
let hugeAnswer: Buffer | undefined; // built once: 35 MB of JSON is not free

/** The 'huge' fault's answer, built once (when the fault is armed, so no generation waits for it). */
function buildHugeAnswer(): Buffer {
  hugeAnswer ??= (() => {
    const b = Buffer.alloc(HUGE_BYTES);
    PNG_SIGNATURE.copy(b);
    return Buffer.from(`{"output":{"image_b64":"${b.toString('base64')}"},"analytics":{"inference_time_ms":1}}`);
  })();
  return hugeAnswer;
}

/** Waits for an event (optionally matching a predicate) with a deadline, never a sleep. */
export function waitForEvent<T = unknown>(emitter: EventEmitter, event: string, timeoutMs = 5000, predicate: (value: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    const onEvent = (value: T) => {
      if (!predicate(value)) return;
      clearTimeout(timer);
      emitter.off(event, onEvent);
      resolve(value);
    };
    emitter.on(event, onEvent);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The shape of FastAPI's generated API description, with the octo server's routes. */
function openApi(legacy: boolean) {
  const json = { content: { 'application/json': { schema: { type: 'object' } } } };
  return {
    openapi: '3.1.0',
    info: { title: 'FastAPI', version: '0.1.0' },
    paths: {
      '/': { get: { summary: 'Root', responses: { '200': { description: 'Successful Response', ...json } } } },
      ...(legacy ? {} : { '/healthcheck': { get: { summary: 'Health', responses: { '200': { description: 'Successful Response', ...json } } } } }),
      '/infer': { post: { summary: 'Infer', requestBody: { required: true, ...json }, responses: { '200': { description: 'Successful Response', ...json } } } },
    },
  };
}

export function startDiffusionStandin(opts: DiffusionOptions = {}): Promise<DiffusionStandin> {
  const { loadDelayMs = 0, generationMs = 0, legacy = false } = opts;
  const imageFor = opts.imageFor ?? ((p: string) => pngForPrompt(p, { minBytes: opts.minImageBytes }));
  const events = new EventEmitter();
  const infers: InferRecord[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let fault: DiffusionFault | null = null;
  let faultTimes = Infinity;
  let listeningAt = Infinity;
  let isClosed = false;
  let serverClosed: Promise<void>;

  let loadedFlag = false; // set by the 'loaded' timer, which may fire a hair before loadDelayMs by the clock
  const loaded = () => loadedFlag || performance.now() - listeningAt >= loadDelayMs;

  // Takes the current fault for one /infer, counting down `times`.
  const takeFault = (): DiffusionFault | null => {
    if (!fault) return null;
    const f = fault;
    if (--faultTimes <= 0) fault = null;
    return f;
  };

  const end = (rec: InferRecord, status?: number) => {
    rec.endedAt = performance.now();
    rec.status = status;
    events.emit('infer-end', rec);
  };

  const server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: String(err) });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    events.emit('request', { method: req.method, path });
    // What the octoai SDK's FastAPI server answers: `/` points at the docs, `/openapi.json` lists the routes.
    if (req.method === 'GET' && path === '/') return sendJson(res, 200, { docs: '/docs', openapi: '/openapi.json' });
    if (req.method === 'GET' && path === '/openapi.json') return sendJson(res, 200, openApi(legacy));
    if (req.method === 'GET' && path === '/healthcheck' && !legacy) {
      return loaded() ? sendJson(res, 200, { healthy: true }) : sendJson(res, 503, { healthy: false, status: 'loading' });
    }
    if (req.method !== 'POST' || path !== '/infer') return sendJson(res, 404, { error: `no route ${req.method} ${path}` });

    const text = await readBody(req);
    if (!loaded()) return sendJson(res, 503, { error: 'model is loading' });
    let prompt: unknown;
    try {
      prompt = (JSON.parse(text) as { prompt?: { text?: unknown } })?.prompt?.text;
    } catch {
      return sendJson(res, 400, { error: 'request body is not JSON' });
    }
    if (typeof prompt !== 'string') return sendJson(res, 400, { error: 'expected {"prompt":{"text":string}}' });

    const f = takeFault();
    const rec: InferRecord = { prompt, startedAt: performance.now(), ...(f ? { fault: f } : {}) };
    infers.push(rec);
    events.emit('infer-start', rec);
    const reply = (status: number, body: unknown) => {
      sendJson(res, status, body);
      end(rec, status);
    };
    switch (f) {
      case '500':
        return reply(500, { error: 'CUDA out of memory' });
      case '500-control':
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(CONTROL_ERROR_BODY);
        return end(rec, 500);
      case '503':
        return reply(503, { error: 'model is loading' });
      case 'no-image':
        return reply(200, { output: {}, analytics: { inference_time_ms: 1 } });
      case 'bad-base64':
        return reply(200, { output: { image_b64: '%%%not base64%%%' }, analytics: {} });
      case 'not-image':
        return reply(200, { output: { image_b64: Buffer.from('this is plain text, not an image\n').toString('base64') }, analytics: {} });
      case 'huge': {
        // The whole answer as bytes, built once: the client must refuse it on its Content-Length,
        // so the headers go out at once rather than after 35 MB of string building on a busy machine.
        const answer = buildHugeAnswer();
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length });
        res.end(answer);
        return end(rec, 200);
      }
      case 'non-json': {
        const html = '<html><body><h1>502 Bad Gateway</h1></body></html>';
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(html);
        return end(rec, 200);
      }
      case 'crash':
        req.socket.destroy();
        end(rec);
        return api.crash();
      case 'reset':
        req.socket.resetAndDestroy(); // RST: the client sees ECONNRESET
        return end(rec);
      case 'hang':
        return; // close() destroys the socket
      case null:
        break;
    }
    const t = setTimeout(() => {
      timers.delete(t);
      if (res.destroyed) return end(rec);
      const image = imageFor(prompt);
      reply(200, {
        output: { image_b64: image.toString('base64') },
        analytics: { inference_time_ms: Math.round(performance.now() - rec.startedAt) },
      });
    }, generationMs);
    timers.add(t);
  }

  const shutdown = (crashed: boolean) => {
    if (isClosed) return;
    isClosed = true;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    server.close();
    for (const s of sockets) s.destroy();
    events.emit('close', { crashed });
  };

  const api: DiffusionStandin = {
    url: '',
    port: 0,
    infers,
    events,
    setFault(f, o = {}) {
      if (f === 'huge') buildHugeAnswer();
      fault = f;
      faultTimes = o.times ?? Infinity;
    },
    async waitForInfers(n, timeoutMs = 5000) {
      const ended = () => infers.filter((r) => r.endedAt !== undefined).length >= n;
      if (!ended()) await waitForEvent(events, 'infer-end', timeoutMs, ended);
      return infers;
    },
    loaded,
    async waitForLoaded(timeoutMs = 5000) {
      if (!loaded()) await waitForEvent(events, 'loaded', timeoutMs);
    },
    closed: () => isClosed,
    close() {
      shutdown(false);
      return serverClosed; // also after crash(): resolves once the port is really free
    },
    crash: () => shutdown(true),
  };

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      serverClosed = new Promise((r) => server.once('close', () => r()));
      listeningAt = performance.now();
      const t = setTimeout(() => {
        timers.delete(t);
        loadedFlag = true;
        events.emit('loaded');
      }, loadDelayMs);
      timers.add(t);
      api.port = (server.address() as AddressInfo).port;
      const host = opts.host ?? '127.0.0.1';
      api.url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${api.port}`;
      resolve(api);
    });
  });
}
