import { request, type Dispatcher } from 'undici';
import type { Logger } from 'pino';
import { hostForUrl } from './address.js';
import { fairId, parseFairJson } from './json.js';
import { isProgramStatus, killProgram, startServerProgram, type ContainerSpec, type FairCommand, type ProgramStatus } from './programs.js';

const PROTOCOL_VERSION = 'V018';

/** A failed control-plane call: carries the HTTP status and the server's own words. */
export class FairApiError extends Error {
  override name = 'FairApiError';
  constructor(
    readonly call: string,
    readonly status: number | undefined,
    readonly serverMessage: string,
    /** Worth retrying: network trouble or a 5xx, not a refusal. */
    readonly transient: boolean,
  ) {
    super(status === undefined ? `${call}: ${serverMessage}` : `${call} answered ${status}: ${serverMessage}`);
  }
}

export interface FairNode {
  nodeId: string;
  /** As a URL's host (src/fair/address.ts); absent when Fair lists none (fine with INFERENCE_URL). */
  hostAddress?: string;
}

/** Per call: the caller's deadline (an aborted call is given up at once). */
export interface CallOptions {
  signal?: AbortSignal;
}

export interface FairClientOptions {
  /** FAIR_SERVER_URL, without /api/v0. */
  serverUrl: string;
  email: string;
  password: string;
  logger: Logger;
  requestTimeoutMs?: number;
  dispatcher?: Dispatcher;
}

type Method = 'GET' | 'POST' | 'PUT';

/** Fair API v0 (login, nodes, programs under /api/v0), through undici. */
export class FairClient {
  private token: string | undefined;
  private loggingIn: Promise<string> | undefined;
  private readonly base: string;
  private readonly timeoutMs: number;

  constructor(private readonly options: FairClientOptions) {
    this.base = `${options.serverUrl.replace(/\/+$/, '')}/api/v0`;
    this.timeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** Logs in (once at a time, however many callers need a token). */
  login(): Promise<string> {
    this.loggingIn ??= this.send('POST', '/auth/login', {
      email: this.options.email,
      password: this.options.password,
      version: PROTOCOL_VERSION,
    })
      .then((answer) => {
        const token = (answer as { token?: unknown } | null)?.token;
        if (typeof token !== 'string' || token.length === 0) {
          throw new FairApiError('login', 200, 'the answer has no token', false);
        }
        this.token = token;
        this.options.logger.debug('logged in to Fair');
        return token;
      })
      .finally(() => {
        this.loggingIn = undefined;
      });
    return this.loggingIn;
  }

  async listNodes(opts: CallOptions = {}): Promise<FairNode[]> {
    const answer = (await this.call('GET', '/nodes', undefined, opts.signal)) as { nodes?: unknown } | null;
    if (!Array.isArray(answer?.nodes)) throw new FairApiError('list nodes', 200, 'the answer has no "nodes" list', false);
    return answer.nodes.flatMap((n: unknown) => {
      const node = n as { node_id?: unknown; host_address?: unknown } | null;
      const nodeId = fairId(node?.node_id);
      if (!nodeId) return [];
      if (node?.host_address === undefined || node.host_address === null) return [{ nodeId }];
      // It goes into the diffusion server's URL: a path or query there would redirect every probe and prompt.
      const hostAddress = typeof node.host_address === 'string' ? hostForUrl(node.host_address) : undefined;
      if (hostAddress) return [{ nodeId, hostAddress }];
      this.options.logger.warn(
        { nodeId, hostAddress: String(node.host_address).slice(0, 200) },
        'Fair lists a node whose host_address is not a host; node ignored',
      );
      return [];
    });
  }

  /** Creates a program and closes its stdin, as the Fair client does. */
  async createProgram(node: string, commands: FairCommand[], opts: CallOptions = {}): Promise<{ programId: string; bucketId: string }> {
    const created = await this.submitProgram(node, commands, opts);
    await this.closeStdin(created.bucketId, opts);
    return created;
  }

  /**
   * The PUT alone. A caller that must remember the program before anything else can happen
   * (a start) records the id, then calls closeStdin. A transient failure here leaves it unknown
   * whether the program exists.
   */
  async submitProgram(node: string, commands: FairCommand[], opts: CallOptions = {}): Promise<{ programId: string; bucketId: string }> {
    const answer = (await this.call('PUT', `/nodes/${encodeURIComponent(node)}/programs`, { version: PROTOCOL_VERSION, commands }, opts.signal)) as {
      program_id?: unknown;
      bucket_id?: unknown;
    } | null;
    const programId = fairId(answer?.program_id);
    const bucketId = fairId(answer?.bucket_id);
    if (!programId || !bucketId) throw new FairApiError('create program', 200, 'the answer has no program_id/bucket_id', false);
    return { programId, bucketId };
  }

  /** The client closes a program's stdin right after creating it. */
  async closeStdin(bucketId: string, opts: CallOptions = {}): Promise<void> {
    await this.call('PUT', `/buckets/${encodeURIComponent(bucketId)}/%23stdin/eof`, undefined, opts.signal);
  }

  /** A status Fair does not document is an error at once (as the official client treats it). */
  async programStatus(node: string, programId: string, opts: CallOptions = {}): Promise<ProgramStatus> {
    const answer = (await this.call('GET', this.programPath(node, programId, 'info'), undefined, opts.signal)) as { status?: unknown } | null;
    if (typeof answer?.status !== 'string') throw new FairApiError('program info', 200, 'the answer has no status', false);
    if (!isProgramStatus(answer.status)) {
      throw new FairApiError('program info', undefined, `unknown program status "${answer.status.slice(0, 40)}"`, false);
    }
    return answer.status;
  }

  async programResult(node: string, programId: string, opts: CallOptions = {}): Promise<Array<{ ok: unknown } | { err: unknown }>> {
    const answer = (await this.call('GET', this.programPath(node, programId, 'result'), undefined, opts.signal)) as { result?: unknown } | null;
    if (!Array.isArray(answer?.result)) throw new FairApiError('program result', 200, 'the answer has no result list', false);
    return answer.result.map((entry: unknown) => {
      const e = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>) : undefined;
      if (e && 'Ok' in e) return { ok: e.Ok };
      if (e && 'Err' in e) return { err: e.Err };
      return { err: `unexpected result entry ${JSON.stringify(entry)?.slice(0, 200)}` };
    });
  }

