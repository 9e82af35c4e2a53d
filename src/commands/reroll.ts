import type { Requester } from '../jobs/types.js';
import { messages } from '../messages.js';
import type { Services } from '../services.js';
import { imagineOrWait, type ImagineResult } from './imagine.js';

/** The Re-roll button: the same prompt as a new job for whoever clicked, under the same limits. */
export function reroll(
  input: { requester: Requester; jobId: string; reply?: Record<string, unknown> },
  services: Pick<Services, 'jobs' | 'logger'>,
): ImagineResult | Promise<ImagineResult> {
  const original = services.jobs.describeJob(input.jobId);
  if (!original) return { ok: false, message: messages.rerollUnknown };
  return imagineOrWait({ requester: input.requester, prompt: original.prompt, reply: input.reply }, services);
}
