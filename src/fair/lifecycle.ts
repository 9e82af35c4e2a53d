import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { InferenceClient } from '../inference/client.js';
import { messages } from '../messages.js';
import { delay, FairApiError, type FairClient, type FairNode } from './client.js';
import type { ServerRecord, ServerRecordStore } from './record.js';

export type GpuState = 'stopped' | 'starting' | 'ready' | 'stopping';

export type StartupFailure = 'failed' | 'timeout' | 'killed' | 'no-server' | 'shutdown';

/** Why a start did not give a ready server; `message` is for the users who waited. */
export class StartupError extends Error {
  override name = 'StartupError';
  constructor(
    readonly kind: StartupFailure,
    message: string,
  ) {
    super(message);
  }
}

/** A ready server. `epoch` tells apart successive servers, so a stale failure cannot mark a new one down. */
export interface ReadyServer {
  endpoint: string;
  epoch: number;
}

export interface LifecycleTiming {
  /** How often readiness is probed while starting (≤ 200 ms so readiness is seen within 250 ms). */
  probeIntervalMs: number;
  /** Waits before the next start attempt after failed ones. */
  backoffMs: number[];
  /** Waits between retries of a control-plane call that failed for a passing reason. */
  fairRetryMs: number[];
  programPollMs: number;
  /** How long the port of a container an earlier run started may refuse before we give up on it. */
  earlierRefusedMs: number;
}

const DEFAULT_TIMING: LifecycleTiming = {
  probeIntervalMs: 150,
  backoffMs: [5_000, 10_000, 20_000, 40_000, 60_000],
  fairRetryMs: [500, 1_000, 2_000, 4_000, 8_000],
  programPollMs: 200,
  earlierRefusedMs: 30_000,
};

export interface LifecycleStatus {
  state: GpuState;
  stateSince: Date;
  managed: boolean;
  node?: string;
  hostAddress?: string;
  endpoint?: string;
  programId?: string;
  containerId?: string;
  startedAt?: Date;
  coldStartMs?: number;
  lastGenerationAt?: Date;
  lastGenerationMs?: number;
  idleShutdownAt?: Date;
  nextStartAttemptAt?: Date;
  lastError?: string;
}

export interface LifecycleDeps {
  config: Config;
  logger: Logger;
  /** Absent without FAIR_EMAIL/FAIR_PASSWORD: then only INFERENCE_URL is used. */
  fair?: FairClient;
  inference: InferenceClient;
  store: ServerRecordStore;
  timing?: Partial<LifecycleTiming>;
}

/**
 * The one owner of the GPU server's life: the only code that starts or stops it.
 * One instance per Fair node (one now; several nodes would be several instances).
 *
 * Events: 'state' (GpuState), 'ready' ({ coldStartMs, started: whether a start program was sent }), 'start-failed' (StartupError),
 * 'stopped' ({ reason }).
 */
export class GpuLifecycle extends EventEmitter {
  private currentState: GpuState = 'stopped';
  private stateSince = new Date();
  private epoch = 0;
  private endpoint: string | undefined;
  private starting: Promise<ReadyServer> | undefined;
  private startAbort: AbortController | undefined;
  private stopping: Promise<void> | undefined;
  private startingSinceMs: number | undefined;
  private failures = 0;
  private nextAttemptAt = 0;
  private lastError: string | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private idleShutdownAt: number | undefined;
  private busy = 0;
  private lastGeneration: { at: Date; ms: number } | undefined;
  private closed = false;
  /** Recent cold starts, newest last, for the warming-up ETA. */
  readonly coldStartsMs: number[] = [];
  /** Start programs this process sent to Fair. */
  startProgramsSent = 0;
  private readonly timing: LifecycleTiming;
  private readonly log: Logger;

  constructor(private readonly deps: LifecycleDeps) {
    super();
    this.timing = { ...DEFAULT_TIMING, ...deps.timing };
    this.log = deps.logger.child({ component: 'gpu' });
  }

  get state(): GpuState {
    return this.currentState;
  }

