import { EventEmitter } from 'node:events';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { median, StartupError, type GpuLifecycle, type ReadyServer } from '../fair/lifecycle.js';
import { InferenceError, type InferenceClient } from '../inference/client.js';
import { sniffImage } from '../inference/image.js';
import { messages } from '../messages.js';
import { isBusy, StorageError, type StorageFault } from '../storage/sqlite.js';
import { Job, newJobId } from './job.js';
import type { JobRecord, JobStore } from './store.js';
import type { FailureReason, GeneratedImage, Platform, Requester } from './types.js';

/** A job refused at the door (a limit, a bad prompt, shutting down); `message` is for the user. */
export class JobRefusal extends Error {
  override name = 'JobRefusal';
}

export interface JobServiceDeps {
  config: Config;
  logger: Logger;
  lifecycle: GpuLifecycle;
  inference: InferenceClient;
  /** Durable record of every job; without it jobs live in memory only (the CLI). */
  store?: JobStore;
  /** How often a job waiting on a cold start hears how long it has been. */
  warmingTickMs?: number;
  /** Bytes of generated images held in memory until posted; past it, no new generation starts. */
  heldImageBytesMax?: number;
}

/**
 * A job whose generation was under way when the bot crashed this often is not tried again
 * (a crash loop guard). A clean shutdown (SIGTERM) does not count: the job was suspended.
 */
const MAX_ATTEMPTS = 3;

/**
 * Images generated but not yet posted stay in memory (the adapters upload from there). A
 * platform whose uploads stall must not let them pile up: past this many bytes, the next
 * generation waits until an upload ends (a few dozen images of a few MB each).
 */
const HELD_IMAGE_BYTES_MAX = 128 * 1024 * 1024;

/**
 * The job queue: limits at the door, FIFO through QUEUE_CONCURRENCY GPU slots,
 * progress events on each job. The GPU slot is freed as soon as the image bytes are
 * in hand; delivery happens outside it.
 */
export class JobService {
  /**
   * For observers (metrics, logs): 'generated' ({ jobId, generationMs }),
   * 'ended' ({ jobId, outcome: 'delivered' | 'delivery-failed' | FailureReason }), 'changed' ().
   */
  readonly events = new EventEmitter();
  private readonly queue: PQueue;
  /** Jobs waiting for a GPU slot, oldest first: their index is their position. */
  private readonly waiting: Job[] = [];
  private readonly running = new Set<Job>();
  /** Generated, not yet delivered: shutdown gives their uploads a moment. */
  private readonly delivering = new Set<Job>();
  /** Image bytes in memory per generated job until it ends, against heldImageBytesMax. */
  private readonly heldImages = new Map<Job, number>();
  private heldImageBytes = 0;
  /** Generations waiting for held images to go (see heldImageBytesMax). */
  private readonly roomWaiters = new Set<() => void>();
  /** Image files being written to DATA_DIR (shutdown lets them finish before the store closes). */
  private readonly keeping = new Set<Promise<void>>();
  private readonly jobs = new Map<string, Job>();
  /**
   * Ended jobs, for a while, for late button clicks and lookups: what they asked for, not
   * the Job itself (whose final event holds the image bytes, hundreds of KB each).
   */
  private readonly endedJobs = new Map<string, { prompt: string; requester: Requester; state: string }>();
  private readonly recentGenerationsMs: number[] = [];
  private readonly generationTimes: number[] = [];
  private readonly recoveryHandlers = new Map<Platform, (job: Job) => void>();
  private closed = false;
  /** Set during shutdown: an aborted generation goes back to the queue, not to its user. */
  private suspending = false;
  private readonly log: Logger;

  constructor(private readonly deps: JobServiceDeps) {
    this.log = deps.logger.child({ component: 'jobs' });
    this.queue = new PQueue({ concurrency: deps.config.queueConcurrency });
    // A failed start fails everyone who was waiting through it, not one job per attempt.
    deps.lifecycle.on('start-failed', (error: StartupError) => {
      if (error.kind === 'shutdown') return;
      for (const job of [...this.waiting]) this.finishFailed(job, error.message, reasonOf(error));
    });
  }

