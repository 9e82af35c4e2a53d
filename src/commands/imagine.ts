import type { Job } from '../jobs/job.js';
import { JobRefusal } from '../jobs/service.js';
import type { Requester } from '../jobs/types.js';
import { messages } from '../messages.js';
import type { Services } from '../services.js';
import { cleanPrompt, MAX_PROMPT_LENGTH } from './prompt.js';

export interface ImagineInput {
  requester: Requester;
  prompt: string;
  /** Adapter data to answer later (interaction token, response_url, ...). */
  reply?: Record<string, unknown>;
}

export type ImagineResult = { ok: true; job: Job } | { ok: false; message: string };

/** /imagine: validates the prompt and queues a job, or says why not. */
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
