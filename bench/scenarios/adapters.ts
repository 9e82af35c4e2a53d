// Measurements 1 (Slack, Discord) and 4 (acks), through the real app (startApp, as `npm
// start` runs it) against the Slack and Discord stand-ins. They are loaded only when the
// adapters exist (src/bots/slack/index.ts exporting startSlackBot, src/bots/discord/index.ts
// exporting startDiscordBot); otherwise the sections say so and are skipped.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { Row } from '../lib/report.js';
import { row } from '../lib/report.js';
import { median, percentile, round, summarize } from '../lib/stats.js';
import type { OverheadRun } from './core.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Section {
  rows: Row[];
  raw: Record<string, unknown>;
}

type Progress = (msg: string) => void;
interface Params {
  runs: number;
  jobs: number;
  memRuns: number;
}

/** Which adapters are there to measure (their modules load and export their start functions). */
export async function availableAdapters(): Promise<{ slack: boolean; discord: boolean; why: string[] }> {
  const why: string[] = [];
  const check = async (platform: 'slack' | 'discord', fn: string) => {
    const file = join(root, 'src', 'bots', platform, 'index.ts');
    if (!existsSync(file)) {
      why.push(`${platform}: src/bots/${platform}/index.ts not there yet`);
      return false;
    }
    try {
      const mod = (await import(`../../src/bots/${platform}/index.js`)) as Record<string, unknown>;
      if (typeof mod[fn] === 'function') return true;
      why.push(`${platform}: index.ts does not export ${fn}`);
    } catch (error) {
      why.push(`${platform}: index.ts does not load (${error instanceof Error ? error.message.split('\n')[0] : String(error)})`);
    }
    return false;
  };
  return { slack: await check('slack', 'startSlackBot'), discord: await check('discord', 'startDiscordBot'), why };
}

let available: ReturnType<typeof availableAdapters> | undefined;
const adapters = () => (available ??= availableAdapters());

async function overhead(want: (s: string) => boolean, P: Params, progress: Progress): Promise<Section[]> {
  if (!want('overhead') && !want('adapters')) return [];
  const a = await adapters();
  for (const w of a.why) progress(`skipping adapter measurements: ${w}`);
  const out: Section[] = [];
  const { slackOverhead, discordOverhead } = await import('./platforms.js');
  for (const [platform, ok, fn] of [
    ['Slack', a.slack, slackOverhead],
    ['Discord', a.discord, discordOverhead],
  ] as const) {
    if (!ok) continue;
    const runs: Array<OverheadRun & { fromSend?: OverheadRun }> = [];
    for (let run = 0; run < P.runs; run++) {
      progress(`(1) ${platform} overhead: run ${run + 1}/${P.runs}`);
      runs.push(await fn({ jobs: P.jobs, runTag: `${platform.toLowerCase()}${run}`, generationMs: 10 }));
    }
    const id = platform.toLowerCase();
    const note =
      platform === 'Slack'
        ? 'signed POST /slack/events reaching the bot → files.completeUploadExternal received; warm GPU, 1 MB PNG'
        : 'INTERACTION_CREATE written to the gateway socket → reply edited with the attachment; warm GPU, 1 MB PNG';
    const fromSend = runs.flatMap((r) => (r.fromSend ? [r.fromSend] : []));
    out.push({
      rows: [
        row(`${id}-p50`, `(1) overhead/job ${platform}, p50`, 'ms', summarize(runs.map((r) => r.p50)), { op: '<=', value: 10 }, note),
        row(`${id}-p99`, `(1) overhead/job ${platform}, p99`, 'ms', summarize(runs.map((r) => r.p99)), { op: '<=', value: 50 }, note),
        ...(fromSend.length > 0
          ? [
              row(
                `${id}-send-p50`,
                `(1) ${platform} p50 from the stand-in's send`,
                'ms',
                summarize(fromSend.map((r) => r.p50)),
                undefined,
                `the same jobs, timed from before the stand-in builds ${platform === 'Slack' ? 'and signs the request' : 'the interaction'}`,
              ),
            ]
          : []),
      ],
      raw: {
        [id]: runs.map((r) => ({
          p50: round(r.p50),
          p99: round(r.p99),
          totalMedianMs: round(r.totalMedianMs),
          generationMedianMs: round(r.generationMedianMs),
          n: r.overheadsMs.length,
        })),
      },
    });
  }
  return out;
}