  get managed(): boolean {
    return this.deps.fair !== undefined;
  }

  /** Milliseconds since the current start began, or undefined when not starting. */
  warmingForMs(now = Date.now()): number | undefined {
    return this.startingSinceMs === undefined ? undefined : now - this.startingSinceMs;
  }

  /** The expected rest of a cold start, judged from the last ones. */
  expectedColdStartLeftMs(now = Date.now()): number | undefined {
    if (this.currentState === 'ready') return 0;
    const recent = this.coldStartsMs.slice(-5);
    if (recent.length === 0) return undefined;
    const typical = median(recent);
    return Math.max(0, typical - (this.warmingForMs(now) ?? 0));
  }

  /**
   * Resolves once the server answers. Idempotent: however many callers wait during a
   * cold start, exactly one start program reaches Fair.
   */
  ensureReady(): Promise<ReadyServer> {
    if (this.closed) return Promise.reject(new StartupError('shutdown', messages.stoppedForShutdown));
    if (this.currentState === 'ready' && this.endpoint) return Promise.resolve({ endpoint: this.endpoint, epoch: this.epoch });
    this.starting ??= this.runStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /** On start-up of the bot: adopt the server an earlier run started, if it still answers. */
  async recover(): Promise<void> {
    const record = await this.completeRecord();
    const endpoint = record?.endpoint ?? this.deps.config.inferenceUrl;
    if (!endpoint || this.currentState !== 'stopped') return;
    if ((await this.deps.inference.probe(endpoint)) === 'ready' && this.currentState === 'stopped') {
      this.endpoint = endpoint;
      this.epoch++;
      this.setState('ready');
      this.log.info({ endpoint, node: record?.node, containerId: record?.containerId }, 'GPU server already running; using it');
      this.armIdleTimer();
    }
  }

  /** A job found the server gone (refused or reset). Only the server of that epoch is marked down. */
  markDown(epoch: number, reason: string): void {
    if (epoch !== this.epoch || this.currentState !== 'ready') return;
    this.log.warn({ reason, endpoint: this.endpoint }, 'GPU server is down; the next job starts it again');
    this.epoch++;
    this.clearIdleTimer();
    this.setState('stopped');
  }

  /** Jobs waiting or generating; the idle timer runs only at zero. */
  setActivity(busy: number): void {
    this.busy = busy;
    if (busy > 0) this.clearIdleTimer();
    else this.armIdleTimer();
  }

  noteGeneration(ms: number): void {
    this.lastGeneration = { at: new Date(), ms };
  }

  /** `/gpu kill`: stops the server now, whatever is waiting. */
  async kill(): Promise<{ stopped: boolean }> {
    const wasStarting = this.starting !== undefined;
    this.startAbort?.abort(new StartupError('killed', messages.killedByAdmin));
    // Let the aborted start settle so it cannot finish after the kill.
    await this.starting?.catch(() => undefined);
    const record = this.deps.store.load();
    const hadServer = this.currentState === 'ready' || wasStarting || record !== undefined;
    await this.stop('admin');
    return { stopped: hadServer };
  }

  /** Stops timers and start attempts; leaves the server running for the next run (it is remembered). */
  async close(): Promise<void> {
    this.closed = true;
    this.clearIdleTimer();
    this.startAbort?.abort(new StartupError('shutdown', messages.stoppedForShutdown));
    await this.starting?.catch(() => undefined);
    await this.stopping?.catch(() => undefined);
  }

  status(): LifecycleStatus {
    const record = this.deps.store.load();
    return {
      state: this.currentState,
      stateSince: this.stateSince,
      managed: this.managed,
      node: record?.node,
      hostAddress: record?.hostAddress,
      endpoint: this.endpoint ?? record?.endpoint ?? this.deps.config.inferenceUrl,
      programId: record?.programId,
      containerId: record?.containerId,
      startedAt: record ? new Date(record.startedAt) : undefined,
      coldStartMs: record?.coldStartMs ?? this.coldStartsMs.at(-1),
      lastGenerationAt: this.lastGeneration?.at,
      lastGenerationMs: this.lastGeneration?.ms,
      idleShutdownAt: this.idleShutdownAt === undefined ? undefined : new Date(this.idleShutdownAt),
      nextStartAttemptAt: this.nextAttemptAt > Date.now() ? new Date(this.nextAttemptAt) : undefined,
      lastError: this.lastError,
    };
  }

  // --- starting ---------------------------------------------------------------

  private async runStart(): Promise<ReadyServer> {
    const abort = new AbortController();
    let startTimer: NodeJS.Timeout | undefined;
    this.startAbort = abort;
    this.startingSinceMs = Date.now();
    this.setState('starting');
    try {
      await this.stopping?.catch(() => undefined);
      // After failed starts, wait before trying again: no start storm against Fair.
      const wait = this.nextAttemptAt - Date.now();
      if (wait > 0) {
        this.log.info({ waitMs: wait }, 'waiting before the next start attempt');
        await delay(wait, abort.signal);
        this.startingSinceMs = Date.now();
      }
      const timeoutMs = this.deps.config.startupTimeoutMs;
      const deadline = Date.now() + timeoutMs;
      // A plain timer, not AbortSignal.any([.., AbortSignal.timeout()]): Node 20 may garbage-collect
      // that timeout signal before it fires (nodejs/node#57736), and the start would never time out.
      startTimer = setTimeout(() => abort.abort(new DOMException(`not ready within ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
      const signal = abort.signal;
      const sentBefore = this.startProgramsSent;
      const endpoint = await this.start(signal, deadline);
      const coldStartMs = Date.now() - this.startingSinceMs;
      this.failures = 0;
      this.nextAttemptAt = 0;
      this.lastError = undefined;
      this.endpoint = endpoint;
      this.epoch++;
      this.setState('ready');
      this.log.info({ endpoint, coldStartMs }, 'GPU server ready');
      this.emit('ready', { coldStartMs, started: this.startProgramsSent > sentBefore });
      this.armIdleTimer();
      return { endpoint, epoch: this.epoch };
    } catch (error) {
      const failure = this.asStartupError(error);
      if (failure.kind !== 'killed' && failure.kind !== 'shutdown') {
        this.failures++;
        const backoff = this.timing.backoffMs[Math.min(this.failures, this.timing.backoffMs.length) - 1] ?? 0;
        this.nextAttemptAt = Date.now() + backoff;
        this.lastError = failure.message;
        this.log.error({ reason: failure.message, kind: failure.kind, retryInMs: backoff }, 'GPU server start failed');
      }
      if (this.currentState === 'starting') this.setState('stopped');
      this.emit('start-failed', failure);
      throw failure;
    } finally {
      clearTimeout(startTimer);
      this.startingSinceMs = undefined;
      if (this.startAbort === abort) this.startAbort = undefined;
    }
  }

  private asStartupError(error: unknown): StartupError {
    if (error instanceof StartupError) return error;
    const name = (error as { name?: string } | null)?.name;
    if (name === 'TimeoutError') {
      return new StartupError('timeout', messages.startupTimeout(this.deps.config.startupTimeoutMs / 1000));
    }
    return new StartupError('failed', messages.startupFailed(describe(error)));
  }

  /** One start attempt: adopt a server that answers, else start one on Fair and wait for it. */
  private async start(signal: AbortSignal, deadline: number): Promise<string> {
    const { config, fair, inference, store } = this.deps;
    const record = await this.completeRecord();
    const known = record?.endpoint ?? config.inferenceUrl;
    // Started by hand, or by an earlier run of the bot: use it, start nothing.
    if (known && (await inference.probe(known)) === 'ready') return known;

    if (!fair) {
      if (!config.inferenceUrl) throw new StartupError('no-server', messages.noServer);
      await this.waitUntilReady(config.inferenceUrl, deadline, signal);
      return config.inferenceUrl;
    }

    // A start an earlier run left mid-way (a deploy during a cold start): wait for that
    // container within its own startup window rather than start a second one.
    const earlierStart = record?.containerId && record.coldStartMs === undefined ? Date.parse(record.startedAt) : NaN;
    if (record && Number.isFinite(earlierStart) && earlierStart + config.startupTimeoutMs > Date.now()) {
      const ownDeadline = Math.min(deadline, earlierStart + config.startupTimeoutMs);
      this.log.info({ containerId: record.containerId, endpoint: record.endpoint }, 'waiting for the GPU server an earlier run started');
      if (await this.waitForEarlier(record.endpoint, ownDeadline, signal)) {
        store.save({ ...record, coldStartMs: Date.now() - earlierStart });
        return record.endpoint;
      }
      if (Date.now() >= deadline) {
        throw new StartupError('timeout', messages.startupTimeout(config.startupTimeoutMs / 1000));
      }
      this.log.warn({ containerId: record.containerId }, 'the GPU server an earlier run started is not coming up; starting a fresh one');
    }

    // A container of ours that no longer answers would hold the host port: stop it first.
    if (record?.containerId) {
      await fair
        .killContainer(record.node, record.containerId, { signal, pollMs: this.timing.programPollMs })
        .catch((error) => this.log.warn({ reason: describe(error), containerId: record.containerId }, 'could not stop the old container'));
      store.clear();
    }

    const node = await this.retrying(() => this.pickNode(), signal);
    if (!config.inferenceUrl && !node.hostAddress) {
      throw new StartupError('failed', messages.startupFailed(`Fair lists no host address for node ${node.nodeId}`));
    }
    const endpoint = config.inferenceUrl ?? `http://${node.hostAddress}:${config.fairPorts.host}`;
    const spec = {
      image: config.fairImage,
      runtime: config.fairRuntime,
      hostPort: config.fairPorts.host,
      containerPort: config.fairPorts.container,
    };
    let started: { programId: string; containerId: string };
    let created: string | undefined;
    const startedAt = new Date().toISOString();
    // Past the deadline (or killed) while picking the node: send no start program at all.
    signal.throwIfAborted();
    try {
      this.startProgramsSent++;
      this.log.info({ node: node.nodeId, image: spec.image }, 'starting the GPU server on Fair');
      started = await fair.startContainer(node.nodeId, spec, {
        signal,
        pollMs: this.timing.programPollMs,
        onCreated: (programId) => {
          created = programId;
          // Remembered at once: a start given up from here on (timeout, /gpu kill) must not
          // leave its container running unknown to us, holding the port and the GPU.
          store.save({ node: node.nodeId, hostAddress: node.hostAddress, endpoint, startedAt, programId });
        },
      });
    } catch (error) {
      if (created !== undefined) {
        // A shutdown keeps the record: the next run waits for this container instead.
        if (signal.aborted && !isShutdown(signal)) await this.stopAbandoned(node.nodeId, created);
        else if (!signal.aborted) store.clear();
      }
      if (error instanceof FairApiError && /port is already allocated/i.test(error.serverMessage)) {
        // Someone runs something on our port. If it is a diffusion server, use it.
        if ((await inference.probe(endpoint)) !== 'down') {
          this.log.warn({ endpoint }, 'host port taken by a running diffusion server; using it');
          await this.waitUntilReady(endpoint, deadline, signal);
          store.save({ node: node.nodeId, hostAddress: node.hostAddress, endpoint, startedAt: new Date().toISOString() });
          return endpoint;
        }
        throw new StartupError(
          'failed',
          messages.startupFailed(
            `host port ${config.fairPorts.host} is already taken on node ${node.nodeId} and no diffusion server answers there (change FAIR_PORTS)`,
          ),
        );
      }
      throw error;
    }
    store.save({ node: node.nodeId, hostAddress: node.hostAddress, endpoint, startedAt, ...started });
    try {
      await this.waitUntilReady(endpoint, deadline, signal);
    } catch (error) {
      // A deploy mid cold start: leave the container starting for the next run to adopt.
      if (isShutdown(signal)) throw error;
      // Never leave a half-started container behind to hold the port (or the GPU).
      await fair.killContainer(node.nodeId, started.containerId, { pollMs: this.timing.programPollMs }).catch(() => undefined);
      store.clear();
      throw error;
    }
    const coldStartMs = Date.now() - (this.startingSinceMs ?? Date.now());
    this.coldStartsMs.push(coldStartMs);
    if (this.coldStartsMs.length > 20) this.coldStartsMs.shift();
    store.save({ node: node.nodeId, hostAddress: node.hostAddress, endpoint, startedAt, coldStartMs, ...started });
    return endpoint;
  }

  /**
   * The record, with the container id filled in when only the start program is known
   * (a start given up before its program finished, in this run or an earlier one).
   */
  private async completeRecord(): Promise<ServerRecord | undefined> {
    const { fair, store } = this.deps;
    const record = store.load();
    if (!fair || !record?.programId || record.containerId) return record;
    const containerId = await fair.createdContainer(record.node, record.programId).catch(() => undefined);
    if (!containerId) return record;
    const completed = { ...record, containerId };
    store.save(completed);
    return completed;
  }

  /** Stops the container of a start program that was given up; what cannot be stopped now stays recorded. */
  private async stopAbandoned(node: string, programId: string): Promise<void> {
    const fair = this.deps.fair!;
    const record = await this.completeRecord();
    if (!record?.containerId || record.programId !== programId) return;
    try {
      await fair.killContainer(node, record.containerId, { pollMs: this.timing.programPollMs });
      this.deps.store.clear();
      this.log.info({ node, containerId: record.containerId }, 'stopped the container of an abandoned start');
    } catch (error) {
      this.log.warn({ reason: describe(error), containerId: record.containerId }, 'could not stop the container of an abandoned start');
    }
  }

  private async pickNode(): Promise<FairNode> {
    const nodes = await this.deps.fair!.listNodes();
    const wanted = this.deps.config.fairNode;
    if (nodes.length === 0) throw new StartupError('failed', messages.startupFailed('the Fair cluster has no nodes'));
    if (wanted === 'any') return nodes[0]!;
    const node = nodes.find((n) => n.nodeId === wanted);
    if (!node) {
      throw new StartupError(
        'failed',
        messages.startupFailed(`FAIR_NODE "${wanted}" is not a node of this cluster (nodes: ${nodes.map((n) => n.nodeId).join(', ')})`),
      );
    }
    return node;
  }

  /** Retries control-plane calls that failed for a passing reason (network, 5xx) until the deadline. */
  private async retrying<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    let lastError: FairApiError | undefined;
    for (let attempt = 0; ; attempt++) {
      try {
        // A control plane that is slow rather than down must not hold the jobs past
        // STARTUP_TIMEOUT_S either: the call is given up (its answer ignored) at the deadline.
        return await this.untilAborted(fn, signal, lastError);
      } catch (error) {
        if (!(error instanceof FairApiError) || !error.transient) throw error;
        lastError = error;
        const wait = this.timing.fairRetryMs[Math.min(attempt, this.timing.fairRetryMs.length - 1)] ?? 1_000;
        this.log.warn({ reason: error.message, retryInMs: wait }, 'Fair call failed; retrying');
        signal.throwIfAborted();
        await delay(wait, signal).catch(() => {
          // Past the deadline, the user is better served by Fair's reason than by "timeout".
          if ((signal.reason as { name?: string } | undefined)?.name === 'TimeoutError') {
            throw new StartupError('failed', messages.startupFailed(describe(error)));
          }
          throw signal.reason;
        });
      }
    }
  }

  /**
   * Settles as `fn()` does, or rejects when `signal` aborts first. A passed deadline is put
   * in words: the last error Fair gave in this retry loop, else that it did not answer.
   */
  private untilAborted<T>(fn: () => Promise<T>, signal: AbortSignal, lastError?: FairApiError): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if ((signal.reason as { name?: string } | undefined)?.name !== 'TimeoutError') return reject(signal.reason);
        const timeoutS = Math.round(this.deps.config.startupTimeoutMs / 1000);
        const reason = lastError ? describe(lastError) : `the Fair control plane did not answer within ${timeoutS} s (STARTUP_TIMEOUT_S)`;
        reject(new StartupError('failed', messages.startupFailed(reason)));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      fn().then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      );
    });
  }