  /**
   * Accepts a job or throws JobRefusal naming the limit. The job is recorded before this returns.
   * While another process holds the database's write lock it throws that busy StorageError
   * instead, for the caller to try again off the event loop (src/commands/imagine.ts).
   */
  submit(requester: Requester, prompt: string, reply: Record<string, unknown> = {}): Job {
    const { config, store } = this.deps;
    if (this.closed) throw new JobRefusal(messages.shuttingDown);
    // Images generated but not yet posted count too: with uploads stalled they would pile up.
    const pending = [...this.waiting, ...this.running, ...this.delivering].filter((j) => sameUser(j.requester, requester)).length;
    if (pending >= config.userMaxPending) throw new JobRefusal(messages.userLimit(config.userMaxPending));
    if (this.waiting.length >= config.queueMax) throw new JobRefusal(messages.queueFull(config.queueMax));

    const id = newJobId();
    try {
      store?.insert(id, requester, prompt, reply);
    } catch (error) {
      if (isBusy(error)) throw error;
      this.log.error({ err: error }, 'could not record a job');
      throw new JobRefusal(REFUSAL_FOR[error instanceof StorageError ? error.fault : 'unwritable']);
    }
    const job = this.track(new Job(id, requester, prompt, reply, (error) => this.log.error({ jobId: id, err: error }, 'a progress listener failed')));
    this.log.info({ jobId: id, platform: requester.platform, userId: requester.userId, position: this.waiting.length + 1 }, 'job queued');
    this.enqueue(job);
    return job;
  }

  /**
   * Adapters register here to take over the jobs of their platform found in DATA_DIR
   * after a restart (they follow them as if they had just been submitted).
   */
  onRecovered(platform: Platform, handler: (job: Job) => void): void {
    this.recoveryHandlers.set(platform, handler);
  }

  /**
   * Picks up where the last run stopped: queued and running jobs run again in their
   * original order; a generated image not yet delivered is handed to its adapter.
   */
  recover(): number {
    const { store } = this.deps;
    if (!store) return 0;
    this.record('the pruning of old jobs', undefined, (s) => s.prune());
    let recovered = 0;
    for (const record of store.unfinished()) {
      if (this.jobs.has(record.id)) continue;
      const handler = this.recoveryHandlers.get(record.requester.platform);
      if (!handler) {
        // A CLI process that died has nobody left to answer; other platforms wait for their adapter.
        if (record.requester.platform === 'cli') this.record('the end', record.id, (s) => s.markEnded(record.id, 'failed', 'the CLI process ended'));
        else this.log.warn({ jobId: record.id, platform: record.requester.platform }, 'job kept for a platform that is not running');
        continue;
      }
      const job = this.restore(record);
      recovered++;
      handler(job);
    }
    if (recovered > 0) this.log.info({ recovered }, 'jobs recovered from the last run');
    return recovered;
  }

  get(jobId: string): Job | undefined {
    return this.jobs.get(jobId);
  }

  /** What a job asked for, from memory or, after a restart, from DATA_DIR (for Re-roll buttons). */
  describeJob(jobId: string): { prompt: string; requester: Requester; state: string } | undefined {
    const job = this.jobs.get(jobId);
    if (job) return { prompt: job.prompt, requester: job.requester, state: job.state };
    const ended = this.endedJobs.get(jobId);
    if (ended) return ended;
    const record = this.deps.store?.get(jobId);
    return record && { prompt: record.prompt, requester: record.requester, state: record.state };
  }

  /** Updates what the adapter needs to answer later (e.g. a message id it has since created). */
  updateReply(jobId: string, reply: Record<string, unknown>): void {
    const job = this.jobs.get(jobId);
    if (job) Object.assign(job.reply, reply);
    // A job no longer in memory: merge into what DATA_DIR holds rather than replace it.
    const merged = job?.reply ?? { ...this.deps.store?.get(jobId)?.reply, ...reply };
    this.record('the reply state', jobId, (s) => s.updateReply(jobId, merged));
  }

  /** Whether DATA_DIR can be written right now (for /healthz); always ok without a store. */
  storageHealth(): { ok: boolean; reason?: string } {
    return this.deps.store?.health() ?? { ok: true };
  }

