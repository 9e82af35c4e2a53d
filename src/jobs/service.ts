import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { median, StartupError, type GpuLifecycle } from '../fair/lifecycle.js';
import { InferenceError, type InferenceClient } from '../inference/client.js';
import { messages } from '../messages.js';
import { Job, newJobId } from './job.js';
import type { FailureReason, Requester } from './types.js';

/** A job refused at the door (a limit, a bad prompt, shutting down); `message` is for the user. */
export class JobRefusal extends Error {
  override name = 'JobRefusal';
}

export interface JobServiceDeps {
  config: Config;
  logger: Logger;
  lifecycle: GpuLifecycle;
  inference: InferenceClient;
  /** How often a job waiting on a cold start hears how long it has been. */
  warmingTickMs?: number;
}

/**
 * The job queue: limits at the door, FIFO through QUEUE_CONCURRENCY GPU slots,
 * progress events on each job. The GPU slot is freed as soon as the image bytes are
 * in hand; delivery happens outside it.
 */
export class JobService {
  private readonly queue: PQueue;
  /** Jobs waiting for a GPU slot, oldest first: their index is their position. */
  private readonly waiting: Job[] = [];
  private readonly running = new Set<Job>();
  private readonly jobs = new Map<string, Job>();
  private readonly recentGenerationsMs: number[] = [];
  private closed = false;
  private readonly log: Logger;

  constructor(private readonly deps: JobServiceDeps) {
    this.log = deps.logger.child({ component: 'jobs' });
    this.queue = new PQueue({ concurrency: deps.config.queueConcurrency });
    // A failed start fails everyone who was waiting through it, not one job per attempt.
    deps.lifecycle.on('start-failed', (error: StartupError) => {
      for (const job of [...this.waiting]) this.finishFailed(job, error.message, reasonOf(error));
    });
  }

  /** Accepts a job or throws JobRefusal naming the limit. */
  submit(requester: Requester, prompt: string, reply?: Record<string, unknown>): Job {
    const { config } = this.deps;
    if (this.closed) throw new JobRefusal(messages.shuttingDown);
    const pending = [...this.waiting, ...this.running].filter((j) => sameUser(j.requester, requester)).length;
    if (pending >= config.userMaxPending) throw new JobRefusal(messages.userLimit(config.userMaxPending));
    if (this.waiting.length >= config.queueMax) throw new JobRefusal(messages.queueFull(config.queueMax));

    const job = new Job(newJobId(), requester, prompt, reply, (error) =>
      this.log.error({ jobId: job.id, err: error }, 'a progress listener failed'),
    );
    this.jobs.set(job.id, job);
    this.waiting.push(job);
    this.log.info({ jobId: job.id, platform: requester.platform, userId: requester.userId, position: this.waiting.length }, 'job queued');
    this.announcePositions();
    this.deps.lifecycle.setActivity(this.busy());
    // Start warming the GPU now, not when the job reaches a slot.
    if (this.deps.lifecycle.state !== 'ready') this.deps.lifecycle.ensureReady().catch(() => undefined);
    void this.queue.add(() => this.run(job));
    return job;
  }

  get(jobId: string): Job | undefined {
    return this.jobs.get(jobId);
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
    if (!job) return;
    job.state = 'delivered';
    this.log.info({ jobId, ...this.timings(job), deliveryMs: Date.now() - (job.generatedAt ?? Date.now()) }, 'job delivered');
    this.forget(job);
  }

  /** The adapter could not post the image; it has told the user what it could. */
  deliveryFailed(jobId: string, reason: string): void {
    const job = this.jobs.get(jobId);
    if (!job) return;
    job.state = 'failed';
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

  /** Stops taking jobs; lets running generations finish within graceMs; ends the rest. */
  async shutdown(graceMs: number): Promise<void> {
    this.closed = true;
    this.queue.clear();
    for (const job of [...this.waiting]) this.finishFailed(job, messages.stoppedForShutdown, 'shutdown');
    const running = [...this.running].map((j) => j.outcome);
    if (running.length > 0) {
      await Promise.race([Promise.allSettled(running), new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    for (const job of [...this.running]) this.finishFailed(job, messages.stoppedForShutdown, 'shutdown');
  }

  private busy(): number {
    return this.waiting.length + this.running.size;
  }

  private async run(job: Job): Promise<void> {
    if (job.ended) return;
    this.waiting.splice(this.waiting.indexOf(job), 1);
    this.running.add(job);
    job.state = 'running';
    job.startedAt = Date.now();
    this.announcePositions();
    const { lifecycle, inference } = this.deps;
    let retried = false;
    try {
      for (;;) {
        let server;
        const stopTicking = this.tickWarming(job);
        try {
          server = await lifecycle.ensureReady();
        } catch (error) {
          this.finishFailed(job, error instanceof StartupError ? error.message : messages.startupFailed(String(error)), reasonOf(error));
          return;
        } finally {
          stopTicking();
        }
        if (job.ended) return;
        const etaMs = this.medianGenerationMs();
        job.emit({ type: 'generating', etaS: etaMs === undefined ? undefined : etaMs / 1000 });
        const began = Date.now();
        try {
          const image = await inference.infer(server.endpoint, job.prompt, job.abort.signal);
          const generationMs = Date.now() - began;
          this.recordGeneration(generationMs);
          this.running.delete(job);
          job.state = 'generated';
          job.generatedAt = Date.now();
          this.deps.lifecycle.setActivity(this.busy());
          this.log.info({ jobId: job.id, generationMs, bytes: image.bytes.length }, 'image generated');
          job.emit({ type: 'done', image, generationMs });
          return;
        } catch (error) {
          if (job.ended) return;
          const failure = error instanceof InferenceError ? error : new InferenceError('connection-lost', String(error));
          if (failure.kind === 'unreachable' || failure.kind === 'connection-lost') {
            lifecycle.markDown(server.epoch, failure.reason);
          } else if (failure.kind === 'timeout' && (await inference.probe(server.endpoint)) === 'down') {
            lifecycle.markDown(server.epoch, failure.reason);
          }
          // Refused means the request never reached a server: run it once more on a fresh one.
          if (failure.kind === 'unreachable' && !retried) {
            retried = true;
            this.log.warn({ jobId: job.id }, 'GPU server unreachable; retrying the job once');
            continue;
          }
          this.log.warn({ jobId: job.id, kind: failure.kind, reason: failure.reason }, 'generation failed');
          this.finishFailed(job, messages.inferenceFailed(failure.reason), 'inference-failed');
          return;
        }
      }
    } finally {
      this.running.delete(job);
      this.deps.lifecycle.setActivity(this.busy());
    }
  }

  /** While a job waits on a cold start, tell it how long it has been, once a second. */
  private tickWarming(job: Job): () => void {
    const { lifecycle } = this.deps;
    const tick = () => {
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
    this.log.info({ jobId: job.id, reason, ...this.timings(job) }, 'job failed');
    this.deps.lifecycle.setActivity(this.busy());
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

  private recordGeneration(ms: number): void {
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

  /** Delivered or failed jobs are kept a little, for late button clicks and lookups. */
  private forget(job: Job): void {
    setTimeout(() => this.jobs.delete(job.id), 10 * 60_000).unref();
  }
}

function sameUser(a: Requester, b: Requester): boolean {
  return a.platform === b.platform && a.userId === b.userId;
}

function reasonOf(error: unknown): FailureReason {
  if (error instanceof StartupError) {
    if (error.kind === 'killed') return 'killed';
    if (error.kind === 'shutdown') return 'shutdown';
    if (error.kind === 'timeout') return 'startup-timeout';
  }
  return 'startup-failed';
}
