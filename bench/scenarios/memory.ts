// Measurement 5, the parent's side: stand-ins here, the bot in a child process of plain
// Node running an esbuild bundle of bench/memory-child.ts (tsx's loader alone adds ~50 MB
// of RSS, which would drown what is measured).
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../../test/helpers/app.js';
import { forkChild, type Child } from '../lib/ipc.js';
import { benchEnv, MB, platformEnv, startStandins, type PlatformsStarted } from '../lib/rig.js';
import type { GateCounts } from '../lib/gate-proxy.js';
import type { RssReading } from '../lib/rss.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
// Under node_modules so the bundle resolves the project's packages (and git ignores it).
const outDir = join(root, 'node_modules', '.cache', 'fairbot-bench');

export interface ChildReport extends RssReading {
  scenario: string;
  count: number;
  heldBytes: number;
  busyMs: number;
}

const bundles = new Map<string, Promise<{ file: string; how: string }>>();

/** Bundles a child once; falls back to tsx (and says so) if esbuild is not there. */
export function bundleChild(name = 'memory-child'): Promise<{ file: string; how: string }> {
  let bundled = bundles.get(name);
  if (!bundled) {
    bundled = (async () => {
      const entry = join(here, '..', `${name}.ts`);
      try {
        // esbuild comes with tsx; imported by name only, so the bench does not depend on its types.
        const esbuildName = 'esbuild';
        const esbuild = (await import(esbuildName)) as { build(options: Record<string, unknown>): Promise<unknown> };
        mkdirSync(outDir, { recursive: true });
        const file = join(outDir, `${name}.mjs`);
        await esbuild.build({
          entryPoints: [entry],
          bundle: true,
          platform: 'node',
          format: 'esm',
          target: 'node20',
          packages: 'external',
          outfile: file,
          logLevel: 'error',
        });
        return { file, how: 'node (esbuild bundle)' };
      } catch {
        return { file: entry, how: 'node --import tsx (esbuild missing: RSS includes ~50 MB of tsx)' };
      }
    })();
    bundles.set(name, bundled);
  }
  return bundled;
}

function runChild(file: string, viaTsx: boolean, env: Record<string, string>): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const args = ['--expose-gc', ...(viaTsx ? ['--import', 'tsx'] : []), file];
    const child = spawn(process.execPath, args, { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').at(-1);
      if (code !== 0 || !line) return reject(new Error(`memory child exited ${code}: ${err.trim().slice(0, 500)}`));
      resolve(JSON.parse(line) as ChildReport);
    });
  });
}

/** RSS with `count` jobs waiting on a cold GPU (the cold start outlasts the measurement). */
export async function memoryWaiting(count: number): Promise<ChildReport & { how: string }> {
  const { file, how } = await bundleChild();
  const { fair, hostPort } = await startStandins({ coldStartMs: 10 * 60_000 });
  const dir = tempDir('fairbot-bench-mem-');
  try {
    const env = benchEnv(fair, hostPort, dir.path, { QUEUE_MAX: String(count + 100), USER_MAX_PENDING: '3' });
    const report = await runChild(file, file.endsWith('.ts'), {
      BENCH_SCENARIO: 'waiting',
      BENCH_COUNT: String(count),
      BENCH_ENV: JSON.stringify(env),
    });
    return { ...report, how };
  } finally {
    await fair.close();
    dir.remove();
  }
}

/** RSS with `count` generated images of `imageMb` MB held "in delivery" (done, not yet delivered). */
export async function memoryDelivery(count: number, imageMb: number): Promise<ChildReport & { how: string }> {
  const { file, how } = await bundleChild();
  const { fair, hostPort } = await startStandins({ coldStartMs: 20, imageBytes: imageMb * MB, generationMs: 0 });
  const dir = tempDir('fairbot-bench-mem-');
  try {
    const env = benchEnv(fair, hostPort, dir.path, { QUEUE_CONCURRENCY: '1', QUEUE_MAX: String(count + 10) });
    const report = await runChild(file, file.endsWith('.ts'), {
      BENCH_SCENARIO: 'delivery',
      BENCH_COUNT: String(count),
      BENCH_ENV: JSON.stringify(env),
    });
    return { ...report, how };
  } finally {
    await fair.close();
    dir.remove();
  }
}