  /**
   * Waits for a container an earlier run started. Docker's proxy accepts (and resets) on a
   * started container's port even before the app listens, so a port refused for a while
   * means the container is gone: give up on it then, not at the end of the whole window.
   */
  private async waitForEarlier(endpoint: string, until: number, signal: AbortSignal): Promise<boolean> {
    let refusedSince: number | undefined;
    for (;;) {
      signal.throwIfAborted();
      const { readiness, refused } = await this.deps.inference.probeDetail(endpoint);
      if (readiness === 'ready') return true;
      const now = Date.now();
      refusedSince = refused ? (refusedSince ?? now) : undefined;
      if (now >= until || (refusedSince !== undefined && now - refusedSince >= this.timing.earlierRefusedMs)) return false;
      await delay(this.timing.probeIntervalMs, signal);
    }
  }

  private async waitUntilReady(endpoint: string, deadline: number, signal: AbortSignal): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      if ((await this.deps.inference.probe(endpoint)) === 'ready') return;
      if (Date.now() >= deadline) {
        throw new StartupError('timeout', messages.startupTimeout(this.deps.config.startupTimeoutMs / 1000));
      }
      await delay(this.timing.probeIntervalMs, signal);
    }
  }

  // --- stopping -----------------------------------------------------------------

  private stop(reason: 'admin' | 'idle'): Promise<void> {
    this.stopping ??= this.runStop(reason).finally(() => {
      this.stopping = undefined;
    });
    return this.stopping;
  }

  private async runStop(reason: 'admin' | 'idle'): Promise<void> {
    this.clearIdleTimer();
    const previous = this.currentState;
    this.epoch++;
    this.setState('stopping');
    try {
      const record = await this.completeRecord();
      if (record?.containerId && this.deps.fair) {
        this.log.info({ reason, node: record.node, containerId: record.containerId }, 'stopping the GPU server');
        await this.deps.fair.killContainer(record.node, record.containerId, { pollMs: this.timing.programPollMs });
      }
      this.deps.store.clear();
      this.endpoint = undefined;
      this.setState('stopped');
      this.emit('stopped', { reason });
    } catch (error) {
      this.log.error({ reason: describe(error) }, 'could not stop the GPU server');
      this.setState(previous === 'ready' ? 'ready' : 'stopped');
      if (this.currentState === 'ready') this.armIdleTimer();
      throw error;
    }
  }

  private armIdleTimer(): void {
    const idleMs = this.deps.config.idleShutdownMs;
    if (this.closed || idleMs <= 0 || this.busy > 0 || this.currentState !== 'ready' || this.idleTimer) return;
    // Only a server this bot started (one with a container id) is ours to stop.
    if (!this.deps.fair || !this.deps.store.load()?.containerId) return;
    this.idleShutdownAt = Date.now() + idleMs;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      this.idleShutdownAt = undefined;
      if (this.busy > 0 || this.currentState !== 'ready') return;
      this.log.info({ idleMs }, 'GPU server idle; stopping it');
      this.stop('idle').catch(() => undefined);
    }, idleMs);
    this.idleTimer.unref();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.idleShutdownAt = undefined;
  }

  private setState(state: GpuState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.stateSince = new Date();
    this.emit('state', state);
  }
}

export function describe(error: unknown): string {
  if (error instanceof StartupError) return error.message;
  if (error instanceof FairApiError) {
    if (error.call === 'POST /auth/login' && (error.status === 401 || error.status === 403)) {
      return `Fair refused the login (${error.serverMessage}); check FAIR_EMAIL and FAIR_PASSWORD`;
    }
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

function isShutdown(signal: AbortSignal): boolean {
  return signal.reason instanceof StartupError && signal.reason.kind === 'shutdown';
}

export function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export type { ServerRecord };