  /**
   * Runs a program and waits until it has run (info Processing/Completed) and its
   * result holds an entry per command. Any Err entry fails the call with its text.
   */
  async runProgram(
    node: string,
    commands: FairCommand[],
    opts: { pollMs?: number; signal?: AbortSignal; what: string; onCreated?: (programId: string) => void },
  ): Promise<{ programId: string; results: unknown[] }> {
    const { programId, bucketId } = await this.submitProgram(node, commands, opts);
    // From here the program runs on the node whatever happens to this call: tell the caller,
    // so an abandoned start can still stop what it made.
    opts.onCreated?.(programId);
    await this.closeStdin(bucketId, opts);
    const pollMs = opts.pollMs ?? 200;
    for (;;) {
      opts.signal?.throwIfAborted();
      // The program exists now: a passing fault while polling must not lead to a second one.
      const status = await this.programStatus(node, programId, opts).catch(passing);
      if (status === 'Processing' || status === 'Completed') {
        const results = await this.programResult(node, programId, opts).catch(passing);
        if (results === undefined) {
          await delay(pollMs, opts.signal);
          continue;
        }
        const failed = results.find((r): r is { err: unknown } => 'err' in r);
        if (failed) throw new FairApiError(opts.what, undefined, errText(failed.err), false);
        if (results.length >= commands.length || status === 'Completed') {
          return { programId, results: results.map((r) => (r as { ok: unknown }).ok) };
        }
      }
      await delay(pollMs, opts.signal);
    }
  }

  /** Starts the diffusion server detached; returns the container Fair created. */
  async startContainer(
    node: string,
    spec: ContainerSpec,
    opts: { signal?: AbortSignal; pollMs?: number; onCreated?: (programId: string) => void } = {},
  ): Promise<{ programId: string; containerId: string }> {
    const { programId, results } = await this.runProgram(node, startServerProgram(spec), { ...opts, what: 'start program' });
    const containerId = fairId((results[0] as { container_id?: unknown } | null)?.container_id);
    if (!containerId) throw new FairApiError('start program', undefined, 'the Create result has no container_id', false);
    return { programId, containerId };
  }

