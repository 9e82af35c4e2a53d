/**
 * Small helpers for the core tests: submit through the real /imagine command and
 * read a job's progress the way a user would see it.
 */
import { imagine } from '../../src/commands/imagine.js';
import type { FinalEvent, Job } from '../../src/jobs/job.js';
import { JobStore } from '../../src/jobs/store.js';
import type { JobEvent, Requester } from '../../src/jobs/types.js';
import type { Services } from '../../src/services.js';

export function user(id: string, platform: Requester['platform'] = 'discord'): Requester {
  return { platform, userId: id, userName: `user ${id}`, channelId: 'C1' };
}

/** /imagine that must be accepted; fails the test with the refusal otherwise. */
export function submit(services: Pick<Services, 'jobs' | 'logger'>, prompt: string, requester: Requester = user('u1')): Job {
  const result = imagine({ requester, prompt }, services);
  if (!result.ok) throw new Error(`/imagine "${prompt}" was refused: ${result.message}`);
  return result.job;
}

/** Every event the job sends from now on (the latest one first, as subscribe delivers it). */
export function record(job: Job): JobEvent[] {
  const events: JobEvent[] = [];
  job.subscribe((e) => events.push(e));
  return events;
}

/** Compact form of a progress sequence: "queued 3", "warming", "generating", "done", "failed". */
export function steps(events: JobEvent[]): string[] {
  const out: string[] = [];
  for (const e of events) {
    const s = e.type === 'queued' ? `queued ${e.position}` : e.type;
    if (out.at(-1) !== s) out.push(s);
  }
  return out;
}

/** The final outcome, or a clear test failure after the deadline. */
export async function outcome(job: Job, timeoutMs = 10_000): Promise<FinalEvent> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`job "${job.prompt}" had no outcome after ${timeoutMs} ms (last event: ${JSON.stringify(job.lastEvent)})`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([job.outcome, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

export async function imageOf(job: Job, timeoutMs?: number): Promise<Buffer> {
  const final = await outcome(job, timeoutMs);
  if (final.type !== 'done') throw new Error(`job "${job.prompt}" failed: ${final.message}`);
  return final.image.bytes;
}

export async function failureOf(job: Job, timeoutMs?: number): Promise<string> {
  const final = await outcome(job, timeoutMs);
  if (final.type !== 'failed') throw new Error(`job "${job.prompt}" succeeded, a failure was expected`);
  return final.message;
}

/** Opens DATA_DIR's job store for `use` (beside a running bot: SQLite WAL allows it), closing it again. */
export function withStore<T>(dataDir: string, use: (store: JobStore) => T): T {
  const store = new JobStore(dataDir);
  try {
    return use(store);
  } finally {
    store.close();
  }
}