export interface AdaptersReport extends RssReading {
  /** At the measurement: the bot's upload queue (services.uploads), running and waiting. */
  uploads: { running: number; waiting: number };
  generated: number;
  /** process.memoryUsage() at the sampled peak. */
  atPeak?: NodeJS.MemoryUsage;
  /** What the gate proxies held then: distinct uploads, open requests, attempts (re-sends included). */
  gates: { slack: GateCounts; discord: GateCounts };
  /** First command sent → measurement (discord.js re-sends an upload after 15 s). */
  elapsedMs: number;
  how: string;
}

/**
 * RSS of the bot with its Slack and Discord adapters while `count` images of `imageMb` MB are
 * in delivery: generated, handed to their adapter, not yet accepted by the platform. Half come
 * from Slack, half from Discord, sent alternately. The platform stand-ins (their own process)
 * sit behind gate proxies that read each upload in full and never answer it, so an upload that
 * has started stays in flight; with services.uploads at 3, three are uploading and the rest
 * wait for a slot (each holding its image once). Measured once all `count` jobs are in the
 * upload queue and the gates hold as many uploads as the queue runs. The bot runs in a third
 * process.
 */
export async function memoryAdaptersDelivery(count: number, imageMb: number, slackCount = count - Math.floor(count / 2)): Promise<AdaptersReport> {
  const { file, how } = await bundleChild('memory-adapters-child');
  const platforms = forkChild(join(here, '..', 'platform-child.ts'), { tsx: true, env: { BENCH_GATE: '1' } });
  let bot: Child | undefined;
  let standins: Awaited<ReturnType<typeof startStandins>> | undefined;
  const dir = tempDir('fairbot-bench-mem-');
  try {
    const started = await platforms.next<PlatformsStarted>('started', 30_000);
    standins = await startStandins({ coldStartMs: 20, imageBytes: imageMb * MB, generationMs: 0 });
    const env = benchEnv(standins.fair, standins.hostPort, dir.path, { QUEUE_CONCURRENCY: '1', QUEUE_MAX: String(count + 10), ...platformEnv(started) });
    bot = forkChild(file, { tsx: file.endsWith('.ts'), execArgv: ['--expose-gc'], env: { BENCH_ENV: JSON.stringify(env) } });
    const ready = await bot.next<{ slackPort: number }>('ready', 60_000);
    const t0 = Date.now();
    platforms.send({
      op: 'imagine-batch',
      eventsUrl: `http://127.0.0.1:${ready.slackPort}/slack/events`,
      slack: slackCount,
      discord: count - slackCount,
      tag: 'memory',
    });
    await platforms.next('sent', 60_000);
    bot.send({ op: 'await-delivery', count, timeoutMs: 60_000 });
    const inDelivery = await bot.next<{ running: number; waiting: number }>('in-delivery', 65_000);
    // The uploads under way have been sent in full (the gates hold them): the bot's copies exist.
    platforms.send({ op: 'gates', open: inDelivery.running, timeoutMs: 10_000 });
    const gates = await platforms.next<{ slack: GateCounts; discord: GateCounts }>('gates', 15_000);
    const elapsedMs = Date.now() - t0;
    bot.send({ op: 'measure' });
    const m = await bot.next<Omit<AdaptersReport, 'gates' | 'elapsedMs' | 'how'>>('measured', 30_000);
    return { ...m, gates: { slack: gates.slack, discord: gates.discord }, elapsedMs, how };
  } finally {
    await bot?.end(3_000);
    await platforms.end();
    await standins?.fair.close();
    dir.remove();
  }
}
