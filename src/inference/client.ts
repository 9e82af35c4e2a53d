import { Agent, request, type Dispatcher } from 'undici';
import { parseInferAnswerBytes, MAX_IMAGE_BYTES } from './image.js';
import type { GeneratedImage } from '../jobs/types.js';

export type Readiness = 'ready' | 'loading' | 'down';

export type InferenceFailure =
  /** Connection refused: the request never reached a server (safe to retry once it is up). */
  | 'unreachable'
  /** Connection reset or closed mid-request: the server went away. */
  | 'connection-lost'
  | 'timeout'
  /** 503: the model is still loading. */
  | 'loading'
  | 'bad-response';

export class InferenceError extends Error {
  override name = 'InferenceError';
  constructor(
    readonly kind: InferenceFailure,
    /** A sentence for the user: what the server did wrong. */
    readonly reason: string,
  ) {
    super(reason);
  }
}

const REFUSED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const LOST = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNABORTED']);
const TIMEOUT = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

function errorCode(error: unknown): string | undefined {
  const e = error as { code?: string; cause?: { code?: string }; name?: string } | null;
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return 'ETIMEDOUT';
  return e?.code ?? e?.cause?.code;
}

/** Talks to a running diffusion server (`GET /healthcheck`, `POST /infer`). It never starts or stops one. */
export class InferenceClient {
  private readonly agent: Dispatcher;
  private readonly inferAgent: Dispatcher;

  constructor(private readonly options: { inferTimeoutMs: number; probeTimeoutMs?: number }) {
    // Keep-alive saves a TCP handshake per job; a short keep-alive keeps a dead server's
    // sockets from lingering in the pool.
    this.agent = new Agent({ keepAliveTimeout: 4_000, connections: 16 });
    // A fresh connection per generation (pipelining 0: no keep-alive). A pooled socket of a
    // server that just died fails as "reset" (ambiguous: did it run?); a fresh one as
    // "refused" (it did not), which is safe to retry. One handshake per generation is noise.
    this.inferAgent = new Agent({ pipelining: 0 });
  }

  /**
   * `GET /healthcheck`: 200 ready, 503 loading, 404 an older server (then `GET /`).
   * Refused, reset or no answer in time: down ("not yet" during a start). A server that
   * answers `GET /` but is no diffusion server (its API lists no `POST /infer`) is down
   * too: it is never adopted, so no prompt goes to it.
   */
  async probe(baseUrl: string): Promise<Readiness> {
    return (await this.probeDetail(baseUrl)).readiness;
  }

  /** The probe, also telling whether nothing listens at all (refused) from other kinds of down. */
  async probeDetail(baseUrl: string): Promise<{ readiness: Readiness; refused: boolean }> {
    const timeout = this.options.probeTimeoutMs ?? 1_000;
    try {
      const health = await this.get(`${baseUrl}/healthcheck`, timeout);
      if (health === 200) return { readiness: 'ready', refused: false };
      // 404: an older server without /healthcheck, whose `GET /` answers once it is up.
      if (health === 404) {
        if ((await this.get(`${baseUrl}/`, timeout)) !== 200) return { readiness: 'loading', refused: false };
        return { readiness: (await this.servesInfer(baseUrl, timeout)) ? 'ready' : 'down', refused: false };
      }
      return { readiness: 'loading', refused: false };
    } catch (error) {
      return { readiness: 'down', refused: errorCode(error) === 'ECONNREFUSED' };
    }
  }

