import { randomBytes } from 'node:crypto';
import type { FailureReason, JobEvent, JobState, Requester } from './types.js';

export type FinalEvent = Extract<JobEvent, { type: 'done' | 'failed' }>;

/** A job id: sortable by creation time, short enough for a file name or a button. */
export function newJobId(): string {
  return `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** One /imagine: its progress events and its single final outcome. */
export class Job {
  state: JobState = 'queued';
  startedAt: number | undefined;
  generatedAt: number | undefined;
  /** Aborts the generation when the job is cancelled or the server killed. */
  readonly abort = new AbortController();
  readonly outcome: Promise<FinalEvent>;
  private last: JobEvent;
  private readonly listeners = new Set<(event: JobEvent) => void>();
  private settle!: (event: FinalEvent) => void;
  /** Resolves when the adapter has reported the delivery (or its failure). */
  readonly handedOver: Promise<void>;
  private markHandedOver!: () => void;

  constructor(
    readonly id: string,
    readonly requester: Requester,
    readonly prompt: string,
    /** Opaque data the adapter needs to answer later (interaction token, response_url, ...). */
    readonly reply: Record<string, unknown> = {},
    private readonly onListenerError: (error: unknown) => void = () => undefined,
    readonly createdAt = Date.now(),
  ) {
    this.last = { type: 'queued', position: 0 };
    this.outcome = new Promise((resolve) => (this.settle = resolve));
    this.handedOver = new Promise((resolve) => (this.markHandedOver = resolve));
  }

  /** @internal */
  finishDelivery(state: 'delivered' | 'failed'): void {
    this.state = state;
    this.markHandedOver();
  }

  get ended(): boolean {
    return this.last.type === 'done' || this.last.type === 'failed';
  }

  get lastEvent(): JobEvent {
    return this.last;
  }

  /** The listener gets the latest event at once, then every new one. Returns an unsubscribe. */
  subscribe(listener: (event: JobEvent) => void): () => void {
    this.listeners.add(listener);
    this.deliver(listener, this.last);
    return () => this.listeners.delete(listener);
  }

  /** @internal Only JobService moves a job along. After the final event nothing more is sent. */
  emit(event: JobEvent): boolean {
    if (this.ended) return false;
    this.last = event;
    for (const listener of [...this.listeners]) this.deliver(listener, event);
    if (event.type === 'done' || event.type === 'failed') this.settle(event);
    return true;
  }

  /** @internal */
  fail(message: string, reason: FailureReason): boolean {
    if (this.ended) return false;
    this.state = reason === 'cancelled' ? 'cancelled' : 'failed';
    this.abort.abort();
    return this.emit({ type: 'failed', message, reason });
  }

  private deliver(listener: (event: JobEvent) => void, event: JobEvent) {
    // A broken renderer must not break the job or the other listeners.
    try {
      listener(event);
    } catch (error) {
      this.onListenerError(error);
    }
  }
}
