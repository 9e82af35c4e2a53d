// Measurement 5, the bot's side: runs in its own Node process (no tsx loader, no stand-ins,
// no harness) so its RSS is the bot's. The parent runs the stand-ins and passes the env.
// Prints one JSON line: { baselineRss, peakRss, settledRss, heapUsed, ... } in bytes.
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { createServices } from '../src/app.js';
import { imagine } from '../src/commands/imagine.js';
import { loadConfig } from '../src/config.js';
import type { Job } from '../src/jobs/job.js';
import type { GeneratedImage } from '../src/jobs/types.js';
import { RssSampler } from './lib/rss.js';

const scenario = process.env.BENCH_SCENARIO as 'waiting' | 'delivery';
const count = Number(process.env.BENCH_COUNT ?? 0);
const env = JSON.parse(process.env.BENCH_ENV ?? '{}') as Record<string, string>;
const sink = new Writable({ write: (_c, _e, done) => done() });

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const rss = new RssSampler();

async function main() {
  const services = createServices(loadConfig(env), { logDestination: sink, durable: true });
  await sleep(200);
  const baselineRss = rss.start();
  const t0 = performance.now();
  const jobs: Job[] = [];
  const held: GeneratedImage[] = [];
  for (let i = 0; i < count; i++) {
    // What an adapter keeps per job: its reply data (a Discord interaction token is ~200 chars).
    const reply = { interactionToken: `tok-${i}-`.padEnd(200, 'x'), applicationId: '123456789012345678', channelId: 'C-bench' };
    const result = imagine(
      { requester: { platform: 'discord', userId: `u${i}`, userName: `user ${i}`, channelId: 'C-bench' }, prompt: `memory ${scenario} ${i}`, reply },
      services,
    );
    if (!result.ok) throw new Error(`refused: ${result.message}`);
    const job = result.job;
    // ...and a progress listener, as an adapter renders each step.
    let last = '';
    job.subscribe((e) => {
      last = e.type;
      if (e.type === 'done') held.push(e.image); // "in delivery": held until the upload is done
    });
    void last;
    jobs.push(job);
    rss.sample();
  }
  if (scenario === 'delivery') {
    const deadline = Date.now() + 60_000;
    while (held.length < count && Date.now() < deadline) await sleep(5);
    if (held.length < count) throw new Error(`only ${held.length} of ${count} images generated`);
  } else {
    await sleep(300); // the queue sits; the lifecycle keeps probing the cold server
  }
  const busyMs = performance.now() - t0;
  const measured = await rss.settle();
  const counts = services.jobs.counts();
  const heldBytes = held.reduce((n, img) => n + img.bytes.length, 0);
  for (const job of jobs) if (job.state === 'generated') services.jobs.delivered(job.id);
  process.stdout.write(`${JSON.stringify({ scenario, count, baselineRss, ...measured, heldBytes, counts, busyMs })}\n`);
  await services.jobs.shutdown(0);
  await services.lifecycle.close();
  await services.inference.close();
  services.jobs.close();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`memory-child: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
