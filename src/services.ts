import type PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import type { GpuLifecycle } from './fair/lifecycle.js';
import type { JobService } from './jobs/service.js';
import type { InferenceClient } from './inference/client.js';
import type { Metrics } from './metrics.js';

/**
 * Everything a command needs, built once at start (src/app.ts) and handed to
 * the platform adapters. Adapters never reach past this into src/fair.
 */
export interface Services {
  config: Config;
  logger: Logger;
  lifecycle: GpuLifecycle;
  jobs: JobService;
  inference: InferenceClient;
  metrics: Metrics;
  /**
   * Image uploads to the platforms, a few at a time: an SDK copies an image two or three
   * times while it uploads it, so twenty 5 MB uploads at once would triple the memory.
   */
  uploads: PQueue;
}
