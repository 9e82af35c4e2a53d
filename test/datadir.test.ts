/**
 * DATA_DIR under faults, with the real bot process (`node --import tsx src/main.ts`) against the
 * Slack, Fair and diffusion stand-ins of this test process (issue 17):
 *  - the disk fills while jobs are in flight;
 *  - a second bot on the same DATA_DIR, the CLI beside a running bot, a bot killed with -9;
 *  - a -wal file replaced with garbage after a crash.
 *
 * The full disk is real file-system behaviour without root: RLIMIT_FSIZE set on the running bot
 * with prlimit(1). No file of the bot can then grow past the limit, as on a full disk: files stay
 * readable, writes that need new space fail (SQLite answers SQLITE_IOERR_WRITE, fs EFBIG, where a
 * full disk gives SQLITE_FULL and ENOSPC: the same code path, a different cause in the texts).
 */
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { runCli } from '../src/cli/main.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { messages } from '../src/messages.js';
import { keepSqliteObjects } from '../src/storage/sqlite.js';
import { eventually } from './helpers/app.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { imagesByPrompt, lastSlackText, recordedJobs } from './helpers/faults.js';
import { limitFileSize, slackEventsUrl, slackProcessRig, spawnBot, type BotProcess } from './helpers/faults-process.js';
import { DONE_TEXT } from './helpers/slack.js';
import type { FairOptions } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();

/** Stand-ins and the env of a Slack (HTTP mode) bot on a fresh DATA_DIR. */
async function setup(fairOptions: FairOptions = {}, extra: Record<string, string> = {}) {
  const rig = await slackProcessRig((fn) => cleanup.defer(fn), { coldStartMs: 50, ...fairOptions });
  const env = { ...rig.env, INSTANCE_LEASE_S: '1', ...extra };
  const bot = (): BotProcess => {
    const started = spawnBot(env);
    cleanup.defer(() => started.kill());
    return started;
  };
  return { ...rig, env, bot };
}

async function healthz(bot: BotProcess): Promise<{ status: number; text: string }> {
  const entry = await bot.waitForLog((e) => e.msg === 'metrics and health on /metrics and /healthz', 10_000, 'the ops port');
  const res = await fetch(`http://127.0.0.1:${String(entry.port)}/healthz`);
  return { status: res.status, text: await res.text() };
}

async function healthzAnswers(bot: BotProcess, status: number, timeoutMs = 10_000): Promise<string> {
  let last = await healthz(bot);
  const deadline = Date.now() + timeoutMs;
  while (last.status !== status) {
    if (Date.now() > deadline) throw new Error(`/healthz still answers ${last.status} ${last.text} (waiting for ${status})`);
    await new Promise((r) => setTimeout(r, 50));
    last = await healthz(bot);
  }
  return last.text;
}

/** When the instance claim in DATA_DIR ends (ms since the epoch); 0 when none is held. */
function claimExpiresAt(dataDir: string): number {
  const db = new Database(join(dataDir, 'fairbot.db'), { readonly: true, fileMustExist: true });
  const select = db.prepare(`SELECT expires_at AS expiresAt FROM leases WHERE name = 'instance'`);
  keepSqliteObjects(db, select); // Node 24: never garbage (src/storage/sqlite.ts)
  try {
    return (select.get() as { expiresAt: number } | undefined)?.expiresAt ?? 0;
  } finally {
    db.close();
  }
}

