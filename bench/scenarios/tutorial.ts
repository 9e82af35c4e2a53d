// Measurement 6: fairbot side by side with the tutorial's per-request flow, same stand-ins.
import type { Job } from '../../src/jobs/job.js';
import type { ServiceOptions } from '../../src/app.js';
import { FAIR_EMAIL, FAIR_PASSWORD } from '../../test/helpers/app.js';
import { MB, startCoreRig, startStandins, within } from '../lib/rig.js';
import { tutorialRequest, type TutorialOptions } from '../tutorial-flow.js';
import { generationOf, overheadRun, requester, submit, type OverheadRun } from './core.js';

/** fairbot's production timings (src/fair/lifecycle.ts DEFAULT_TIMING), multiplied by `scale`. */
export function scaledTiming(scale: number): NonNullable<ServiceOptions['timing']> {
  const s = (ms: number) => Math.max(1, Math.round(ms * scale));
  return {
    probeIntervalMs: s(150),
    programPollMs: s(200),
    backoffMs: [5_000, 10_000, 20_000, 40_000, 60_000].map(s),
    fairRetryMs: [500, 1_000, 2_000, 4_000, 8_000].map(s),
    warmingTickMs: s(1_000),
  };
}

export interface BurstResult {
  served: number;
  requests: number;
  startPrograms: number;
  /** Scaled back to real seconds: when the last request was answered (served or failed). */
  lastAnswerS: number;
}

/** Splits a cold start into the container coming up (75 %) and the model loading (25 %). */
function coldStart(coldStartS: number, scale: number) {
  const total = coldStartS * 1000 * scale;
  return { coldStartMs: Math.round(total * 0.75), loadDelayMs: Math.round(total * 0.25) };
}

/** The tutorial flow's settings against the stand-ins (its waits scaled by `scale`). */
function tutorialOptions(fairUrl: string, hostPort: number, scale: number): TutorialOptions {
  return { fairUrl, email: FAIR_EMAIL, password: FAIR_PASSWORD, node: 'node-1', endpoint: `http://127.0.0.1:${hostPort}`, hostPort, scale };
}

/** The tutorial: `requests` requests at once while the GPU is cold. */
export async function tutorialBurst(opts: { coldStartS: number; scale: number; requests: number; generationS: number }): Promise<BurstResult> {
  const { fair, hostPort } = await startStandins({ ...coldStart(opts.coldStartS, opts.scale), generationMs: Math.round(opts.generationS * 1000 * opts.scale) });
  const flow = tutorialOptions(fair.url, hostPort, opts.scale);
  try {
    const t0 = Date.now();
    const results = await within(
      Promise.all(Array.from({ length: opts.requests }, (_, i) => tutorialRequest(`tutorial burst ${i}`, flow))),
      120_000,
      'the tutorial burst',
    );
    return {
      served: results.filter((r) => r.ok).length,
      requests: opts.requests,
      startPrograms: fair.startPrograms(),
      lastAnswerS: (Date.now() - t0) / 1000 / opts.scale,
    };
  } finally {
    await fair.close();
  }
}

/** fairbot (the bot's core, as both adapters use it): the same burst, every wait scaled the same way. */
export async function fairbotBurst(opts: { coldStartS: number; scale: number; requests: number; generationS: number }): Promise<BurstResult> {
  const rig = await startCoreRig({
    ...coldStart(opts.coldStartS, opts.scale),
    generationMs: Math.round(opts.generationS * 1000 * opts.scale),
    durable: true,
    timing: scaledTiming(opts.scale),
    env: { STARTUP_TIMEOUT_S: String(600 * opts.scale), INFER_TIMEOUT_S: String(120 * opts.scale) },
  });
  try {
    const t0 = Date.now();
    const jobs: Job[] = [];
    for (let i = 0; i < opts.requests; i++) {
      const job = submit(rig.services, `fairbot burst ${i}`, requester(i));
      job.subscribe((e) => {
        if (e.type === 'done') rig.services.jobs.delivered(job.id);
      });
      jobs.push(job);
    }
    const finals = await within(Promise.all(jobs.map((j) => j.outcome)), 60_000 + 600_000 * opts.scale, 'the fairbot burst');
    return {
      served: finals.filter((f) => f.type === 'done').length,
      requests: opts.requests,
      startPrograms: rig.fair.startPrograms(),
      lastAnswerS: (Date.now() - t0) / 1000 / opts.scale,
    };
  } finally {
    await rig.close();
  }
}

/** The tutorial's overhead per request on a warm server (real time), 1 MB image. */
export async function tutorialWarmOverhead(opts: { jobs: number; runTag: string; generationMs: number }): Promise<OverheadRun> {
  const { fair, hostPort } = await startStandins({ imageBytes: MB, generationMs: opts.generationMs, coldStartMs: 20 });
  // Scale 0.05: only the warm-up request waits; the measured ones find the server up.
  const flow = tutorialOptions(fair.url, hostPort, 0.05);
  try {
    const warm = await tutorialRequest(`${opts.runTag} tutorial warm-up`, flow);
    if (!warm.ok) throw new Error(`bench: tutorial warm-up failed: ${warm.error}`);
    const d = fair.diffusion()!;
    const totals: number[] = [];
    const gens: number[] = [];
    for (let i = -3; i < opts.jobs; i++) {
      const prompt = `${opts.runTag} tutorial ${i}`;
      const r = await tutorialRequest(prompt, { ...flow, scale: 1 });
      if (!r.ok || r.startedServer) throw new Error(`bench: warm tutorial request failed: ${r.error}`);
      if (i < 0) continue;
      totals.push(r.ms);
      gens.push(generationOf(d, prompt));
    }
    return overheadRun(totals, gens);
  } finally {
    await fair.close();
  }
}
