// Measurement 5 with the adapters: the bot (services + Slack + Discord adapters, as startApp
// wires them) in its own plain-Node process, bundled by esbuild. Driven over IPC by
// scenarios/memory.ts: 'ready' (with its Slack port and idle RSS) → 'await-delivery' →
// 'in-delivery' (every job generated and in the upload queue) → 'measure' → 'measured'.
import { Writable } from 'node:stream';
import { createServices } from '../src/app.js';
import { startDiscordBot } from '../src/bots/discord/index.js';
import { startSlackBot } from '../src/bots/slack/index.js';
import { loadConfig } from '../src/config.js';
import { RssSampler } from './lib/rss.js';

const env = JSON.parse(process.env.BENCH_ENV ?? '{}') as Record<string, string>;
const sink = new Writable({ write: (_c, _e, done) => done() });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const send = (msg: unknown) => process.send?.(msg);
const rss = new RssSampler();

async function main() {
  const services = createServices(loadConfig(env), { logDestination: sink, durable: true });
  const discord = await startDiscordBot(services);
  const slack = await startSlackBot(services);
  await sleep(300);
  const baselineRss = rss.start();
  let generated = 0;
  services.jobs.events.on('generated', () => generated++);
  send({ op: 'ready', slackPort: slack.port, baselineRss });
  // Jobs in delivery: generated, their image handed to an adapter, not yet accepted by the
  // platform: uploading (a slot of services.uploads) or waiting for an upload slot.
  const uploads = () => ({ running: services.uploads.pending, waiting: services.uploads.size });

  process.on('message', (msg: { op: string; count?: number; timeoutMs?: number }) => {
    if (msg.op === 'await-delivery') {
      void (async () => {
        const deadline = Date.now() + (msg.timeoutMs ?? 60_000);
        for (let u = uploads(); u.running + u.waiting < msg.count!; u = uploads()) {
          if (Date.now() > deadline) {
            send({ op: 'error', message: `in delivery: ${u.running} uploading + ${u.waiting} waiting of ${msg.count} (${generated} generated)` });
            return;
          }
          await sleep(5);
        }
        send({ op: 'in-delivery', generated, ...uploads() });
      })();
      return;
    }
    if (msg.op !== 'measure') return;
    void (async () => {
      const measured = await rss.settle();
      send({ op: 'measured', uploads: uploads(), generated, atPeak: rss.atPeak, baselineRss, ...measured, counts: services.jobs.counts() });
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