  counts(): { waiting: number; running: number } {
    return { waiting: this.waiting.length, running: this.running.size };
  }

  /** Median of recent generation times, for ETAs and /gpu status. */
  medianGenerationMs(): number | undefined {
    return this.recentGenerationsMs.length ? median(this.recentGenerationsMs) : undefined;
  }

  /** The adapter posted the image. */
  delivered(jobId: string): void {
    const job = this.jobs.get(jobId);
    this.record('the delivery', jobId, (s) => s.markEnded(jobId, 'delivered'));
    if (!job) return;
    job.finishDelivery('delivered');
    this.events.emit('ended', { jobId, outcome: 'delivered' });
    this.log.info({ jobId, ...this.timings(job), deliveryMs: Date.now() - (job.generatedAt ?? Date.now()) }, 'job delivered');
    this.forget(job);
  }

  /** The adapter could not post the image; it has told the user what it could. */
  deliveryFailed(jobId: string, reason: string): void {
    const job = this.jobs.get(jobId);
    this.record('the failed delivery', jobId, (s) => s.markEnded(jobId, 'failed', reason));
    if (!job) return;
    job.finishDelivery('failed');
    this.events.emit('ended', { jobId, outcome: 'delivery-failed' });
    this.log.warn({ jobId, reason, ...this.timings(job) }, 'job delivery failed');
    this.forget(job);
  }

  /** Ends a waiting or running job (its owner or an admin asked). */
  cancel(jobId: string): boolean {
    const job = this.jobs.get(jobId);
    if (!job || job.ended) return false;
    return this.finishFailed(job, messages.cancelled, 'cancelled');
  }

  /** Ends every waiting and running job with one message (e.g. /gpu kill). Returns how many. */
  endAll(message: string, reason: FailureReason): number {
    let ended = 0;
    for (const job of [...this.waiting, ...this.running]) if (this.finishFailed(job, message, reason)) ended++;
    return ended;
  }

  /**
   * SIGTERM: stop taking jobs; let the generation on the GPU (and uploads under way)
   * finish within graceMs. With a store, the rest stay recorded and run after the
   * restart; without one, their users are told.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.closed = true;
    this.queue.clear();
    for (const wake of [...this.roomWaiters]) wake();
    const store = this.deps.store;
    for (const job of [...this.waiting]) {
      if (store) this.waiting.splice(this.waiting.indexOf(job), 1);
      else this.finishFailed(job, messages.stoppedForShutdown, 'shutdown');
    }
    // A generation that ends within the grace is posted within it too: its user gets the image
    // and a status that says so, not a status that stays "Generating" after the restart.
    const inFlight = [...this.running, ...this.delivering].map((j) =>
      j.state === 'generated' ? j.handedOver : j.outcome.then((final) => (final.type === 'done' ? j.handedOver : undefined)),
    );
    if (inFlight.length > 0 && graceMs > 0) {
      await Promise.race([Promise.allSettled(inFlight), new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    await Promise.allSettled([...this.keeping]);
    this.suspending = true;
    for (const job of [...this.running]) {
      if (store) {
        this.running.delete(job);
        job.abort.abort();
        this.record('the job back in the queue', job.id, (s) => s.markSuspended(job.id));
      } else {
        this.finishFailed(job, messages.stoppedForShutdown, 'shutdown');
      }
    }
    this.deps.lifecycle.setActivity(0);
  }

  /**
   * A store write the job can go on without: when DATA_DIR cannot take it (a full disk, a
   * held lock) it is logged, naming the file, and /healthz reports it until writes succeed
   * again. Ends never get lost this way: markEnded keeps them in its ledger.
   */
  private record(what: string, jobId: string | undefined, write: (store: JobStore) => unknown): void {
    const { store } = this.deps;
    if (!store) return;
    try {
      write(store);
    } catch (error) {
      this.log.error({ jobId, err: error }, `could not record ${what}`);
    }
  }

  /** Releases the store (after shutdown). */
  close(): void {
    this.deps.store?.close();
  }

  private track(job: Job): Job {
    this.jobs.set(job.id, job);
    return job;
  }

