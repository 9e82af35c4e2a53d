import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { InferenceClient } from '../inference/client.js';
import { messages } from '../messages.js';
import { newHolderId } from '../storage/leases.js';
import { isBusy, retryBusy } from '../storage/sqlite.js';
import { delay, errText, FairApiError, type FairClient, type FairNode } from './client.js';
import { exitCodeOf, meansAlreadyGone, startServerProgram, waitProgram, type ContainerSpec } from './programs.js';
import type { NewServerRecord, ServerRecord, ServerRecords } from './records.js';

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

/** What `/gpu kill` (or an idle stop) achieved. "stopped" only after Fair confirmed the Kill. */
export type StopOutcome =
  | { kind: 'stopped' }
  | { kind: 'not-running' }
  /** Answering on our port but not started by this bot: nothing was stopped. */
  | { kind: 'external'; endpoint: string }
  /** The start was given up before Fair named its container: it is killed as soon as Fair does. */
  | { kind: 'pending'; reason: string }
  | { kind: 'failed'; reason: string }
  /** Idle stop only: another process is generating on the server. */
  | { kind: 'in-use' }
  /** Stopped what the bot knows of; a start request got no answer, so Fair may have made another container. */
  | { kind: 'stopped-answer-lost'; node: string };

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
  /** A stop's own deadline: from the first Kill call to Fair's confirmation. */
  stopTimeoutMs: number;
  /** Leases (one process changes the server at a time; "I am using it") expire this long after their last renewal. */
  leaseTtlMs: number;
  /** How often the shared record is read again (what other processes did), leases renewed and pending kills retried. */
  syncIntervalMs: number;
  /** How often a cold start checks whether its container exited (a crash is noticed within this plus a poll). */
  exitPollMs: number;
  /** close() returns within about this long, whatever Fair does. */
  closeWaitMs: number;
}

const DEFAULT_TIMING: LifecycleTiming = {
  probeIntervalMs: 150,
  backoffMs: [5_000, 10_000, 20_000, 40_000, 60_000],
  fairRetryMs: [500, 1_000, 2_000, 4_000, 8_000],
  programPollMs: 200,
  earlierRefusedMs: 30_000,
  stopTimeoutMs: 20_000,
  leaseTtlMs: 30_000,
  syncIntervalMs: 2_000,
  exitPollMs: 2_000,
  closeWaitMs: 3_000,
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
  /** Answering, but not started by this bot: it will not stop it. */
  external?: boolean;
  /** A kill Fair has not confirmed yet (an abandoned start, a Kill that did not finish). */
  pendingKill?: string;
  /** Another process on the same DATA_DIR is starting or stopping the server. */
  busyElsewhere?: string;
}

export interface LifecycleDeps {
  config: Config;
  logger: Logger;
  /** Absent without FAIR_EMAIL/FAIR_PASSWORD: then only INFERENCE_URL is used. */
  fair?: FairClient;
  inference: InferenceClient;
  /** The shared server records (DATA_DIR/fairbot.db). */
  records: ServerRecords;
  timing?: Partial<LifecycleTiming>;
}

/** Start program sent, answer lost: whether Fair made the program cannot be known. */
const LIFECYCLE_LEASE = 'server:gpu-0';
const USE_LEASE_PREFIX = 'use:gpu-0:';

/**
 * The one owner of the GPU server's life: the only code that starts or stops it.
 *
 * Its truth is the shared record (src/fair/records.ts), not memory: every phase is committed
 * before the act that follows it, one process at a time changes the server (a lease), and any
 * process finishes what another left open (an abandoned start's kill, a stop Fair had not
 * confirmed). Memory holds only this process's view: its state for its jobs, timers, backoff.
 *
 * Events: 'state' (GpuState), 'ready' ({ coldStartMs, started: whether a start program was sent }),
 * 'start-failed' (StartupError), 'stopped' ({ reason }).
 */
export class GpuLifecycle extends EventEmitter {
  private currentState: GpuState = 'stopped';
  private stateSince = new Date();
  private epoch = 0;
  private endpoint: string | undefined;
  /** The server in use came from the shared record (not INFERENCE_URL found answering). */
  private endpointRecordId: string | undefined;
  private starting: Promise<ReadyServer> | undefined;
  private startAbort: AbortController | undefined;
  private stopping: Promise<StopOutcome> | undefined;
  private startingSinceMs: number | undefined;
  private failures = 0;
  private nextAttemptAt = 0;
  /** While a start waits out its backoff: when it tries again. */
  private retryAt: number | undefined;
  private lastError: string | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private idleShutdownAt: number | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> | undefined;
  private leaseHeld = false;
  /** Why the database could not be written on the last try (not busy: broken, full), if it could not. */
  private unwritable: unknown;
  /** The start program's PUT while Fair has not answered it: a stop waits for the answer before it decides. */
  private putInFlight: { recordId: string; answer: Promise<unknown> } | undefined;
  private leaseHeartbeat: NodeJS.Timeout | undefined;
  private usingServer = false;
  private busy = 0;
  private closed = false;
  /** Recent cold starts, newest last, for the warming-up ETA. */
  readonly coldStartsMs: number[] = [];
  /** Start programs this process sent to Fair. */
  startProgramsSent = 0;
  /** Who this process is in the shared leases. */
  readonly holder = newHolderId();
  private readonly timing: LifecycleTiming;
  private readonly log: Logger;
  private readonly records: ServerRecords;

