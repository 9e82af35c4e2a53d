// Measurements 1 (CLI and core paths), 2 (GPU idle gap) and 3 (ready → first /infer),
// all in this process against the stand-ins on loopback.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { runCli } from '../../src/cli/main.js';
import { imagine } from '../../src/commands/imagine.js';
import type { Job } from '../../src/jobs/job.js';
import type { Requester } from '../../src/jobs/types.js';
import type { Services } from '../../src/services.js';
import { tempDir } from '../../test/helpers/app.js';
import type { DiffusionStandin, InferRecord } from '../../test/standins/diffusion.js';
import { benchEnv, MB, nullStream, startCoreRig, startStandins, within } from '../lib/rig.js';
import { median, percentile } from '../lib/stats.js';

export interface OverheadRun {
  /** Per job: end-to-end minus the stand-in's own /infer time. */
  overheadsMs: number[];
  p50: number;
  p99: number;
  /** Median end-to-end and median stand-in generation, for context. */
  totalMedianMs: number;
  generationMedianMs: number;
}

export function overheadRun(totals: number[], gens: number[]): OverheadRun {
  const overheadsMs = totals.map((t, i) => t - gens[i]!);
  return {
    overheadsMs,
    p50: percentile(overheadsMs, 50),
    p99: percentile(overheadsMs, 99),
    totalMedianMs: median(totals),
    generationMedianMs: median(gens),
  };
}

/** The stand-in's own time for one /infer: body parsed → answer written. */
export function generationOf(d: DiffusionStandin, prompt: string): number {
  const rec = d.infers.find((r) => r.prompt === prompt);
  if (!rec || rec.endedAt === undefined) throw new Error(`bench: no finished /infer for "${prompt}"`);
  return rec.endedAt - rec.startedAt;
}

export const requester = (i: number | string, platform: Requester['platform'] = 'discord'): Requester => ({
  platform,
  userId: `bench-user-${i}`,
  userName: `bench user ${i}`,
  channelId: 'C-bench',
});

export function submit(services: Services, prompt: string, who: Requester, reply: Record<string, unknown> = {}): Job {
  const result = imagine({ requester: who, prompt, reply }, services);
  if (!result.ok) throw new Error(`bench: /imagine refused: ${result.message}`);
  return result.job;
}

/** A stdout that notes when the CLI prints the file it wrote (the image is on disk by then). */
class StampedStream extends Writable {
  at: number | undefined;
  override _write(_chunk: Buffer, _enc: string, done: () => void) {
    this.at ??= performance.now();
    done();
  }
}

/**
 * (1) CLI: `fairbot imagine "<prompt>" --out FILE` through runCli in this process (no Node
 * start-up counted), GPU warm, 1 MB image: runCli called → the CLI reports the file written.
 */
export async function cliOverhead(opts: { jobs: number; runTag: string; generationMs: number; imageBytes?: number }): Promise<OverheadRun> {
  const { fair, hostPort } = await startStandins({ imageBytes: opts.imageBytes ?? MB, generationMs: opts.generationMs });
  const dir = tempDir('fairbot-bench-cli-');
  const env = benchEnv(fair, hostPort, dir.path);
  const out = join(dir.path, 'out.png');
  const stderr = nullStream();
  const once = async (prompt: string) => {
    const stdout = new StampedStream();
    const t0 = performance.now();
    const code = await runCli(['imagine', prompt, '--out', out], { env, stdout, stderr });
    if (code !== 0 || stdout.at === undefined) throw new Error(`bench: fairbot imagine exited ${code}`);
    return stdout.at - t0;
  };
  try {
    // The first run starts the GPU server on Fair (a cold start); the rest find it through DATA_DIR.
    await within(once(`${opts.runTag} warm-up`), 30_000, 'CLI warm-up');
    const d = fair.diffusion()!;
    const totals: number[] = [];
    const gens: number[] = [];
    for (let i = 0; i < opts.jobs; i++) {
      const prompt = `${opts.runTag} cli ${i}`;
      totals.push(await within(once(prompt), 30_000, 'a CLI job'));
      gens.push(generationOf(d, prompt));
    }
    return overheadRun(totals, gens);
  } finally {
    rmSync(out, { force: true });
    await fair.close();
    dir.remove();
  }
}

/**
 * (1) core: what every adapter builds on. `/imagine` handler called → the job's `done`
 * event hands the image to the caller; the bot's durable mode (SQLite + image file), GPU warm.
 */