/** A bot that must refuse to start: exit code 2, one stderr line. */
async function refusal(bot: BotProcess): Promise<string> {
  expect(await bot.exit(30_000)).toEqual({ code: 2, signal: null });
  const lines = bot.stderr().split('\n').filter(Boolean);
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('the disk fills while jobs are in flight', () => {
  it('jobs in flight are answered once, new ones refused naming the cause, the GPU released, /healthz 503 until space returns; a restart posts nothing again', async () => {
    const { slack, fair, dataDir, bot } = await setup({ diffusion: { generationMs: 1_500 } }, { METRICS_PORT: '0', IDLE_SHUTDOWN_MIN: '0.02' });
    const prompts = ['on the GPU when the disk fills', 'queued when the disk fills', 'after the disk filled'];
    const [running, queued, late] = prompts as [string, string, string];
    const first = bot();
    const url = await slackEventsUrl(first);
    expect((await slack.sendSlashCommand(url, { command: '/imagine', text: running, user_id: 'U0RUN' })).status).toBe(200);
    const diffusion = await fair.waitForDiffusion(15_000);
    await slack.waitFor(() => diffusion.infers.length === 1, 15_000, 'the first generation to start');
    expect((await slack.sendSlashCommand(url, { command: '/imagine', text: queued, user_id: 'U0WAIT' })).text).toMatch(/^Queued: you are next/);

    limitFileSize(first, 16 * 1024);
    const refused = await slack.sendSlashCommand(url, { command: '/imagine', text: late, user_id: 'U0LATE' });
    expect(refused.text).toBe(escapeMrkdwn(messages.storageFailed));
    const reason = await healthzAnswers(first, 503);
    expect(reason).toContain(`${join(dataDir, 'fairbot.db')}: it cannot be written`);

    // Both jobs in flight reach their users, once; the queued one ran though its start could not be recorded.
    await slack.waitFor(() => lastSlackText(slack, 'U0WAIT') === DONE_TEXT, 20_000, "the queued job's image");
    await slack.waitFor(() => lastSlackText(slack, 'U0RUN') === DONE_TEXT, 5_000, "the first job's image");
    expect(imagesByPrompt(slack, prompts)).toEqual({ [running]: 1, [queued]: 1 });
    // The GPU was released: the idle shutdown (IDLE_SHUTDOWN_MIN = 1.2 s) stopped the server.
    await slack.waitFor(() => fair.killPrograms().length === 1, 10_000, 'the idle shutdown');
    // Their ends could not go into the database: the preallocated ledger next to it holds them.
    expect(await healthzAnswers(first, 503)).toContain(`2 job end(s) kept in ${join(dataDir, 'fairbot.db.ends')}`);

    // A crash while the disk is still full: the ends that only the ledger holds are not lost.
    first.kill();
    await first.exit(10_000);
    await eventually(() => Date.now() > claimExpiresAt(dataDir), 5_000, "the dead bot's claim to expire");
    const second = bot();
    await slackEventsUrl(second);
    expect(second.entries.some((e) => e.msg === 'jobs recovered from the last run')).toBe(false);
    expect(recordedJobs(dataDir).map((j) => [j.prompt, j.state])).toEqual([
      [running, 'delivered'],
      [queued, 'delivered'],
    ]);
    expect(diffusion.infers.map((i) => i.prompt)).toEqual([running, queued]);
    expect(await healthzAnswers(second, 200)).toBe('{"ok":true}');

    // The disk fills and empties again under a running bot: 503, then 200 and jobs work.
    limitFileSize(second, 16 * 1024);
    const secondUrl = await slackEventsUrl(second);
    expect((await slack.sendSlashCommand(secondUrl, { command: '/imagine', text: late, user_id: 'U0LATE' })).text).toBe(escapeMrkdwn(messages.storageFailed));
    await healthzAnswers(second, 503);
    limitFileSize(second, 'unlimited');
    await healthzAnswers(second, 200);
    await slack.sendSlashCommand(secondUrl, { command: '/imagine', text: late, user_id: 'U0LATE' });
    await slack.waitFor(() => lastSlackText(slack, 'U0LATE') === DONE_TEXT, 20_000, 'the image after the space came back');
    expect(imagesByPrompt(slack, prompts)).toEqual({ [running]: 1, [queued]: 1, [late]: 1 });
    second.child.kill('SIGTERM');
    expect(await second.exit(10_000)).toEqual({ code: 0, signal: null });
  }, 120_000);
});

describe('one bot per DATA_DIR', () => {
  it('a second bot refuses to start naming the holder; the CLI works beside the bot; after a kill -9 the next bot starts once the claim expires', async () => {
    const { slack, dataDir, env, bot } = await setup();
    const first = bot();
    await slackEventsUrl(first);

    const second = bot();
    const line = await refusal(second);
    expect(line).toMatch(new RegExp(`^fairbot: DATA_DIR ${dataDir} is in use by another fairbot \\(pid ${first.child.pid} on `));
    expect(second.entries.some((e) => e.msg === 'fairbot started')).toBe(false);

    // The CLI does not take the claim: it generates beside the running bot, on the same DATA_DIR.
    const out = join(dataDir, 'cli.png');
    const sink = new Writable({ write: (_chunk, _enc, done) => done() });
    expect(await runCli(['imagine', 'a lighthouse from the CLI', '--out', out], { env, stdout: sink, stderr: sink })).toBe(0);
    expect(readFileSync(out).equals(pngForPrompt('a lighthouse from the CLI'))).toBe(true);

    first.kill();
    await first.exit(10_000);
    await eventually(() => Date.now() > claimExpiresAt(dataDir), 5_000, "the dead bot's claim to expire");
    const third = bot();
    const url = await slackEventsUrl(third);
    await slack.sendSlashCommand(url, { command: '/imagine', text: 'after the takeover', user_id: 'U0NEXT' });
    await slack.waitFor(() => lastSlackText(slack, 'U0NEXT') === DONE_TEXT, 20_000, 'the image from the third bot');

    // A clean stop releases the claim at once: the next bot need not wait for it to expire.
    third.child.kill('SIGTERM');
    expect(await third.exit(10_000)).toEqual({ code: 0, signal: null });
    expect(claimExpiresAt(dataDir)).toBe(0);
  }, 120_000);
});

describe('a database that lost its state', () => {
  it('a -wal file replaced with garbage after a crash: the bot refuses to start with one line naming the file, instead of dropping the queued job in silence', async () => {
    const { slack, dataDir, bot } = await setup({ coldStartMs: 60_000 });
    const first = bot();
    const url = await slackEventsUrl(first);
    await slack.sendSlashCommand(url, { command: '/imagine', text: 'accepted before the crash', user_id: 'U0LOST' });
    await eventually(() => recordedJobs(dataDir).length === 1, 5_000, 'the job to be recorded');
    first.kill();
    await first.exit(10_000);
    await eventually(() => Date.now() > claimExpiresAt(dataDir), 5_000, "the dead bot's claim to expire");
    const wal = join(dataDir, 'fairbot.db-wal');
    writeFileSync(wal, Buffer.alloc(statSync(wal).size, 0x5a));

    const line = await refusal(bot());
    const file = join(dataDir, 'fairbot.db');
    expect(line).toMatch(
      new RegExp(
        `^fairbot: ${file} has lost its state .* Restore ${file} \\(with its -wal file\\) from a backup; or, to start with an empty queue, delete ${file}\\.marker\\.$`,
      ),
    );
  }, 90_000);
});