  private enqueue(job: Job): void {
    this.waiting.push(job);
    this.announcePositions();
    this.activityChanged();
    // Start warming the GPU now, not when the job reaches a slot.
    if (this.deps.lifecycle.state !== 'ready') this.deps.lifecycle.ensureReady().catch(() => undefined);
    void this.queue.add(() => this.run(job));
  }

  private restore(record: JobRecord): Job {
    const store = this.deps.store!;
    const job = this.track(
      new Job(
        record.id,
        record.requester,
        record.prompt,
        record.reply,
        (error) => this.log.error({ jobId: record.id, err: error }, 'a progress listener failed'),
        record.createdAt,
      ),
    );
    if (record.state === 'generated') {
      const bytes = store.readImage(record);
      const kind = bytes && sniffImage(bytes);
      if (bytes && kind) {
        job.state = 'generated';
        job.generatedAt = Date.now();
        this.delivering.add(job);
        this.holdImage(job, bytes.length);
        job.emit({ type: 'done', image: { bytes, ...kind }, generationMs: 0 });
        return job;
      }
      // The image file is gone: generate it again rather than lose the job.
    }
    if (record.attempts >= MAX_ATTEMPTS) {
      this.record('the end', record.id, (s) => s.markEnded(record.id, 'failed', 'too many attempts'));
      job.fail(messages.inferenceFailed(`the job was tried ${record.attempts} times without finishing`), 'inference-failed');
      this.log.warn({ jobId: record.id, attempts: record.attempts }, 'job dropped after repeated attempts');
      return job;
    }
    if (record.state !== 'queued') this.record('the job back in the queue', record.id, (s) => s.markQueued(record.id));
    this.enqueue(job);
    return job;
  }

  private activityChanged(): void {
    this.deps.lifecycle.setActivity(this.busy());
    this.events.emit('changed');
  }

  private busy(): number {
    return this.waiting.length + this.running.size;
  }

  private async run(job: Job): Promise<void> {
    if (job.ended || this.closed) return;
    if (this.imageBudgetFull()) {
      await this.roomForImage();
      if (job.ended || this.closed) return;
    }
    this.waiting.splice(this.waiting.indexOf(job), 1);
    this.running.add(job);
    job.state = 'running';
    job.startedAt = Date.now();
    // Not recorded, the job still runs: only a crash loop on it would go uncounted.
    this.record('the start', job.id, (s) => s.markRunning(job.id));
    this.announcePositions();
    const { lifecycle, inference } = this.deps;
    let retried = false;
    try {
      for (;;) {
        let server: ReadyServer;
        const stopTicking = this.tickWarming(job);
        try {
          server = await lifecycle.ensureReady();
        } catch (error) {
          if (this.suspending) return;
          this.finishFailed(job, error instanceof StartupError ? error.message : messages.startupFailed(String(error)), reasonOf(error));
          return;
        } finally {
          stopTicking();
        }
        if (job.ended || this.suspending) return;
        const etaMs = this.medianGenerationMs();
        job.emit({ type: 'generating', etaS: etaMs === undefined ? undefined : etaMs / 1000 });
        const began = Date.now();
        let answer: { read(): Promise<GeneratedImage> };
        try {
          answer = await inference.send(server.endpoint, job.prompt, job.abort.signal);
        } catch (error) {
          if (job.ended || this.suspending) return;
          // Refused means the request never reached a server: run it once more on a fresh one.
          if ((await this.generationFailed(job, error, server)) === 'unreachable' && !retried) {
            retried = true;
            this.log.warn({ jobId: job.id }, 'GPU server unreachable; retrying the job once');
            continue;
          }
          this.finishFailed(job, messages.inferenceFailed(reasonText(error)), 'inference-failed');
          return;
        }
        // The server has answered: the generation is over. Returning frees the GPU slot now;
        // taking in the image, recording it and handing it over happen outside the slot.
        const generationMs = Date.now() - began;
        this.running.delete(job);
        this.delivering.add(job);
        void this.receive(job, answer, server, generationMs);
        return;
      }
    } finally {
      this.running.delete(job);
      this.activityChanged();
    }
  }

