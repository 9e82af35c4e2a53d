/** Where a job came from and how to answer it. Platform adapters fill this in. */
export type Platform = 'discord' | 'slack' | 'cli';

export interface Requester {
  platform: Platform;
  /** Platform user id (Discord snowflake, Slack U…, or the OS user for the CLI). */
  userId: string;
  /** Display name for "asked by", optional. */
  userName?: string;
  /** Channel the command came from: the image is posted there. */
  channelId?: string;
}

export interface GeneratedImage {
  /** Exactly the bytes the diffusion server returned (never re-encoded). */
  bytes: Buffer;
  mime: 'image/png' | 'image/jpeg' | 'image/webp';
  extension: 'png' | 'jpg' | 'webp';
}

/**
 * Progress of one job, in the order a user would see it. Exactly one of
 * `done` / `failed` ends every job.
 */
export type JobEvent =
  | { type: 'queued'; position: number; etaS?: number }
  | { type: 'warming'; elapsedS: number; etaS?: number }
  /** The last start failed; the next attempt waits out its backoff. */
  | { type: 'retrying'; inS: number }
  | { type: 'generating'; etaS?: number }
  | { type: 'done'; image: GeneratedImage; generationMs: number }
  | { type: 'failed'; message: string; reason: FailureReason };

export type FailureReason = 'startup-failed' | 'startup-timeout' | 'inference-failed' | 'killed' | 'cancelled' | 'shutdown';

export type JobState = 'queued' | 'running' | 'generated' | 'delivered' | 'failed' | 'cancelled';