  /**
   * Whether the server speaks the diffusion protocol: OctoAI servers are FastAPI apps, whose
   * `GET /openapi.json` lists their routes; a diffusion server's has `POST /infer`. Any web
   * server answers `GET /` 200, so that alone does not make one a diffusion server.
   */
  private async servesInfer(baseUrl: string, timeoutMs: number): Promise<boolean> {
    const res = await request(`${baseUrl}/openapi.json`, {
      method: 'GET',
      dispatcher: this.agent,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (res.statusCode !== 200) {
      await res.body.dump();
      return false;
    }
    try {
      const schema = JSON.parse(await readLimited(res, OPENAPI_MAX_BYTES)) as { paths?: Record<string, { post?: unknown } | undefined> };
      return typeof schema?.paths?.['/infer']?.post === 'object';
    } catch {
      return false;
    }
  }

  private async get(url: string, timeoutMs: number): Promise<number> {
    const res = await request(url, {
      method: 'GET',
      dispatcher: this.agent,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body.dump();
    return res.statusCode;
  }

  /** One generation. Throws InferenceError with a reason the user can read. */
  async infer(baseUrl: string, prompt: string, signal?: AbortSignal): Promise<GeneratedImage> {
    return (await this.send(baseUrl, prompt, signal)).read();
  }

  /**
   * Sends `POST /infer` and resolves once the server has answered 2xx headers: the
   * generation is over then, so the caller can free the GPU slot while `read()` takes in
   * and checks the image. INFER_TIMEOUT_S bounds both together.
   */
  async send(baseUrl: string, prompt: string, signal?: AbortSignal): Promise<{ read(): Promise<GeneratedImage> }> {
    const timeout = this.options.inferTimeoutMs;
    // A plain timer, not AbortSignal.timeout() inside AbortSignal.any(): Node 20 may garbage-collect
    // that timeout signal before it fires (nodejs/node#57736). It bounds the whole answer, which a
    // server trickling bytes would otherwise stretch past INFER_TIMEOUT_S (bodyTimeout is per chunk).
    const timeoutController = new AbortController();
    const timer = setTimeout(() => timeoutController.abort(new DOMException(`no answer within ${timeout} ms`, 'TimeoutError')), timeout);
    const combined = signal ? AbortSignal.any([signal, timeoutController.signal]) : timeoutController.signal;
    const failed = (error: unknown): never => {
      clearTimeout(timer);
      if (signal?.aborted) throw signal.reason ?? error;
      throw this.classify(error, timeout);
    };
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${baseUrl}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ prompt: { text: prompt } }),
        dispatcher: this.inferAgent,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: combined,
      });
    } catch (error) {
      return failed(error);
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const text = await readLimited(res, 64 * 1024).catch(() => '');
      clearTimeout(timer);
      if (res.statusCode === 503) throw new InferenceError('loading', 'the GPU server is still loading its model (503)');
      throw new InferenceError('bad-response', `the GPU server answered HTTP ${res.statusCode}${snippet(text)}`);
    }
    return {
      read: async () => {
        let body: Buffer;
        try {
          body = await readLimitedBytes(res, MAX_ANSWER_BYTES, answerBuffers);
        } catch (error) {
          return failed(error);
        }
        clearTimeout(timer);
        await yieldToIo();
        // The image is decoded into a buffer of its own (nothing returned points into the body).
        const answer = parseInferAnswerBytes(body);
        answerBuffers.giveBack(body);
        if ('problem' in answer) throw new InferenceError('bad-response', answer.problem);
        return answer.image;
      },
    };
  }

  private classify(error: unknown, timeoutMs: number): InferenceError {
    if (error instanceof InferenceError) return error;
    const code = errorCode(error);
    if (code && REFUSED.has(code)) return new InferenceError('unreachable', 'the GPU server is not answering (connection refused)');
    if (code && TIMEOUT.has(code)) {
      return new InferenceError('timeout', `the GPU server took longer than ${Math.round(timeoutMs / 1000)} s (INFER_TIMEOUT_S)`);
    }
    if (code && LOST.has(code)) return new InferenceError('connection-lost', 'the GPU server dropped the connection mid-generation (it may have crashed)');
    return new InferenceError('connection-lost', `the GPU server could not be reached (${code ?? (error as Error)?.message ?? 'unknown error'})`);
  }

  async close(): Promise<void> {
    await Promise.all([this.agent.close(), this.inferAgent.close()]).catch(() => undefined);
  }
}