export async function coreOverhead(opts: { jobs: number; runTag: string; generationMs: number; imageBytes?: number }): Promise<OverheadRun> {
  const rig = await startCoreRig({ imageBytes: opts.imageBytes ?? MB, generationMs: opts.generationMs, durable: true });
  try {
    await within(rig.services.lifecycle.ensureReady(), 30_000, 'cold start');
    const d = rig.fair.diffusion()!;
    const totals: number[] = [];
    const gens: number[] = [];
    for (let i = -3; i < opts.jobs; i++) {
      const prompt = `${opts.runTag} core ${i}`;
      const t0 = performance.now();
      const job = submit(rig.services, prompt, requester(i));
      const final = await within(job.outcome, 30_000, 'a core job');
      const t1 = performance.now();
      if (final.type !== 'done') throw new Error(`bench: job failed: ${final.message}`);
      rig.services.jobs.delivered(job.id);
      if (i < 0) continue; // JIT warm-up
      totals.push(t1 - t0);
      gens.push(generationOf(d, prompt));
    }
    return overheadRun(totals, gens);
  } finally {
    await rig.close();
  }
}

export interface GapRun {
  gapsMs: number[];
  median: number;
  p99: number;
  max: number;
}

/**
 * (2) 50 jobs queued at once, QUEUE_CONCURRENCY=1, 1 MB images; each image "uploads" for
 * `uploadMs` before it is marked delivered. Gap = next /infer start − previous /infer end,
 * from the stand-in's records.
 */
export async function idleGap(opts: { jobs: number; runTag: string; generationMs: number; uploadMs: number }): Promise<GapRun> {
  const rig = await startCoreRig({
    imageBytes: MB,
    generationMs: opts.generationMs,
    durable: true,
    env: { QUEUE_CONCURRENCY: '1', QUEUE_MAX: String(opts.jobs + 10) },
  });
  try {
    await within(rig.services.lifecycle.ensureReady(), 30_000, 'cold start');
    const d = rig.fair.diffusion()!;
    const jobs: Job[] = [];
    for (let i = 0; i < opts.jobs; i++) {
      const job = submit(rig.services, `${opts.runTag} gap ${i}`, requester(i));
      job.subscribe((e) => {
        if (e.type === 'done') setTimeout(() => rig.services.jobs.delivered(job.id), opts.uploadMs);
      });
      jobs.push(job);
    }
    await within(Promise.all(jobs.map((j) => j.handedOver)), 60_000, 'the queued jobs');
    const recs = d.infers.filter((r) => r.prompt.startsWith(`${opts.runTag} gap `)).sort((a, b) => a.startedAt - b.startedAt);
    const gapsMs = gaps(recs);
    return { gapsMs, median: median(gapsMs), p99: percentile(gapsMs, 99), max: Math.max(...gapsMs) };
  } finally {
    await rig.close();
  }
}

function gaps(recs: InferRecord[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < recs.length; i++) out.push(recs[i]!.startedAt - recs[i - 1]!.endedAt!);
  return out;
}

/**
 * (3) One cold start per trial with production timings: Start → the diffusion stand-in listens
 * after `coldStartMs`, answers /healthcheck 503 for `loadDelayMs`, then 200 ('loaded').
 * Value = first /infer start − 'loaded'.
 */
export async function readyToFirst(opts: { coldStartMs: number; loadDelayMs: number; runTag: string }): Promise<number> {
  const rig = await startCoreRig({ coldStartMs: opts.coldStartMs, loadDelayMs: opts.loadDelayMs, generationMs: 0, durable: true });
  try {
    let loadedAt: number | undefined;
    rig.fair.events.once('diffusion-listening', (d: DiffusionStandin) => {
      d.events.once('loaded', () => (loadedAt = performance.now()));
    });
    const job = submit(rig.services, `${opts.runTag} first`, requester(0));
    const final = await within(job.outcome, 30_000, 'the first job after a cold start');
    if (final.type !== 'done') throw new Error(`bench: job failed: ${final.message}`);
    rig.services.jobs.delivered(job.id);
    const first = rig.fair.diffusion()!.infers[0]!;
    if (loadedAt === undefined) throw new Error('bench: never saw the stand-in load');
    return first.startedAt - loadedAt;
  } finally {
    await rig.close();
  }
}