  constructor(private readonly deps: LifecycleDeps) {
    super();
    this.timing = { ...DEFAULT_TIMING, ...deps.timing };
    this.log = deps.logger.child({ component: 'gpu' });
    this.records = deps.records;
    if (deps.fair) {
      this.syncTimer = setInterval(() => void this.sync(), this.timing.syncIntervalMs);
      this.syncTimer.unref();
    }
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

  /** While a start waits out its backoff after failed attempts: how long until it tries again. */
  retryInMs(now = Date.now()): number | undefined {
    return this.retryAt === undefined ? undefined : Math.max(0, this.retryAt - now);
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
   * Resolves once the server answers. Idempotent: however many callers wait during a cold
   * start, in this process or in others on the same DATA_DIR, one start program reaches Fair.
   */
  ensureReady(): Promise<ReadyServer> {
    if (this.closed) return Promise.reject(new StartupError('shutdown', messages.stoppedForShutdown));
    if (this.currentState === 'ready' && this.endpoint) return Promise.resolve({ endpoint: this.endpoint, epoch: this.epoch });
    this.starting ??= this.runStart().finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  /** On start-up: adopt the server the record names if it answers, and finish what was left open. */
  async recover(): Promise<void> {
    await this.sync();
    const record = this.records.get();
    const endpoint = record ? (record.phase === 'ready' && !record.abandoned ? record.endpoint : undefined) : this.deps.config.inferenceUrl;
    if (!endpoint || this.currentState !== 'stopped') return;
    if ((await this.deps.inference.probe(endpoint)) === 'ready' && this.currentState === 'stopped') {
      this.useServer(endpoint, record);
      this.log.info({ endpoint, node: record?.node, containerId: record?.containerId }, 'GPU server already running; using it');
    }
  }

  /** A job found the server gone (refused or reset). Only the server of that epoch is marked down. */
  markDown(epoch: number, reason: string): void {
    if (epoch !== this.epoch || this.currentState !== 'ready') return;
    this.log.warn({ reason, endpoint: this.endpoint }, 'GPU server is down; the next job starts it again');
    this.dropServer();
  }

  /** Jobs waiting or generating in this process; the idle timer runs only at zero. */
  setActivity(busy: number): void {
    this.busy = busy;
    if (busy > 0) this.clearIdleTimer();
    else this.armIdleTimer();
    // Written when use starts or ends, not on every job: the sync loop renews it meanwhile.
    if (busy > 0 !== this.usingServer) void this.holdUseLease();
  }

  noteGeneration(ms: number): void {
    void this.write(() => this.records.noteGeneration(ms)).catch(() => undefined);
  }

  /** `/gpu kill`: stops the server now, whatever is waiting; clears the start backoff. */
  async kill(): Promise<StopOutcome> {
    this.failures = 0;
    this.nextAttemptAt = 0;
    this.lastError = undefined;
    const abortedStart = this.starting !== undefined;
    this.startAbort?.abort(new StartupError('killed', messages.killedByAdmin));
    // A start under way in another process: the abandoned mark tells it to give up.
    const record = this.records.get();
    if (record && !record.external && record.phase !== 'ready' && record.phase !== 'stopping' && !record.abandoned) {
      await this.write(() => this.records.update(record.id, { abandoned: true })).catch(() => undefined);
    }
    // The aborted start marks its record abandoned (it does not stop it: this does, below).
    await settleWithin(this.starting, this.timing.stopTimeoutMs);
    const outcome = await this.stop('admin');
    return outcome.kind === 'not-running' && abortedStart ? { kind: 'stopped' } : outcome;
  }

  /** Stops timers and start attempts within a few seconds; a running server stays up for the next run (it is recorded). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearIdleTimer();
    clearInterval(this.syncTimer);
    this.startAbort?.abort(new StartupError('shutdown', messages.stoppedForShutdown));
    // A start request Fair has not answered yet: its answer (a program id) must reach the record.
    await settleWithin(Promise.allSettled([this.starting, this.stopping, this.syncing, this.putInFlight?.answer]), this.timing.closeWaitMs);
    this.releaseLease();
    try {
      if (this.usingServer) this.records.leases.release(USE_LEASE_PREFIX + this.holder, this.holder);
    } catch {
      /* it expires by itself */
    }
    this.records.close();
  }

  status(): LifecycleStatus {
    const record = this.safeRecord();
    const lastGeneration = this.safely(() => this.records.lastGeneration());
    const elsewhere = this.safely(() => this.records.leases.holderOf(LIFECYCLE_LEASE));
    const busyElsewhere = elsewhere && elsewhere.holder !== this.holder ? (elsewhere.info ?? 'changing the GPU server') : undefined;
    let state = this.currentState;
    // What other processes are doing counts too: never "stopped" while a start is in flight anywhere.
    if (state === 'stopped' && record && !record.external) {
      if (record.phase === 'stopping' || record.abandoned) state = 'stopping';
      else if (record.phase !== 'ready') state = 'starting';
      else if (busyElsewhere === undefined) state = 'ready';
    }
    const pendingKill =
      record && (record.abandoned || record.phase === 'stopping')
        ? record.containerId
          ? `a Kill of container ${record.containerId.slice(0, 12)} that Fair has not confirmed yet`
          : `the start program ${record.programId ?? '(not yet accepted)'} is killed as soon as Fair creates its container`
        : undefined;
    return {
      state,
      stateSince: this.stateSince,
      managed: this.managed,
      node: record?.node,
      hostAddress: record?.hostAddress,
      endpoint: this.endpoint ?? record?.endpoint ?? this.deps.config.inferenceUrl,
      programId: record?.programId,
      containerId: record?.containerId,
      startedAt: record ? new Date(record.startedAt) : undefined,
      coldStartMs: record?.coldStartMs ?? this.coldStartsMs.at(-1),
      lastGenerationAt: lastGeneration?.at,
      lastGenerationMs: lastGeneration?.ms,
      idleShutdownAt: this.idleShutdownAt === undefined ? undefined : new Date(this.idleShutdownAt),
      nextStartAttemptAt: this.nextAttemptAt > Date.now() ? new Date(this.nextAttemptAt) : undefined,
      lastError: this.lastError,
      external: record?.external || (this.currentState === 'ready' && this.endpointRecordId === undefined && this.managed) || undefined,
      pendingKill,
      busyElsewhere,
    };
  }

  /** Whether the Fair control plane answers now, for /gpu status (undefined when the bot has no Fair account). */
  async checkControlPlane(timeoutMs = 5_000): Promise<{ ok: true; nodes: number } | { ok: false; reason: string } | undefined> {
    const fair = this.deps.fair;
    if (!fair) return undefined;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error(`no answer within ${timeoutMs / 1000} s`)), timeoutMs);
    try {
      const nodes = await fair.listNodes({ signal: abort.signal });
      return { ok: true, nodes: nodes.length };
    } catch (error) {
      return { ok: false, reason: describe(error) };
    } finally {
      clearTimeout(timer);
    }
  }

  // --- starting ---------------------------------------------------------------

  private async runStart(): Promise<ReadyServer> {
    const abort = new AbortController();
    let startTimer: NodeJS.Timeout | undefined;
    this.startAbort = abort;
    this.startingSinceMs = Date.now();
    this.setState('starting');
    try {
      // After failed starts, wait before trying again: no start storm against Fair.
      const wait = this.nextAttemptAt - Date.now();
      if (wait > 0) {
        this.log.info({ waitMs: wait }, 'waiting before the next start attempt');
        this.retryAt = this.nextAttemptAt;
        try {
          await delay(wait, abort.signal);
        } finally {
          this.retryAt = undefined;
        }
        this.startingSinceMs = Date.now();
      }
      const timeoutMs = this.deps.config.startupTimeoutMs;
      const deadline = Date.now() + timeoutMs;
      // A plain timer, not AbortSignal.any([.., AbortSignal.timeout()]): Node 20 may garbage-collect
      // that timeout signal before it fires (nodejs/node#57736), and the start would never time out.
      startTimer = setTimeout(() => abort.abort(new DOMException(`not ready within ${timeoutMs} ms`, 'TimeoutError')), timeoutMs);
      const sentBefore = this.startProgramsSent;
      const { endpoint, record } = await this.acquireServer(abort.signal, deadline);
      const coldStartMs = Date.now() - this.startingSinceMs;
      this.failures = 0;
      this.nextAttemptAt = 0;
      this.lastError = undefined;
      this.useServer(endpoint, record);
      this.log.info({ endpoint, coldStartMs }, 'GPU server ready');
      this.emit('ready', { coldStartMs, started: this.startProgramsSent > sentBefore });
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

  /**
   * A server that answers: the recorded one, one found on INFERENCE_URL, one another process
   * is starting (wait for it), or a fresh one started here while holding the lease.
   */
  private async acquireServer(signal: AbortSignal, deadline: number): Promise<{ endpoint: string; record?: ServerRecord }> {
    const { config, fair, inference } = this.deps;
    for (;;) {
      signal.throwIfAborted();
      const record = this.records.get();
      if (record?.phase === 'ready' && !record.abandoned && (await inference.probe(record.endpoint)) === 'ready') {
        return { endpoint: record.endpoint, record };
      }
      // Started by hand on INFERENCE_URL: use it, start nothing (and never stop it).
      if (!record && config.inferenceUrl && (await inference.probe(config.inferenceUrl)) === 'ready') {
        return { endpoint: config.inferenceUrl };
      }
      if (!fair) {
        if (!config.inferenceUrl) throw new StartupError('no-server', messages.noServer);
        await this.waitUntilReady(config.inferenceUrl, deadline, signal);
        return { endpoint: config.inferenceUrl };
      }
      const leased = this.takeLease('starting the GPU server');
      // Nothing is started that could not be recorded first.
      if (!leased && this.unwritable !== undefined) {
        this.log.error({ file: this.records.file, err: this.unwritable }, 'cannot record a GPU server start; not starting one');
        throw new StartupError('failed', messages.startupFailed(`the bot cannot write its database (${describe(this.unwritable)})`));
      }
      if (leased) {
        try {
          return await this.startHoldingLease(signal, deadline);
        } finally {
          this.releaseLease();
        }
      }
      // Another process on this DATA_DIR is starting or stopping it: wait for its outcome (within our deadline).
      await delay(this.timing.probeIntervalMs, signal);
    }
  }

  private async startHoldingLease(signal: AbortSignal, deadline: number): Promise<{ endpoint: string; record?: ServerRecord }> {
    const { config, inference } = this.deps;
    let record = this.records.get();
    if (record) {
      if (record.phase === 'ready' && !record.abandoned && (await inference.probe(record.endpoint)) === 'ready') {
        return { endpoint: record.endpoint, record };
      }
      const openStart = !record.abandoned && !record.external && record.phase !== 'ready' && record.phase !== 'stopping';
      if (openStart && Date.parse(record.startedAt) + config.startupTimeoutMs > Date.now()) {
        // A start an earlier run or another process left mid-way (a deploy during a cold start):
        // wait for that container within its own window rather than start a second one.
        const ready = await this.finishEarlierStart(record, signal, deadline);
        if (ready) return { endpoint: ready.endpoint, record: ready };
        record = this.records.get();
      }
      // Whatever the record names no longer serves: it holds the port (and maybe the GPU), so it goes first.
      if (record) await this.retireBeforeStart(record, signal);
    }
    return this.startFresh(signal, deadline);
  }

  private async retireBeforeStart(record: ServerRecord, signal: AbortSignal): Promise<void> {
    if (record.external) {
      await this.write(() => this.records.remove(record.id));
      return;
    }
    let outcome: StopOutcome;
    try {
      outcome = await this.retire(record, signal);
    } catch (error) {
      outcome = { kind: 'failed', reason: describe(error) };
    }
    // Out of time for this start (its deadline ended the stop): say so as the start's timeout.
    if (signal.aborted) throw signal.reason;
    if (outcome.kind === 'failed' || outcome.kind === 'pending') {
      throw new StartupError('failed', messages.startupFailed(`the previous GPU server could not be stopped first (${outcome.reason})`));
    }
  }

  /** Waits for a start another process (or an earlier run) left under way; the ready record, or undefined. */
  private async finishEarlierStart(record: ServerRecord, signal: AbortSignal, deadline: number): Promise<ServerRecord | undefined> {
    const { config } = this.deps;
    const until = Math.min(deadline, Date.parse(record.startedAt) + config.startupTimeoutMs);
    this.log.info({ node: record.node, programId: record.programId, containerId: record.containerId }, 'waiting for the GPU server an earlier run started');
    if (await this.waitForEarlier(record.endpoint, until, signal)) {
      // Ready: it must be stoppable (its container named) or honestly labelled as not stoppable.
      let containerId = record.containerId;
      if (!containerId && record.programId) {
        const named = await this.namedContainer(record.node, record.programId, signal).catch(() => null);
        containerId = named === 'not-yet' || named === null ? undefined : named;
      }
      const coldStartMs = Date.now() - Date.parse(record.startedAt);
      return this.write(() => this.records.update(record.id, { phase: 'ready', coldStartMs, containerId, external: containerId === undefined }));
    }
    if (Date.now() >= deadline) throw new StartupError('timeout', messages.startupTimeout(config.startupTimeoutMs / 1000));
    this.log.warn({ containerId: record.containerId }, 'the GPU server an earlier run started is not coming up; starting a fresh one');
    return undefined;
  }

  /** Sends the start program, records each step before the next, and waits for readiness. */
  private async startFresh(signal: AbortSignal, deadline: number): Promise<{ endpoint: string; record?: ServerRecord }> {
    const { config } = this.deps;
    const fair = this.deps.fair!;
    const node = await this.retrying(() => this.pickNode(signal), signal);
    const endpoint = config.inferenceUrl ?? (node.hostAddress ? `http://${node.hostAddress}:${config.fairPorts.host}` : undefined);
    if (!endpoint) {
      throw new StartupError('failed', messages.startupFailed(`Fair lists no host_address for node ${node.nodeId}; set INFERENCE_URL to the server's address`));
    }
    const spec: ContainerSpec = {
      image: config.fairImage,
      runtime: config.fairRuntime,
      hostPort: config.fairPorts.host,
      containerPort: config.fairPorts.container,
    };
    // Past the deadline (or killed) while picking the node: send no start program at all.
    signal.throwIfAborted();
    const intent: NewServerRecord = {
      node: node.nodeId,
      hostAddress: node.hostAddress,
      endpoint,
      phase: 'creating',
      startedAt: new Date().toISOString(),
      startedBy: this.holder,
    };
    const { id } = await this.write(() => this.records.create(intent));
    this.log.info({ node: node.nodeId, image: spec.image }, 'starting the GPU server on Fair');
    const program = await this.submitStart(id, node.nodeId, spec, endpoint, signal);
    this.startProgramsSent++;
    try {
      // Recorded before anything else: from here a container may exist, and must never be lost.
      await this.advance(id, { phase: 'created', programId: program.programId, startAnswerLost: program.answerLost });
      await this.retrying(() => fair.closeStdin(program.bucketId, { signal }), signal);
      const containerId = await this.createdContainer(node.nodeId, program.programId, signal);
      await this.advance(id, { phase: 'started', containerId });
      await this.startCommandDone(node.nodeId, program.programId, signal);
      const exited = this.watchExit(node.nodeId, containerId, signal);
      await this.waitUntilReady(endpoint, deadline, signal, { recordId: id, exited });
      const coldStartMs = Date.now() - (this.startingSinceMs ?? Date.now());
      this.coldStartsMs.push(coldStartMs);
      if (this.coldStartsMs.length > 20) this.coldStartsMs.shift();
      const record = await this.advance(id, { phase: 'ready', coldStartMs });
      return { endpoint, record };
    } catch (error) {
      // A deploy mid cold start: leave the container starting for the next run to adopt.
      if (isShutdown(signal)) throw error;
      if (error instanceof PortTaken) return this.portTaken(id, node, endpoint, deadline, signal, program.answerLost);
      await this.abandon(id, isKilled(signal) || isKilled(error));
      throw error;
    }
  }

  /**
   * The PUT of the start program. A 5xx or a lost answer leaves it unknown whether Fair made the
   * program; it is sent again only while nothing listens on the server's port (a first one that
   * did get made binds it at Start). What this cannot see, a program still pulling its image, is
   * caught later: its Start finds the port taken (see portTaken).
   */
  private async submitStart(id: string, node: string, spec: ContainerSpec, endpoint: string, signal: AbortSignal) {
    const fair = this.deps.fair!;
    let inFlight: Promise<{ programId: string; bucketId: string }> | undefined;
    let answerLost = false;
    try {
      const program = await this.retrying(async () => {
        // Not aborted with the start: an answer cut off would leave a program nobody knows of.
        inFlight = fair.submitProgram(node, startServerProgram(spec));
        this.putInFlight = { recordId: id, answer: inFlight.catch(() => undefined) };
        try {
          const program = await inFlight;
          this.putInFlight = undefined;
          return program;
        } catch (error) {
          if (error instanceof FairApiError && error.transient) {
            // Fair may have made the program all the same: remembered, so no stop of this server
            // can later claim more than it knows.
            if (!answerLost) await this.write(() => this.records.update(id, { startAnswerLost: true })).catch(() => undefined);
            answerLost = true;
            const { refused } = await this.deps.inference.probeDetail(endpoint);
            if (!refused) {
              throw new StartupError(
                'failed',
                messages.startupFailed(`${describe(error)}; something already answers on ${endpoint}, so the start is not sent again`),
              );
            }
          }
          throw error;
        }
      }, signal);
      return { ...program, answerLost };
    } catch (error) {
      const late = inFlight;
      if (signal.aborted && late && this.putInFlight?.recordId === id) {
        // Given up (deadline, kill) while Fair was still answering: the program may exist. The
        // record stays until the answer says; then the start is recorded abandoned and killed.
        // A stop that comes meanwhile waits for this (see retire).
        const recorded = late
          .then(
            // A shutdown leaves the start for the next run to adopt, as it does a later one.
            (program) => this.lateProgram(id, node, program, !isShutdown(signal)),
            () => this.write(() => this.records.remove(id)),
          )
          .catch(() => undefined)
          .finally(() => {
            if (this.putInFlight?.recordId === id) this.putInFlight = undefined;
          });
        this.putInFlight = { recordId: id, answer: recorded };
      } else if (answerLost) {
        // An earlier request's answer was lost: the record stays as the trace of what may exist
        // (see retire: it is said on the stop, then forgotten).
        this.putInFlight = undefined;
        await this.write(() => this.records.update(id, { abandoned: true })).catch(() => undefined);
      } else {
        this.putInFlight = undefined;
        // Fair did not take the program (as far as can be known): nothing to track.
        await this.write(() => this.records.remove(id)).catch(() => undefined);
      }
      throw error;
    }
  }

  /** The answer to a start program that was given up while Fair was still answering. */
  private async lateProgram(id: string, node: string, program: { programId: string; bucketId: string }, abandoned: boolean): Promise<void> {
    this.startProgramsSent++;
    const record = await this.write(() => this.records.update(id, { phase: 'created', programId: program.programId, abandoned })).catch(() => undefined);
    this.log.warn({ node, programId: program.programId, abandoned }, 'a start program given up was accepted by Fair after all');
    if (!record) return;
    await this.deps.fair!.closeStdin(program.bucketId).catch(() => undefined);
    if (!this.closed) void this.sync();
  }

  /** The container a start program made, once its Create command has run. */
  private async createdContainer(node: string, programId: string, signal: AbortSignal): Promise<string> {
    for (;;) {
      // Status before result: a program that completes between the two reads still shows its entries.
      const status = await this.retrying(() => this.deps.fair!.programStatus(node, programId, { signal }), signal);
      const entries = await this.retrying(() => this.deps.fair!.programResult(node, programId, { signal }), signal);
      const create = entries[0];
      if (create && 'err' in create) throw new FairApiError('start program', undefined, errText(create.err), false);
      if (create) {
        const containerId = (create.ok as { container_id?: unknown } | null)?.container_id;
        if (typeof containerId === 'string' && containerId) return containerId;
        throw new FairApiError('start program', undefined, 'the Create result has no container_id', false);
      }
      if (status === 'Completed') throw new FairApiError('start program', undefined, 'the program completed without creating a container', false);
      await delay(this.timing.programPollMs, signal);
    }
  }

  /** Waits for the Start command's entry; a taken host port is its own case. */
  private async startCommandDone(node: string, programId: string, signal: AbortSignal): Promise<void> {
    for (;;) {
      const status = await this.retrying(() => this.deps.fair!.programStatus(node, programId, { signal }), signal);
      const entries = await this.retrying(() => this.deps.fair!.programResult(node, programId, { signal }), signal);
      const start = entries[1];
      if (start && 'err' in start) {
        const text = errText(start.err);
        if (/port is already allocated/i.test(text)) throw new PortTaken(text);
        throw new FairApiError('start program', undefined, text, false);
      }
      if (start) return;
      if (status === 'Completed') throw new FairApiError('start program', undefined, 'the program completed without starting the container', false);
      await delay(this.timing.programPollMs, signal);
    }
  }

  /**
   * Our container never ran: something else holds the host port. If a diffusion server answers
   * there, use it, labelled as not ours (nothing will claim to stop it); otherwise say what to change.
   */
  private async portTaken(id: string, node: FairNode, endpoint: string, deadline: number, signal: AbortSignal, answerLost: boolean) {
    const { config, inference } = this.deps;
    // Created but never started: it holds neither the port nor the GPU, so there is nothing to kill.
    await this.write(() => this.records.remove(id));
    // After a start request whose answer was lost, the holder is most likely that request's own
    // container, still in its cold start: wait for it rather than call the port taken.
    if (answerLost || (await inference.probe(endpoint)) !== 'down') {
      if (answerLost)
        this.log.warn({ endpoint }, 'the port is held, most likely by the container of a start request whose answer was lost; the bot has no id to stop it by');
      this.log.warn({ endpoint }, 'host port taken by a diffusion server this bot did not start; using it, and never stopping it');
      await this.waitUntilReady(endpoint, deadline, signal);
      const adopted = await this.write(() =>
        this.records.create({
          node: node.nodeId,
          hostAddress: node.hostAddress,
          endpoint,
          phase: 'ready',
          startedAt: new Date().toISOString(),
          external: true,
        }),
      );
      return { endpoint, record: adopted };
    }
    throw new StartupError(
      'failed',
      messages.startupFailed(
        `host port ${config.fairPorts.host} is already taken on node ${node.nodeId} and no diffusion server answers there (change FAIR_PORTS)`,
      ),
    );
  }

  /**
   * Watches for the container exiting during its cold start, with a Wait program on it
   * (INFERRED wire form, see programs.ts). A cluster that refuses it only costs the early notice.
   */
  private watchExit(node: string, containerId: string, signal: AbortSignal): () => Promise<number | undefined> {
    const fair = this.deps.fair!;
    const wait = fair.createProgram(node, waitProgram(containerId), { signal }).catch((error: unknown) => {
      if (!signal.aborted)
        this.log.warn({ reason: describe(error) }, 'cannot watch the container for an early exit; a crash during start-up shows as a timeout');
      return undefined;
    });
    let checkedAt = Date.now();
    return async () => {
      if (Date.now() - checkedAt < this.timing.exitPollMs) return undefined;
      checkedAt = Date.now();
      const program = await wait;
      if (!program) return undefined;
      const status = await fair.programStatus(node, program.programId, { signal }).catch(passing);
      if (status !== 'Completed') return undefined;
      const entries = await fair.programResult(node, program.programId, { signal }).catch(passing);
      const entry = entries?.[0];
      return entry && 'ok' in entry ? (exitCodeOf(entry.ok) ?? -1) : undefined;
    };
  }

  private async pickNode(signal: AbortSignal): Promise<FairNode> {
    const nodes = await this.deps.fair!.listNodes({ signal });
    const wanted = this.deps.config.fairNode;
    if (nodes.length === 0) throw new StartupError('failed', messages.startupFailed('the Fair cluster has no nodes'));
    // Without INFERENCE_URL the bot must reach the server at the node's address.
    const usable = this.deps.config.inferenceUrl ? nodes : nodes.filter((n) => n.hostAddress);
    if (wanted === 'any') {
      const node = usable[0];
      if (!node) throw new StartupError('failed', messages.startupFailed('Fair lists no node with a host_address; set INFERENCE_URL'));
      return node;
    }
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
        await delay(wait, signal).catch(() => {
          throw this.deadlineError(signal, error);
        });
      }
    }
  }

  /**
   * Past the deadline, the user is better served by Fair's last reason than by "timeout", and
   * told so when the deadline came while waiting for Fair's answer to one call for long.
   */
  private deadlineError(signal: AbortSignal, lastError?: FairApiError, callStartedAt = Date.now()): unknown {
    if ((signal.reason as { name?: string } | undefined)?.name !== 'TimeoutError') return signal.reason;
    const timeoutMs = this.deps.config.startupTimeoutMs;
    if (lastError) return new StartupError('failed', messages.startupFailed(describe(lastError)));
    if (Date.now() - callStartedAt < timeoutMs / 2) return new StartupError('timeout', messages.startupTimeout(timeoutMs / 1000));
    const reason = `the Fair control plane did not answer within ${Math.round(timeoutMs / 1000)} s (STARTUP_TIMEOUT_S)`;
    return new StartupError('failed', messages.startupFailed(reason));
  }

  /** Settles as `fn()` does, or rejects when `signal` aborts first (in words, see deadlineError). */
  private untilAborted<T>(fn: () => Promise<T>, signal: AbortSignal, lastError?: FairApiError): Promise<T> {
    const startedAt = Date.now();
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(this.deadlineError(signal, lastError, startedAt));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      fn().then(
        (value) => {
          signal.removeEventListener('abort', onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(signal.aborted ? this.deadlineError(signal, lastError, startedAt) : error);
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

  private async waitUntilReady(
    endpoint: string,
    deadline: number,
    signal: AbortSignal,
    ours?: { recordId: string; exited: () => Promise<number | undefined> },
  ): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      if ((await this.deps.inference.probe(endpoint)) === 'ready') return;
      if (ours) {
        // Killed from another process (its /gpu kill marks the record), or the container exited.
        if (this.records.get()?.abandoned) throw new StartupError('killed', messages.killedByAdmin);
        const exitCode = await ours.exited();
        if (exitCode !== undefined) throw new StartupError('failed', messages.startupFailed(messages.serverExited(exitCode)));
      }
      if (Date.now() >= deadline) {
        throw new StartupError('timeout', messages.startupTimeout(this.deps.config.startupTimeoutMs / 1000));
      }
      await delay(this.timing.probeIntervalMs, signal);
    }
  }

  /** Moves our start's record on; if another process marked it abandoned (a kill), the start ends here. */
  private async advance(id: string, patch: Partial<ServerRecord>): Promise<ServerRecord> {
    const record = await this.write(() => this.records.update(id, patch));
    if (!record || record.abandoned) throw new StartupError('killed', messages.killedByAdmin);
    return record;
  }

  /**
   * A start given up after Fair took its program: marked abandoned (durably, so a restart or
   * another process finishes it too); a kill waiting for this start stops it, else sync() does.
   */
  private async abandon(id: string, killerStopsIt: boolean): Promise<void> {
    const record = await this.write(() => this.records.update(id, { abandoned: true })).catch(() => undefined);
    // Stopped right after this start has let go of the lease (and its waiting jobs heard why),
    // by the same code that finishes any pending kill.
    if (record && !killerStopsIt) setImmediate(() => void this.sync());
  }

  // --- stopping -----------------------------------------------------------------

  /**
   * Kills what a record names and forgets the record once Fair confirmed it, within a stop's
   * own deadline. The caller holds the lease. A start whose container Fair has not named yet
   * stays recorded as abandoned ("pending"); a Kill that failed stays recorded as stopping.
   */
  private async retire(record: ServerRecord, startSignal?: AbortSignal): Promise<StopOutcome> {
    const fair = this.deps.fair!;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new DOMException('stop deadline', 'TimeoutError')), this.timing.stopTimeoutMs);
    // A stop made for a start ends with that start's deadline too: a start never waits past its own.
    const onStartAbort = () => abort.abort(startSignal?.reason);
    startSignal?.addEventListener('abort', onStartAbort, { once: true });
    if (startSignal?.aborted) onStartAbort();
    const signal = abort.signal;
    try {
      if (record.phase === 'creating' && !record.programId) {
        // Our own PUT still unanswered: its answer decides whether there is anything to kill.
        if (this.putInFlight?.recordId === record.id) await Promise.race([this.putInFlight.answer, abortedPromise(signal)]);
        const now = this.records.get();
        if (now?.id === record.id && now.phase === 'creating' && this.putInFlight?.recordId === record.id) {
          await this.write(() => this.records.update(record.id, { abandoned: true }));
          return { kind: 'pending', reason: 'Fair has not answered the start program yet; it is killed once Fair does' };
        }
        if (now?.id === record.id && now.phase === 'creating') {
          // A process that died while Fair was answering its start request: whether Fair made the
          // program cannot be known (no API lists a node's programs). Said loudly, then forgotten.
          this.log.error(
            { node: record.node, startedBy: record.startedBy },
            'a start request whose answer never came: if Fair made it, its container runs untracked; check the node',
          );
          await this.write(() => this.records.remove(record.id));
          return { kind: 'stopped-answer-lost', node: record.node };
        }
        if (now?.id !== record.id) return { kind: 'stopped' };
        record = now;
      }
      let containerId = record.containerId;
      if (!containerId && record.programId) {
        const named = await this.namedContainer(record.node, record.programId, signal);
        if (named === 'not-yet') {
          await this.write(() => this.records.update(record.id, { abandoned: true }));
          return { kind: 'pending', reason: `Fair has not created the container of start program ${record.programId} yet; it is killed as soon as Fair does` };
        }
        containerId = named ?? undefined;
      }
      if (!containerId) {
        // Nothing was created (Create failed, or the PUT never became a program): nothing to kill.
        await this.write(() => this.records.remove(record.id));
        return { kind: 'stopped' };
      }
      // A Kill between Create and Start would find the container "not running" and be taken for
      // done, then Start would run it: wait for the start program's Start first.
      if (record.programId && record.phase !== 'ready' && !(await this.startSettled(record.node, record.programId, signal))) {
        await this.write(() => this.records.update(record.id, { abandoned: true, containerId }));
        return { kind: 'pending', reason: `Fair has not run the Start of container ${containerId.slice(0, 12)} yet; it is killed as soon as Fair does` };
      }
      // Best effort: a Kill is safe to repeat, so a database that cannot be written (a full disk)
      // must not keep the GPU running. What stays recorded is killed again and found gone.
      await this.write(() => this.records.update(record.id, { phase: 'stopping', containerId })).catch((error: unknown) =>
        this.log.error({ err: error }, 'could not record the stop; stopping the GPU server anyway'),
      );
      this.log.info({ node: record.node, containerId }, 'stopping the GPU server');
      try {
        await fair.killContainer(record.node, containerId, { signal, pollMs: this.timing.programPollMs });
      } catch (error) {
        // Fair saying the container is not there (any more) is the confirmation a Kill is for.
        if (!(error instanceof FairApiError && !error.transient && meansAlreadyGone(error.serverMessage))) {
          const reason = signal.aborted ? `Fair did not confirm the Kill within ${Math.round(this.timing.stopTimeoutMs / 1000)} s` : describe(error);
          return { kind: 'failed', reason };
        }
      }
      await this.write(() => this.records.remove(record.id)).catch((error: unknown) =>
        this.log.error({ err: error }, 'could not record that the GPU server is gone; the next start finds it gone again'),
      );
      return record.startAnswerLost ? { kind: 'stopped-answer-lost', node: record.node } : { kind: 'stopped' };
    } finally {
      clearTimeout(timer);
      startSignal?.removeEventListener('abort', onStartAbort);
    }
  }

  /** Whether a start program's Start command has run (or the program ended), within the stop's deadline. */
  private async startSettled(node: string, programId: string, signal: AbortSignal): Promise<boolean> {
    const fair = this.deps.fair!;
    for (;;) {
      try {
        const status = await fair.programStatus(node, programId, { signal });
        const entries = await fair.programResult(node, programId, { signal });
        if (entries.length >= 2 || entries.some((e) => 'err' in e) || status === 'Completed') return true;
        await delay(this.timing.programPollMs, signal);
      } catch (error) {
        if (signal.aborted) return false;
        // Fair no longer knows the program: nothing of it is still to run.
        if (error instanceof FairApiError && error.status === 404) return true;
        if (!(error instanceof FairApiError && error.transient)) return false;
        await delay(this.timing.programPollMs, signal).catch(() => undefined);
      }
    }
  }

  /** The container a start program made: its id, null when it made none, 'not-yet' while Create has not run. */
  private async namedContainer(node: string, programId: string, signal: AbortSignal): Promise<string | null | 'not-yet'> {
    const fair = this.deps.fair!;
    for (;;) {
      try {
        const status = await fair.programStatus(node, programId, { signal });
        const [create] = await fair.programResult(node, programId, { signal });
        if (create && 'err' in create) return null;
        if (create) {
          const id = (create.ok as { container_id?: unknown } | null)?.container_id;
          return typeof id === 'string' && id ? id : null;
        }
        if (status === 'Completed') return null;
      } catch (error) {
        if (signal.aborted) return 'not-yet';
        // Fair does not know the program (404): it made nothing that is still to be named.
        if (error instanceof FairApiError && error.status === 404) {
          this.log.warn({ node, programId }, 'Fair does not know this start program; nothing of it to stop');
          return null;
        }
        // Refuses to say for now: keep trying later.
        if (!(error instanceof FairApiError && error.transient)) return 'not-yet';
      }
      try {
        await delay(this.timing.programPollMs, signal);
      } catch {
        return 'not-yet';
      }
    }
  }

  private stop(reason: 'admin' | 'idle'): Promise<StopOutcome> {
    this.stopping ??= this.runStop(reason).finally(() => {
      this.stopping = undefined;
    });
    return this.stopping;
  }

  private async runStop(reason: 'admin' | 'idle'): Promise<StopOutcome> {
    this.clearIdleTimer();
    // The lease: wait for a start or stop in another process, within the stop's own deadline.
    const until = Date.now() + this.timing.stopTimeoutMs;
    while (!this.takeLease(reason === 'admin' ? 'stopping the GPU server (/gpu kill)' : 'stopping the idle GPU server')) {
      // A database that cannot be written (a full disk) must not keep the GPU running: stop
      // without the lease. A Kill is safe to repeat; the record is put right by the next reader.
      if (this.unwritable !== undefined) {
        this.log.error({ err: this.unwritable }, 'cannot write the database; stopping the GPU server without the lease');
        break;
      }
      if (Date.now() >= until || (reason === 'idle' && this.closed)) {
        if (reason === 'idle') return { kind: 'in-use' };
        return { kind: 'pending', reason: 'another fairbot process on this DATA_DIR is changing the GPU server; its start was told to stop' };
      }
      await delay(this.timing.probeIntervalMs);
    }
    try {
      const record = this.records.get();
      if (reason === 'idle' && (this.busy > 0 || this.otherUsers().length > 0)) {
        if (this.currentState === 'ready') this.armIdleTimer();
        return { kind: 'in-use' };
      }
      if (!record) {
        if (this.endpointRecordId !== undefined) this.dropServer();
        return { kind: 'not-running' };
      }
      if (record.external) return { kind: 'external', endpoint: record.endpoint };
      const previous = this.currentState;
      this.epoch++;
      this.setState('stopping');
      const outcome = await this.retire(record).catch((error: unknown): StopOutcome => ({ kind: 'failed', reason: describe(error) }));
      if (outcome.kind === 'stopped' || outcome.kind === 'stopped-answer-lost') {
        this.endpoint = undefined;
        this.endpointRecordId = undefined;
        this.setState('stopped');
        this.emit('stopped', { reason });
      } else {
        this.lastError = outcome.kind === 'failed' ? `stopping the GPU server failed: ${outcome.reason}` : undefined;
        this.log.error({ outcome }, 'the GPU server is not confirmed stopped');
        // Still ours to stop: the record stays; sync() retries the kill.
        this.setState(previous === 'ready' && outcome.kind === 'failed' ? 'ready' : 'stopped');
        if (this.currentState === 'ready') this.armIdleTimer();
      }
      return outcome;
    } finally {
      this.releaseLease();
    }
  }

  private armIdleTimer(): void {
    const idleMs = this.deps.config.idleShutdownMs;
    if (this.closed || idleMs <= 0 || this.busy > 0 || this.currentState !== 'ready' || this.idleTimer) return;
    // Only a server this bot started (one with a container id) is ours to stop.
    const record = this.safeRecord();
    if (!this.deps.fair || !record?.containerId || record.external) return;
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

  // --- what other processes did, and what is left open -------------------------

  /** Follows the shared record (another process started or stopped the server), renews leases, finishes pending kills. */
  private sync(): Promise<void> {
    if (this.closed && this.syncing === undefined) return Promise.resolve();
    this.syncing ??= this.runSync()
      .catch((error: unknown) => this.log.warn({ reason: describe(error) }, 'could not read the GPU server record'))
      .finally(() => {
        this.syncing = undefined;
      });
    return this.syncing;
  }

  private async runSync(): Promise<void> {
    await this.holdUseLease();
    if (this.closed) return;
    const record = this.records.get();
    const following = !this.starting && !this.stopping;
    if (following && this.currentState === 'ready' && this.endpointRecordId !== undefined && record?.id !== this.endpointRecordId) {
      // Stopped (or replaced) by another process.
      this.log.info('the GPU server was stopped by another fairbot process');
      this.dropServer();
    }
    if (!record) return;
    if (record.phase === 'ready' && !record.abandoned) {
      if (!following || this.currentState !== 'stopped') return;
      if ((await this.deps.inference.probe(record.endpoint)) === 'ready' && this.currentState === 'stopped' && !this.starting) {
        this.log.info({ endpoint: record.endpoint }, 'GPU server started by another fairbot process; using it');
        this.useServer(record.endpoint, record);
      }
      return;
    }
    const leftOpen = record.phase !== 'ready' && !record.external && Date.parse(record.startedAt) + this.deps.config.startupTimeoutMs < Date.now();
    if (!(record.abandoned || record.phase === 'stopping' || leftOpen)) return;
    if (!this.takeLease('finishing a pending kill')) return;
    try {
      const current = this.records.get();
      if (current?.id !== record.id) return;
      const outcome = await this.retire(current);
      // Said once it is done; while it waits for Fair, every round would only repeat itself.
      if (outcome.kind === 'stopped') this.log.info({ node: current.node, containerId: current.containerId }, 'a pending kill is done: Fair confirmed it');
      else this.log.debug({ node: current.node, outcome }, 'a pending kill still waits for Fair');
    } finally {
      this.releaseLease();
    }
  }

  // --- leases ---------------------------------------------------------------------

  /** Takes the lease that lets one process at a time start or stop the server (renewed until released). */
  private takeLease(info: string): boolean {
    if (this.leaseHeld) return false;
    let taken = false;
    try {
      taken = this.records.leases.acquire(LIFECYCLE_LEASE, this.holder, this.timing.leaseTtlMs, info);
      this.unwritable = undefined;
    } catch (error) {
      // Busy: try again on the next round. Anything else (a full disk): remembered, see runStop.
      if (!isBusy(error)) this.unwritable = error;
      return false;
    }
    if (!taken) return false;
    this.leaseHeld = true;
    this.leaseHeartbeat = setInterval(() => {
      try {
        this.records.leases.renew(LIFECYCLE_LEASE, this.holder, this.timing.leaseTtlMs);
      } catch {
        /* busy: the next beat renews it */
      }
    }, this.timing.leaseTtlMs / 3);
    this.leaseHeartbeat.unref();
    return true;
  }

  private releaseLease(): void {
    if (!this.leaseHeld) return;
    this.leaseHeld = false;
    clearInterval(this.leaseHeartbeat);
    try {
      this.records.leases.release(LIFECYCLE_LEASE, this.holder);
    } catch {
      /* it expires by itself */
    }
  }

  /** While this process has jobs, it says so in a lease: no other process's idle stop kills the server under them. */
  private async holdUseLease(): Promise<void> {
    const name = USE_LEASE_PREFIX + this.holder;
    const want = this.busy > 0 && !this.closed;
    if (!want && !this.usingServer) return;
    try {
      await retryBusy(() => {
        if (want) this.records.leases.acquire(name, this.holder, this.timing.leaseTtlMs, `${this.busy} job(s)`);
        else this.records.leases.release(name, this.holder);
      });
      this.usingServer = want;
    } catch (error) {
      this.log.warn({ reason: describe(error) }, 'could not record that this process uses the GPU server');
    }
  }

  private otherUsers() {
    return this.safely(() => this.records.leases.live(USE_LEASE_PREFIX).filter((l) => l.holder !== this.holder)) ?? [];
  }

  // --- small helpers -------------------------------------------------------------

  private useServer(endpoint: string, record: ServerRecord | undefined): void {
    this.endpoint = endpoint;
    this.endpointRecordId = record?.id;
    this.epoch++;
    this.setState('ready');
    this.armIdleTimer();
  }

  private dropServer(): void {
    this.epoch++;
    this.endpoint = undefined;
    this.endpointRecordId = undefined;
    this.clearIdleTimer();
    this.setState('stopped');
  }

  /** A record write, retried while another process holds the database's write lock. */
  private write<T>(action: () => T): Promise<T> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.timing.stopTimeoutMs);
    return retryBusy(action, abort.signal).finally(() => clearTimeout(timer));
  }

  private safeRecord(): ServerRecord | undefined {
    return this.safely(() => this.records.get());
  }

  private safely<T>(read: () => T): T | undefined {
    try {
      return read();
    } catch {
      return undefined;
    }
  }

  private setState(state: GpuState): void {
    if (state === this.currentState) return;
    this.currentState = state;
    this.stateSince = new Date();
    this.emit('state', state);
  }
}

/** The Start command found the host port taken. */
class PortTaken extends Error {}

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

function isKilled(cause: unknown): boolean {
  const reason = cause instanceof AbortSignal ? cause.reason : cause;
  return reason instanceof StartupError && reason.kind === 'killed';
}

/** Swallows a transient control-plane error (the caller polls again); rethrows the rest. */
function passing(error: unknown): undefined {
  if (error instanceof FairApiError && error.transient) return undefined;
  throw error;
}

/** Resolves when `signal` aborts. */
function abortedPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));
}

/** Waits for `promise` to settle, but no longer than `ms`. */
async function settleWithin(promise: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!promise) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

export function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export type { ServerRecord };