async function ack(want: (s: string) => boolean, P: Params, progress: Progress): Promise<Section[]> {
  if (!want('ack') && !want('adapters')) return [];
  const a = await adapters();
  if (!a.slack || !a.discord) {
    progress('skipping (4) acks: needs both adapters');
    return [];
  }
  const { ackBurst } = await import('./platforms.js');
  const runs = [];
  const n = Math.max(2, Math.min(3, P.runs));
  for (let run = 0; run < n; run++) {
    progress(`(4) 100 commands at once, GPU cold: run ${run + 1}/${n}`);
    runs.push(await ackBurst({ commands: 100, runTag: `ack${run}` }));
  }
  const note = '50 Slack + 50 Discord at once, GPU cold; Slack: HTTP answer to the signed POST, Discord: callback at the stand-in';
  return [
    {
      rows: [
        row('ack-p99', '(4) ack latency, 100 commands at once, p99', 'ms', summarize(runs.map((r) => percentile(r.all, 99))), { op: '<=', value: 300 }, note),
        row('ack-p50', '(4) ack latency, p50', 'ms', summarize(runs.map((r) => median(r.all))), undefined, note),
        row('ack-slack-p99', '(4) ack latency, Slack only, p99', 'ms', summarize(runs.map((r) => percentile(r.slack, 99)))),
        row('ack-discord-p99', '(4) ack latency, Discord only, p99', 'ms', summarize(runs.map((r) => percentile(r.discord, 99)))),
      ],
      raw: { ack: runs.map((r) => ({ slack: r.slack.map((x) => round(x)), discord: r.discord.map((x) => round(x)), refused: r.refused })) },
    },
  ];
}

async function memory(want: (s: string) => boolean, P: Params, progress: Progress): Promise<Section[]> {
  if (!want('memory') && !want('adapters')) return [];
  const a = await adapters();
  if (!a.slack || !a.discord) {
    progress('skipping (5) with adapters: needs both adapters');
    return [];
  }
  const { memoryAdaptersDelivery } = await import('./memory.js');
  const runs = [];
  for (let run = 0; run < P.memRuns; run++) {
    progress(`(5) RSS, 20 × 5 MB in delivery through the adapters (10 Slack + 10 Discord): run ${run + 1}/${P.memRuns}`);
    const r = await memoryAdaptersDelivery(20, 5);
    const { slack, discord } = r.gates;
    progress(
      `    ${r.generated} generated, ${r.uploads.running} uploading (held: ${slack.open} Slack + ${discord.open} Discord, ` +
        `${slack.attempts + discord.attempts} attempts) + ${r.uploads.waiting} waiting for a slot, after ${r.elapsedMs} ms`,
    );
    runs.push(r);
  }
  const mb = (n: number) => n / (1024 * 1024);
  return [
    {
      rows: [
        row('rss-adapters-idle', '(5) RSS, bot with both adapters idle (baseline)', 'MB', summarize(runs.map((r) => mb(r.baselineRss)))),
        row(
          'rss-adapters-delivery',
          '(5) RSS, 20 × 5 MB in delivery, adapters (peak)',
          'MB',
          summarize(runs.map((r) => mb(r.peakRss))),
          { op: '<=', value: 300 },
          '10 Slack + 10 Discord jobs, all generated: 3 in the platform upload (read in full, never answered), 17 waiting for an upload slot',
        ),
        row(
          'rss-adapters-delivery-live',
          '(5) of which still referenced after GC (heap + buffers)',
          'MB',
          summarize(runs.map((r) => mb(r.live.heapUsed + r.live.external))),
        ),
      ],
      raw: { memoryAdapters: runs },
    },
  ];
}

export const adapterSections = { overhead, ack, memory };
void performance;
