import type { Job } from '../jobs/job.js';
import { JobRefusal } from '../jobs/service.js';
import type { Requester } from '../jobs/types.js';
import { messages } from '../messages.js';
import type { Services } from '../services.js';
import { isBusy, retryBusy } from '../storage/sqlite.js';
import { cleanPrompt, MAX_PROMPT_LENGTH } from './prompt.js';

export interface ImagineInput {
  requester: Requester;
  prompt: string;
  /** Adapter data to answer later (interaction token, response_url, ...). */
  reply?: Record<string, unknown>;
}

export type ImagineResult = { ok: true; job: Job } | { ok: false; message: string };

/**
 * /imagine: validates the prompt and queues a job, or says why not. Throws the busy StorageError
 * while another process holds the database's write lock (see imagineOrWait).
 */
export function imagine(input: ImagineInput, services: Pick<Services, 'jobs' | 'logger'>): ImagineResult {
  const check = cleanPrompt(input.prompt);
  if (!check.ok) {
    return {
      ok: false,
      message: check.problem === 'empty' ? messages.promptEmpty : messages.promptTooLong(check.length, MAX_PROMPT_LENGTH),
    };
  }
  try {
    return { ok: true, job: services.jobs.submit(input.requester, check.prompt, input.reply) };
  } catch (error) {
    if (error instanceof JobRefusal) {
      services.logger.info({ userId: input.requester.userId, platform: input.requester.platform, reason: error.message }, 'job refused');
      return { ok: false, message: error.message };
    }
    throw error;
  }
}

/**
 * How long a job waits to be recorded while another process holds the database's write lock,
 * before it is refused in words: short enough that Slack's ack (the refusal) still makes 3 s.
 */
const STORAGE_BUSY_WAIT_MS = 1_500;

/**
 * /imagine for the chat adapters: the answer is immediate, except while another process holds
 * the database's write lock; then it is a promise (the job is recorded off the event loop, or
 * refused after STORAGE_BUSY_WAIT_MS), and the adapter acknowledges the platform first.
 */
export function imagineOrWait(input: ImagineInput, services: Pick<Services, 'jobs' | 'logger'>): ImagineResult | Promise<ImagineResult> {
  try {
    return imagine(input, services);
  } catch (error) {
    if (!isBusy(error)) throw error;
    services.logger.warn({ err: error }, 'the database is locked by another process; waiting to record the job');
    return retryBusy(() => imagine(input, services), AbortSignal.timeout(STORAGE_BUSY_WAIT_MS)).catch((last: unknown) => {
      if (!isBusy(last)) throw last;
      services.logger.error({ err: last, waitedMs: STORAGE_BUSY_WAIT_MS }, 'the database stayed locked; job refused');
      return { ok: false, message: messages.storageBusy };
    });
  }
}
