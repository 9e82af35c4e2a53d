import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createServices, type ServiceOptions } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { Services } from '../../src/services.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../standins/fair.js';
import { recordOutput, registerSecret } from './secret-scan.js';

export const FAIR_EMAIL = 'admin@example.com';
export const FAIR_PASSWORD = 'test-password-s3cret';
registerSecret(FAIR_PASSWORD);

/** Timings short enough for tests: probes every 20 ms, backoff in tens of ms. */
export const FAST_TIMING: NonNullable<ServiceOptions['timing']> = {
  probeIntervalMs: 20,
  backoffMs: [100, 200, 400],
  fairRetryMs: [20, 40, 80],
  programPollMs: 10,
  earlierRefusedMs: 300,
  stopTimeoutMs: 5_000,
  leaseTtlMs: 1_500,
  syncIntervalMs: 50,
  exitPollMs: 20,
  closeWaitMs: 1_000,
  warmingTickMs: 50,
};

/** Captures log lines so tests can read them (and scan them for secrets). */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void) {
    const lines = chunk.toString('utf8').split('\n').filter(Boolean);
    this.lines.push(...lines);
    for (const line of lines) recordOutput('log', line);
    done();
  }
  get text(): string {
    return this.lines.join('\n');
  }
  entries(): Array<Record<string, unknown>> {
    return this.lines.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  }
}

export function tempDir(prefix = 'fairbot-test-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** The environment a test bot runs with: Fair and the diffusion port on stand-ins. */
export function fairEnv(fair: FairStandin, hostPort: number, dataDir: string, extra: Record<string, string> = {}) {
  return {
    FAIR_SERVER_URL: fair.url,
    FAIR_EMAIL,
    FAIR_PASSWORD,
    FAIR_PORTS: `${hostPort}:8080`,
    DATA_DIR: dataDir,
    LOG_LEVEL: 'debug',
    IDLE_SHUTDOWN_MIN: '0',
    ...extra,
  } as Record<string, string>;
}

export interface CoreRig {
  fair: FairStandin;
  services: Services;
  logs: LogCapture;
  hostPort: number;
  dataDir: string;
  env: Record<string, string>;
  close(): Promise<void>;
}

/** Fair stand-in + the real core services pointed at it. */
export async function startCoreRig(opts: { fair?: FairOptions; env?: Record<string, string>; timing?: ServiceOptions['timing'] } = {}): Promise<CoreRig> {
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, ...opts.fair });
  const hostPort = await freePort();
  const dir = tempDir();
  const env = fairEnv(fair, hostPort, dir.path, opts.env);
  const logs = new LogCapture();
  const services = createServices(loadConfig(env), { logDestination: logs, timing: { ...FAST_TIMING, ...opts.timing } });
  return {
    fair,
    services,
    logs,
    hostPort,
    dataDir: dir.path,
    env,
    async close() {
      await services.jobs.shutdown(0);
      await services.lifecycle.close();
      await services.inference.close();
      await fair.close();
      dir.remove();
    },
  };
}

/** Resolves when `predicate` holds, checking on each tick; fails after the deadline. */
export async function eventually(predicate: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