  /** The container a start program made, once its Create command has run (else undefined). */
  async createdContainer(node: string, programId: string, opts: CallOptions = {}): Promise<string | undefined> {
    const [create] = await this.programResult(node, programId, opts);
    if (!create || !('ok' in create)) return undefined;
    return fairId((create.ok as { container_id?: unknown } | null)?.container_id);
  }

  async killContainer(node: string, containerId: string, opts: { signal?: AbortSignal; pollMs?: number } = {}): Promise<void> {
    await this.runProgram(node, killProgram(containerId), { ...opts, what: 'kill program' });
  }

  private programPath(node: string, programId: string, leaf: 'info' | 'result') {
    return `/nodes/${encodeURIComponent(node)}/programs/${encodeURIComponent(programId)}/${leaf}`;
  }

  /** An authenticated call; a 401 means the token expired: log in again once and retry once. */
  private async call(method: Method, path: string, body?: unknown, signal?: AbortSignal): Promise<unknown> {
    const token = this.token ?? (await this.login());
    try {
      return await this.send(method, path, body, token, signal);
    } catch (error) {
      if (!(error instanceof FairApiError) || error.status !== 401) throw error;
      this.options.logger.info({ path }, 'Fair token refused; logging in again');
      if (this.token === token) this.token = undefined;
      const fresh = this.token ?? (await this.login());
      return this.send(method, path, body, fresh, signal);
    }
  }

  private async send(method: Method, path: string, body?: unknown, token?: string, signal?: AbortSignal): Promise<unknown> {
    const call = `${method} ${path.replace(/\/programs\/[^/]+/, '/programs/…')}`;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.base}${path}`, {
        method,
        headers: {
          accept: 'application/json',
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        dispatcher: this.options.dispatcher,
        signal,
      });
    } catch (error) {
      // The caller gave up (its deadline, a kill): not Fair's failure, so not worth a retry.
      if (signal?.aborted) throw signal.reason;
      throw new FairApiError(call, undefined, `cannot reach ${new URL(this.base).host} (${networkReason(error)})`, true);
    }
    const text = await res.body.text().catch(() => '');
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const message = this.withoutSecrets(serverMessage(text), token);
      throw new FairApiError(call, res.statusCode, message, res.statusCode >= 500 || res.statusCode === 429);
    }
    if (text.trim() === '') return null;
    try {
      return parseFairJson(text);
    } catch {
      throw new FairApiError(call, res.statusCode, this.withoutSecrets(`not JSON: ${text.slice(0, 120)}`, token), false);
    }
  }

  /**
   * A server may echo what it was sent: the password or the bearer token must not reach
   * an error message (logged, and shown to users as the reason a start failed).
   */
  private withoutSecrets(text: string, token?: string): string {
    let out = text;
    for (const secret of [this.options.password, token, this.token]) {
      if (secret && secret.length >= 4) out = out.split(secret).join('[REDACTED]');
    }
    return out;
  }
}

/** Swallows a transient control-plane error (the caller polls again); rethrows the rest. */
function passing(error: unknown): undefined {
  if (error instanceof FairApiError && error.transient) return undefined;
  throw error;
}

function serverMessage(text: string): string {
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    for (const key of ['message', 'error', 'detail', 'reason']) {
      if (typeof parsed[key] === 'string') return parsed[key] as string;
    }
  } catch {
    /* not JSON: use the text itself */
  }
  return text.trim().slice(0, 300) || 'no message';
}

/** The text of a program's Err entry (a string, or JSON of whatever Fair put there). */
export function errText(err: unknown): string {
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err).slice(0, 300);
  } catch {
    return String(err);
  }
}

export function networkReason(error: unknown): string {
  const e = error as { code?: string; cause?: { code?: string }; message?: string } | null;
  return e?.code ?? e?.cause?.code ?? e?.message ?? String(error);
}

export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