  /** Marks the server down when the failure says it is; returns the failure's kind. */
  private async generationFailed(job: Job, error: unknown, server: ReadyServer): Promise<InferenceError['kind']> {
    const { lifecycle, inference } = this.deps;
    const failure = error instanceof InferenceError ? error : new InferenceError('connection-lost', String(error));
    if (failure.kind === 'unreachable' || failure.kind === 'connection-lost') {
      lifecycle.markDown(server.epoch, failure.reason);
    } else if (failure.kind === 'timeout' && (await inference.probe(server.endpoint)) === 'down') {
      lifecycle.markDown(server.epoch, failure.reason);
    }
    this.log.warn({ jobId: job.id, kind: failure.kind, reason: failure.reason }, 'generation failed');
    return failure.kind;
  }

  private async receive(job: Job, answer: { read(): Promise<GeneratedImage> }, server: ReadyServer, generationMs: number): Promise<void> {
    let image: GeneratedImage;
    try {
      image = await answer.read();
    } catch (error) {
      this.delivering.delete(job);
      if (job.ended || this.suspending) return;
      await this.generationFailed(job, error, server);
      this.finishFailed(job, messages.inferenceFailed(reasonText(error)), 'inference-failed');
      return;
    }
    this.recordGeneration(generationMs);
    job.state = 'generated';
    job.generatedAt = Date.now();
    this.complete(job, image, generationMs);
  }

  private complete(job: Job, image: GeneratedImage, generationMs: number): void {
    if (job.ended) return; // cancelled in between
    this.log.info({ jobId: job.id, generationMs, bytes: image.bytes.length }, 'image generated');
    this.holdImage(job, image.bytes.length);
    // Delivery starts now; the image file is written alongside it, off the event loop.
    const keeping = this.keepImage(job, image);
    this.keeping.add(keeping);
    void keeping.finally(() => this.keeping.delete(keeping));
    job.emit({ type: 'done', image, generationMs });
  }

  /**
   * Keeps the image in DATA_DIR until it is delivered, so a restart delivers it instead of
   * generating it again. Written while the upload starts (an upload takes round trips to the
   * platform, the file a few ms); a job delivered or cancelled before the file is written keeps
   * its end in the row (markGenerated only moves a running job) and the file is dropped.
   */
  private async keepImage(job: Job, image: GeneratedImage): Promise<void> {
    const { store } = this.deps;
    if (!store) return;
    try {
      const file = await store.saveImage(job.id, image);
      if (store.markGenerated(job.id, file, image.mime)) {
        this.log.debug({ jobId: job.id, file }, 'image kept in DATA_DIR until delivered');
      } else {
        store.discardImage(file);
        this.log.debug({ jobId: job.id }, 'the job ended before its image was kept; file dropped');
      }
    } catch (error) {
      // The image is in memory and on its way; only a crash before delivery would cost a regeneration.
      this.log.error({ jobId: job.id, err: error }, 'could not keep the image in DATA_DIR');
    }
  }

  private holdImage(job: Job, bytes: number): void {
    this.heldImages.set(job, bytes);
    this.heldImageBytes += bytes;
  }

  private releaseImage(job: Job): void {
    const bytes = this.heldImages.get(job);
    if (bytes === undefined) return;
    this.heldImages.delete(job);
    this.heldImageBytes -= bytes;
    for (const wake of [...this.roomWaiters]) wake();
  }

  private imageBudgetFull(): boolean {
    return this.heldImageBytes >= (this.deps.heldImageBytesMax ?? HELD_IMAGE_BYTES_MAX);
  }

