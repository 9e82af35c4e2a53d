// Measurement 5 with the adapters: the bot (services + Slack + Discord adapters, as startApp
// wires them) in its own plain-Node process, bundled by esbuild. Driven over IPC by
// scenarios/memory.ts: 'ready' (with its Slack port and idle RSS) → 'measure' → 'measured'.
import { Writable } from 'node:stream';
import { createServices } from '../src/app.js';
import { startDiscordBot } from '../src/bots/discord/index.js';
import { startSlackBot } from '../src/bots/slack/index.js';
import { loadConfig } from '../src/config.js';

const env = JSON.parse(process.env.BENCH_ENV ?? '{}') as Record<string, string>;
const sink = new Writable({ write: (_c, _e, done) => done() });
const gc = (globalThis as { gc?: () => void }).gc ?? (() => undefined);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const send = (msg: unknown) => process.send?.(msg);

let peak = 0;
const sample = () => (peak = Math.max(peak, process.memoryUsage().rss));

async function main() {
  const services = createServices(loadConfig(env), { logDestination: sink, durable: true });
  const discord = await startDiscordBot(services);
  const slack = await startSlackBot(services);
  await sleep(300);
  gc();
  const baselineRss = process.memoryUsage().rss;
  peak = baselineRss;
  const sampler = setInterval(sample, 5);
  send({ op: 'ready', slackPort: slack.port, baselineRss });

  process.on('message', (msg: { op: string }) => {
    if (msg.op !== 'measure') return;
    void (async () => {
      sample();
      await sleep(200);
      const settledRss = process.memoryUsage().rss;
      const { heapUsed, external, arrayBuffers } = process.memoryUsage();
      gc();
      const afterGc = process.memoryUsage();
      const afterGcRss = afterGc.rss;
      const live = { heapUsed: afterGc.heapUsed, external: afterGc.external, arrayBuffers: afterGc.arrayBuffers };
      clearInterval(sampler);
      send({ op: 'measured', baselineRss, peakRss: Math.max(peak, settledRss), settledRss, afterGcRss, heapUsed, external, arrayBuffers, live, counts: services.jobs.counts() });
      // The held uploads never finish: leave without waiting for them.
      await Promise.race([Promise.allSettled([slack.stop(), discord.stop()]), sleep(1_000)]);
      process.exit(0);
    })();
  });
  process.on('disconnect', () => process.exit(0));
}

main().catch((error: unknown) => {
  send({ op: 'error', message: error instanceof Error ? error.stack : String(error) });
  process.exit(1);
});
