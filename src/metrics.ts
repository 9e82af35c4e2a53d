import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from 'pino';
import type { GpuLifecycle, GpuState } from './fair/lifecycle.js';
import type { JobService } from './jobs/service.js';

/** Prometheus metrics for operators; a registry per instance so tests can run several bots. */
export class Metrics {
  readonly registry = new Registry();
  private readonly jobs = new Counter({
    name: 'fairbot_jobs_total',
    help: 'Jobs that ended, by outcome',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  private readonly generation = new Histogram({
    name: 'fairbot_generation_seconds',
    help: 'Time of one generation on the GPU',
    buckets: [1, 2, 5, 10, 20, 30, 60, 120],
    registers: [this.registry],
  });
  private readonly coldStarts = new Histogram({
    name: 'fairbot_cold_start_seconds',
    help: 'Time from a start program to the diffusion server answering',
    buckets: [5, 10, 20, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  private readonly platformErrors = new Counter({
    name: 'fairbot_platform_api_errors_total',
    help: 'Errors answered by the Discord and Slack APIs',
    labelNames: ['platform', 'code'] as const,
    registers: [this.registry],
  });

  private processMetrics = false;

  constructor(lifecycle: GpuLifecycle, jobs: JobService) {
    new Gauge({
      name: 'fairbot_queue_depth',
      help: 'Jobs waiting for the GPU',
      registers: [this.registry],
      collect() {
        this.set(jobs.counts().waiting);
      },
    });
    new Gauge({
      name: 'fairbot_jobs_running',
      help: 'Generations running on the GPU',
      registers: [this.registry],
      collect() {
        this.set(jobs.counts().running);
      },
    });
    new Gauge({
      name: 'fairbot_gpu_server_up',
      help: '1 when the diffusion server is ready, else 0',
      registers: [this.registry],
      collect() {
        this.set(lifecycle.state === ('ready' satisfies GpuState) ? 1 : 0);
      },
    });
    const coldStartCount = new Counter({
      name: 'fairbot_cold_starts_total',
      help: 'Start programs that led to a ready server',
      registers: [this.registry],
    });
    jobs.events.on('ended', ({ outcome }: { outcome: string }) => this.jobs.inc({ outcome }));
    jobs.events.on('generated', ({ generationMs }: { generationMs: number }) => this.generation.observe(generationMs / 1000));
    lifecycle.on('ready', ({ coldStartMs, started }: { coldStartMs: number; started: boolean }) => {
      if (!started) return;
      coldStartCount.inc();
      this.coldStarts.observe(coldStartMs / 1000);
    });
  }

  /**
   * The process metrics (CPU, memory, event-loop lag, GC), once something will read them:
   * startOpsServer. Not in the constructor, so a one-shot CLI run (and every test) does not
   * pay for them (about half a millisecond per createServices, plus an event-loop monitor).
   */
  collectProcessMetrics(): void {
    if (this.processMetrics) return;
    this.processMetrics = true;
    collectDefaultMetrics({ register: this.registry, prefix: 'fairbot_process_' });
  }

  /** Adapters report every error a platform API answered. */
  platformError(platform: 'discord' | 'slack', code: string): void {
    this.platformErrors.inc({ platform, code: code.slice(0, 60) });
  }
}

export interface Health {
  ok: boolean;
  /** Why not, when not ok. */
  reason?: string;
}

/** METRICS_PORT: `GET /metrics` (Prometheus) and `GET /healthz` (200, or 503 with the reason). */
export async function startOpsServer(port: number, metrics: Metrics, health: () => Health, logger: Logger): Promise<{ port: number; close(): Promise<void> }> {
  metrics.collectProcessMetrics();
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(text);
        },
        (error: unknown) => {
          logger.error({ err: error }, 'metrics collection failed');
          res.writeHead(500).end();
        },
      );
      return;
    }
    if (req.method === 'GET' && path === '/healthz') {
      const h = health();
      res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify(h.ok ? { ok: true } : { ok: false, reason: h.reason }));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  logger.info({ port: bound }, 'metrics and health on /metrics and /healthz');
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