  /** Resolves once the images waiting for upload leave room for one more (or at shutdown). */
  private async roomForImage(): Promise<void> {
    this.log.warn({ heldImageBytes: this.heldImageBytes, images: this.heldImages.size }, 'generation held: images waiting for upload fill the memory budget');
    while (this.imageBudgetFull() && !this.closed) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.roomWaiters.delete(wake);
          resolve();
        };
        this.roomWaiters.add(wake);
      });
    }
  }

  /** While a job waits on a cold start, tell it how long it has been, once a second. */
  private tickWarming(job: Job): () => void {
    const { lifecycle } = this.deps;
    const tick = () => {
      const retryInMs = lifecycle.retryInMs();
      if (retryInMs !== undefined && !job.ended) {
        job.emit({ type: 'retrying', inS: retryInMs / 1000 });
        return;
      }
      const warmingMs = lifecycle.warmingForMs();
      if (warmingMs === undefined || lifecycle.state === 'ready' || job.ended) return;
      const left = lifecycle.expectedColdStartLeftMs();
      job.emit({ type: 'warming', elapsedS: warmingMs / 1000, etaS: left === undefined ? undefined : left / 1000 });
    };
    tick();
    const timer = setInterval(tick, this.deps.warmingTickMs ?? 1_000);
    return () => clearInterval(timer);
  }

  private finishFailed(job: Job, message: string, reason: FailureReason): boolean {
    const wasWaiting = this.waiting.indexOf(job);
    if (!job.fail(message, reason)) return false;
    if (wasWaiting >= 0) this.waiting.splice(wasWaiting, 1);
    this.running.delete(job);
    this.record('the end', job.id, (s) => s.markEnded(job.id, reason === 'cancelled' ? 'cancelled' : 'failed', message));
    this.log.info({ jobId: job.id, reason, ...this.timings(job) }, 'job failed');
    this.events.emit('ended', { jobId: job.id, outcome: reason });
    this.activityChanged();
    this.announcePositions();
    this.forget(job);
    return true;
  }

  private announcePositions(): void {
    const gen = this.medianGenerationMs();
    const coldLeftMs = this.deps.lifecycle.expectedColdStartLeftMs() ?? 0;
    const slots = this.deps.config.queueConcurrency;
    this.waiting.forEach((job, index) => {
      const position = index + 1;
      const last = job.lastEvent;
      if (last.type === 'queued' && last.position === position) return;
      const etaS = gen === undefined ? undefined : (coldLeftMs + (Math.floor((index + this.running.size) / slots) + 1) * gen) / 1000;
      job.emit({ type: 'queued', position, etaS });
    });
  }

  /** Generations that ended in the last hour, for /gpu status. */
  generationsLastHour(now = Date.now()): number {
    while (this.generationTimes.length && this.generationTimes[0]! < now - 3_600_000) this.generationTimes.shift();
    return this.generationTimes.length;
  }

  private recordGeneration(ms: number): void {
    this.generationTimes.push(Date.now());
    this.generationsLastHour();
    this.events.emit('generated', { generationMs: ms });
    this.recentGenerationsMs.push(ms);
    if (this.recentGenerationsMs.length > 20) this.recentGenerationsMs.shift();
    this.deps.lifecycle.noteGeneration(ms);
  }

  private timings(job: Job) {
    return {
      queuedMs: (job.startedAt ?? Date.now()) - job.createdAt,
      runMs: job.startedAt === undefined ? undefined : (job.generatedAt ?? Date.now()) - job.startedAt,
    };
  }

  /**
   * An ended job leaves memory at once (with its image); what it asked for is kept a
   * little, for late button clicks and lookups.
   */
  private forget(job: Job): void {
    this.delivering.delete(job);
    this.releaseImage(job);
    const id = job.id; // the timer's closure must not hold the job (and its image) for 10 minutes
    this.jobs.delete(id);
    this.endedJobs.set(id, { prompt: job.prompt, requester: job.requester, state: job.state });
    setTimeout(() => this.endedJobs.delete(id), 10 * 60_000).unref();
  }
}

/** What a user reads when their job could not be recorded (no paths: the log names the file). */
const REFUSAL_FOR: Record<StorageFault, string> = {
  full: messages.storageFull,
  busy: messages.storageBusy,
  unwritable: messages.storageFailed,
};

function sameUser(a: Requester, b: Requester): boolean {
  return a.platform === b.platform && a.userId === b.userId;
}

function reasonText(error: unknown): string {
  return error instanceof InferenceError ? error.reason : `the GPU server could not be reached (${String(error)})`;
}

function reasonOf(error: unknown): FailureReason {
  if (error instanceof StartupError) {
    if (error.kind === 'killed') return 'killed';
    if (error.kind === 'shutdown') return 'shutdown';
    if (error.kind === 'timeout') return 'startup-timeout';
  }
  return 'startup-failed';
}
