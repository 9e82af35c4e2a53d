import type { Requester } from '../jobs/types.js';
import { messages } from '../messages.js';
import type { Services } from '../services.js';
import { isAdmin } from './admin.js';

/** The Cancel button: only the job's owner or an admin; only while the job waits or runs. */
export function cancel(
  input: { requester: Requester; jobId: string },
  services: Pick<Services, 'jobs' | 'config' | 'logger'>,
): { ok: boolean; message: string } {
  const job = services.jobs.describeJob(input.jobId);
  if (!job) return { ok: false, message: messages.cancelTooLate };
  const owner = job.requester.platform === input.requester.platform && job.requester.userId === input.requester.userId;
  if (!owner && !isAdmin(input.requester, services.config)) return { ok: false, message: messages.cancelNotOwner };
  if (!services.jobs.cancel(input.jobId)) return { ok: false, message: messages.cancelTooLate };
  services.logger.info({ jobId: input.jobId, userId: input.requester.userId, byOwner: owner }, 'job cancelled');
  return { ok: true, message: messages.cancelDone };
}
