import PQueue from 'p-queue';
import type { DestinationStream } from 'pino';
import { canManageServer, loadConfig, requireBotSetup, type Config, type Env } from './config.js';
import { FairClient } from './fair/client.js';
import { GpuLifecycle, type LifecycleTiming } from './fair/lifecycle.js';
import { ServerRecords } from './fair/records.js';
import { InferenceClient } from './inference/client.js';
import { JobService } from './jobs/service.js';
import { JobStore } from './jobs/store.js';
import { createLogger } from './logger.js';
import { Metrics, startOpsServer, type Health } from './metrics.js';
import type { Services } from './services.js';
import { claimDataDir } from './storage/instance.js';

/** Enough to keep the platforms busy; each upload in flight costs two or three image copies. */
const UPLOADS_AT_ONCE = 3;

export interface ServiceOptions {
  logDestination?: DestinationStream | NodeJS.WritableStream;
  /** Shorter intervals for tests and the demo. */
  timing?: Partial<LifecycleTiming> & { warmingTickMs?: number };
  /** Record jobs in DATA_DIR so a restart resumes them (the bot); the CLI runs in memory. */
  durable?: boolean;
  /** Memory for images waiting for upload (default HELD_IMAGE_BYTES_MAX; tests use a small one). */
  heldImageBytesMax?: number;
}

/** Builds the platform-neutral services from a parsed config. The CLI and the bots share it. */
export function createServices(config: Config, options: ServiceOptions = {}): Services {
  const logger = createLogger({ level: config.logLevel, destination: options.logDestination, secrets: config.secrets });
  const inference = new InferenceClient({ inferTimeoutMs: config.inferTimeoutMs });
  const fair = canManageServer(config)
    ? new FairClient({ serverUrl: config.fairServerUrl, email: config.fairEmail!, password: config.fairPassword!, logger })
    : undefined;
  const lifecycle = new GpuLifecycle({
    config,
    logger,
    fair,
    inference,
    records: new ServerRecords(config.dataDir),
    timing: options.timing,
  });
  const store = options.durable ? new JobStore(config.dataDir) : undefined;
  const jobs = new JobService({
    config,
    logger,
    lifecycle,
    inference,
    store,
    warmingTickMs: options.timing?.warmingTickMs,
    heldImageBytesMax: options.heldImageBytesMax,
  });
  const uploads = new PQueue({ concurrency: UPLOADS_AT_ONCE });
  return { config, logger, lifecycle, jobs, inference, metrics: new Metrics(lifecycle, jobs), uploads };
}

export interface Bot {
  stop(): Promise<void>;
  /** The HTTP port a bot listens on, when it has one (Slack HTTP mode). */
  port?: number;
  /** Whether the bot is connected to its platform, for /healthz. */
  health?(): Health;
}

export interface RunningApp {
  services: Services;
  discord?: Bot;
  slack?: Bot;
  /** The /metrics and /healthz port, when METRICS_PORT is set. */
  metricsPort?: number;
  /** SIGTERM path: stop taking jobs, let the GPU job finish within graceMs, stop the bots. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartOptions extends ServiceOptions {
  env: Env;
}

/** What `npm start` runs: config, services, then Discord and/or Slack as configured. */
export async function startApp(options: StartOptions): Promise<RunningApp> {
  const config = loadConfig(options.env);
  // Nothing to serve, or no GPU to serve it with: say so and stop (exit 2), rather than
  // exit 0 into a restart loop or fail every job.
  requireBotSetup(config);
  // Before anything reads or moves the jobs in DATA_DIR: one bot per DATA_DIR.
  const claim = await claimDataDir(
    config.dataDir,
    config.instanceLeaseMs,
    createLogger({ level: config.logLevel, destination: options.logDestination, secrets: config.secrets }),
  );
  let services: Services;
  try {
    services = createServices(config, { durable: true, ...options });
  } catch (error) {
    claim.release();
    throw error;
  }
  const { logger } = services;
  const bots: { discord?: Bot; slack?: Bot } = {};
  try {
    if (config.discordToken) {
      // Loaded only when configured: a Slack-only bot never loads discord.js, and vice versa.
      const { startDiscordBot } = await import('./bots/discord/index.js');
      bots.discord = await startDiscordBot(services);
    }
    if (config.slackBotToken) {
      const { startSlackBot } = await import('./bots/slack/index.js');
      bots.slack = await startSlackBot(services);
    }
  } catch (error) {
    await Promise.allSettled(Object.values(bots).map((b) => b.stop()));
    await services.lifecycle.close();
    await services.inference.close();
    services.jobs.close();
    claim.release();
    throw error;
  }
  // Adopt a server an earlier run started, so it is reported, reused and stopped when idle;
  // then resume the jobs the last run left (the adapters have registered for theirs).
  await services.lifecycle.recover().catch((error) => logger.warn({ err: error }, 'could not check for a running GPU server'));
  services.jobs.recover();
  const ops =
    config.metricsPort === undefined
      ? undefined
      : await startOpsServer(config.metricsPort, services.metrics, () => health(bots, services.jobs.storageHealth()), logger);
  logger.info({ discord: Boolean(bots.discord), slack: Boolean(bots.slack), managed: services.lifecycle.managed }, 'fairbot started');

  let stopping: Promise<void> | undefined;
  return {
    services,
    ...bots,
    metricsPort: ops?.port,
    stop(graceMs = 8_000) {
      stopping ??= (async () => {
        await services.jobs.shutdown(graceMs);
        await Promise.allSettled(Object.values(bots).map((b) => b.stop()));
        await ops?.close();
        await services.lifecycle.close();
        await services.inference.close();
        services.jobs.close();
        claim.release();
        logger.info('fairbot stopped');
      })();
      return stopping;
    },
  };
}

/** Healthy when every configured platform is connected and DATA_DIR can be written. */
function health(bots: { discord?: Bot; slack?: Bot }, storage: Health): Health {
  const parts: Array<[string, Health]> = [
    ...Object.entries(bots).map(([name, bot]): [string, Health] => [name, bot?.health?.() ?? { ok: true }]),
    ['storage', storage],
  ];
  const problems = parts.flatMap(([name, h]) => (h.ok ? [] : [`${name}: ${h.reason ?? 'not connected'}`]));
  return problems.length === 0 ? { ok: true } : { ok: false, reason: problems.join('; ') };
}