/** An OctoAI server's API description is a few KB; anything past this is not one. */
const OPENAPI_MAX_BYTES = 1024 * 1024;

/** The base64 of the largest image we take, plus room for the JSON around it. */
const MAX_ANSWER_BYTES = Math.ceil((MAX_IMAGE_BYTES * 4) / 3) + 64 * 1024;
const TOO_LARGE = `the GPU server sent an image larger than ${MAX_IMAGE_BYTES / 1024 / 1024} MB`;

async function readLimited(res: Dispatcher.ResponseData, limit: number): Promise<string> {
  return (await readLimitedBytes(res, limit)).toString('utf8');
}

/**
 * The buffer an answer's body is read into, kept for the next answer: a body (1.4× the
 * image, as base64) is garbage once decoded, and megabytes of it per job would otherwise
 * wait for the garbage collector, which raises the peak memory when answers come quickly.
 * One buffer of at most 8 MB (the body of a 5 MB image fits) is kept.
 */
class AnswerBuffers {
  private spare: ArrayBuffer | undefined;
  /** Memory handed out by take(): nothing else (Node's shared small-buffer pool above all) is ever kept. */
  private readonly ours = new WeakSet<ArrayBufferLike>();
  private static readonly KEEP_MAX = 8 * 1024 * 1024;

  take(length: number): Buffer {
    const spare = this.spare;
    if (spare && spare.byteLength >= length) {
      this.spare = undefined;
      return Buffer.from(spare, 0, length);
    }
    const fresh = Buffer.allocUnsafeSlow(length);
    this.ours.add(fresh.buffer);
    return fresh;
  }

  /** Only once nothing refers to `body` any more. */
  giveBack(body: Buffer): void {
    const whole = body.buffer;
    if (!this.ours.has(whole) || whole.byteLength > AnswerBuffers.KEEP_MAX || whole === this.spare) return;
    if (!this.spare || this.spare.byteLength < whole.byteLength) this.spare = whole as ArrayBuffer;
  }
}
const answerBuffers = new AnswerBuffers();

function readLimitedBytes(res: Dispatcher.ResponseData, limit: number, buffers?: AnswerBuffers): Promise<Buffer> {
  // Refused on its announced length: no point reading 30 MB to say no.
  const announced = Number(res.headers['content-length'] ?? NaN);
  if (announced > limit) {
    res.body.destroy();
    return Promise.reject(new InferenceError('bad-response', TOO_LARGE));
  }
  // With a length, chunks are copied into one buffer as they come: no list, no concat at the end.
  let whole = Number.isSafeInteger(announced) && announced > 0 ? (buffers?.take(announced) ?? Buffer.allocUnsafe(announced)) : undefined;
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.body.on('data', (chunk: Buffer) => {
      if (size + chunk.length > limit) {
        res.body.destroy();
        reject(new InferenceError('bad-response', TOO_LARGE));
        return;
      }
      if (whole && size + chunk.length <= whole.length) {
        chunk.copy(whole, size);
      } else {
        // No length, or more than it said (undici's parser does not let that through): a list.
        if (whole) chunks.push(whole.subarray(0, size));
        whole = undefined;
        chunks.push(chunk);
      }
      size += chunk.length;
    });
    res.body.on('error', reject);
    res.body.on('end', () => {
      if (whole) resolve(whole.subarray(0, size));
      else resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    });
  });
}

/**
 * Lets I/O that arrived with the answer's last bytes (the next job's request, a platform's
 * event) go first, before the ~0.5 ms per MB of checking and decoding the image.
 */
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));

function snippet(text: string): string {
  const s = text.trim().replace(/\s+/g, ' ').slice(0, 120);
  return s ? ` ("${s}")` : '';
}
