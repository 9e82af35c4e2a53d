// `npm run soak` (not part of `npm test`): 500 jobs from 50 users through the Slack
// stand-in, against the real app (startApp, as `npm start` runs it), with faults:
//   - about 10% of generations fail in one of issue 5's ways (the diffusion stand-in's
//     setFault(kind, { times: 1 }) right after a generation ends, with probability 0.1):
//     500, 503, non-JSON, no image, bad base64, not an image, connection reset, hang
//     (past INFER_TIMEOUT_S=1);
//   - one GPU server crash mid-generation (setFault('crash')) after 150 outcomes;
//   - one bot restart after 300 outcomes: app.stop() (the SIGTERM path) and startApp
//     again on the same DATA_DIR;
//   - storage faults (issue 17): the disk fills for 3 s after 200 outcomes (RLIMIT_FSIZE
//     on this process with prlimit(1): no file may grow past 16 KiB; the soak holds its own
//     output meanwhile), another process holds fairbot.db's write lock for 3 s after 250
//     (a second connection's BEGIN IMMEDIATE), and a second bot tries to start on the same
//     DATA_DIR after 350 (it must refuse). A command refused because of them ("could not
//     record your job", "the database is busy") is that job's one outcome.
// Users keep within USER_MAX_PENDING (3, the default): a user sends a new /imagine only
// while fewer than 3 of theirs are without an outcome. QUEUE_MAX is raised to 200 so that
// 50 users x 3 never meet the global queue limit (which is tested elsewhere).
//
// At the end, for every job: exactly one final outcome visible to its user (its image in
// the channel, or an error message on its response_url or as an ephemeral), no image
// posted twice, the posted bytes exactly the server's, nothing left unfinished in
// DATA_DIR; RSS after a forced GC at warm-up (100 outcomes) against the end.
// Prints the counts; exits 1 if an invariant fails. Stops by itself (deadline 6 min).
//
//   npm run soak                 seed from the clock (printed)
//   SOAK_SEED=42 npm run soak    reproducible fault choices
import { Writable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { startApp, type RunningApp } from '../src/app.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { messages } from '../src/messages.js';
import { keepSqliteObjects } from '../src/storage/sqlite.js';
import { FAST_TIMING, fairEnv, tempDir } from '../test/helpers/app.js';
import { recordedJobs } from '../test/helpers/faults.js';
import type { DiffusionFault, DiffusionStandin, InferRecord } from '../test/standins/diffusion.js';
import { freePort, startFairStandin } from '../test/standins/fair.js';
import { pngForPrompt } from '../test/standins/png.js';
import { renderSlackMessage, startSlackStandin } from '../test/standins/slack.js';

// --- parameters ------------------------------------------------------------------
const JOBS = 500;
const USERS = 50;
const USER_MAX_PENDING = 3;
const FAULT_RATE = 0.1;
const FAULT_KINDS: DiffusionFault[] = ['500', '503', 'non-json', 'no-image', 'bad-base64', 'not-image', 'reset', 'hang'];
const CRASH_AFTER = 150;
const RESTART_AFTER = 300;
const WARMUP_AFTER = 100;
const DISK_FULL_AFTER = 200;
const LOCK_AFTER = 250;
const SECOND_BOT_AFTER = 350;
const STORAGE_FAULT_MS = 3_000;
/** What a user reads when a storage fault refuses their command: the job's one outcome. */
const STORAGE_REFUSALS = [messages.storageFailed, messages.storageFull, messages.storageBusy].map(escapeMrkdwn);
const DEADLINE_MS = 6 * 60_000;
/**
 * Growth allowed from warm-up (100 outcomes) to the end, measured after a forced GC. RSS also
 * moves with the allocator's high-water mark, hence its wider margin; the JS heap and the
 * Buffers (where images live: 256 KB each) are exact, so 16 MB is about 60 images' worth.
 * The stand-ins run in this process too; they let go of each image once it is checked.
 */
const RSS_TOLERANCE_MB = 40;
const HEAP_TOLERANCE_MB = 16;
const BUFFERS_TOLERANCE_MB = 16;
const MB = 1024 * 1024;
/** Image size: real Stable Diffusion PNGs are a few hundred KB, so a leak per image shows. */
const IMAGE_BYTES = Number(process.env.SOAK_IMAGE_KB ?? 256) * 1024;
const imageFor = (prompt: string) => pngForPrompt(prompt, { minBytes: IMAGE_BYTES });

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

const seed = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);
let rngState = seed >>> 0 || 1;
/** mulberry32: reproducible fault choices for a given SOAK_SEED. */
function random(): number {
  rngState = (rngState + 0x6d2b79f5) >>> 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s`;
/** While the disk is "full", so is stderr when it is a file: lines wait here. */
let heldOutput: string[] | undefined;
const say = (msg: string) => {
  const line = `[soak ${elapsed()}] ${msg}\n`;
  if (heldOutput) heldOutput.push(line);
  else process.stderr.write(line);
};

// --- the bot's logs: counted, not kept ----------------------------------------------
const logCounts = new Map<string, number>();
const errorLines: string[] = [];
let recoveredAtRestart = 0;
const logs = new Writable({
  write(chunk: Buffer, _enc, done) {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line) continue;
      try {
        const entry = JSON.parse(line) as { msg?: string; level?: number; recovered?: number };
        const msg = entry.msg ?? '';
        if (msg === 'jobs recovered from the last run') recoveredAtRestart += entry.recovered ?? 0;
        logCounts.set(msg, (logCounts.get(msg) ?? 0) + 1);
        if ((entry.level ?? 0) >= 50 && errorLines.length < 20) errorLines.push(line.slice(0, 400));
      } catch {
        /* not JSON */
      }
    }
    done();
  },
});
let unhandled = 0;
process.on('unhandledRejection', (reason) => {
  unhandled++;
  say(`unhandled rejection: ${String(reason)}`);
});

// --- jobs as the users see them -------------------------------------------------------
interface SoakJob {
  n: number;
  user: string;
  prompt: string;
  responseUrl: string;
  images: number;
  /** Final failure texts on its response_url. */
  failures: string[];
}

const PROGRESS = /^(Queued|Warming up the GPU|Generating your image|Done: |The bot is restarting\. Your job is kept)/;
const isFinalFailure = (text: string) => !PROGRESS.test(text);

async function main(): Promise<number> {
  const slack = await startSlackStandin();
  const fair = await startFairStandin({
    email: 'admin@example.com',
    password: 'soak-password-s3cret',
    coldStartMs: 200,
    diffusion: { generationMs: 40, imageFor },
  });
  const dir = tempDir('fairbot-soak-');
  const env = fairEnv(fair, await freePort(), dir.path, {
    FAIR_PASSWORD: 'soak-password-s3cret',
    SLACK_BOT_TOKEN: slack.botToken,
    SLACK_SIGNING_SECRET: slack.signingSecret,
    SLACK_API_URL: slack.apiUrl,
    SLACK_PORT: '0',
    LOG_LEVEL: 'info',
    QUEUE_CONCURRENCY: '2',
    QUEUE_MAX: '200',
    USER_MAX_PENDING: String(USER_MAX_PENDING),
    INFER_TIMEOUT_S: '1',
    STARTUP_TIMEOUT_S: '30',
    IDLE_SHUTDOWN_MIN: '0',
  });
  const start = () => startApp({ env, logDestination: logs, timing: FAST_TIMING });
  let app: RunningApp = await start();
  let eventsUrl = `http://127.0.0.1:${app.slack!.port}/slack/events`;

  // --- faults at the diffusion server ---------------------------------------------------
  const diffusions: DiffusionStandin[] = [];
  const faultsTaken = new Map<string, number>();
  let crashRequested = false;
  let crashPending = false;
  const hook = (d: DiffusionStandin) => {
    diffusions.push(d);
    let armed = false;
    d.events.on('infer-start', (rec: InferRecord) => {
      if (!rec.fault) return;
      armed = false;
      if (rec.fault === 'crash') crashPending = false;
      faultsTaken.set(rec.fault, (faultsTaken.get(rec.fault) ?? 0) + 1);
    });
    d.events.on('infer-end', () => {
      if (armed || crashPending || random() >= FAULT_RATE) return;
      d.setFault(FAULT_KINDS[Math.floor(random() * FAULT_KINDS.length)]!, { times: 1 });
      armed = true;
    });
  };
  fair.events.on('diffusion-listening', hook);

  // --- watching what users see --------------------------------------------------------
  const jobs: SoakJob[] = [];
  const byPrompt = new Map<string, SoakJob>();
  const byUrl = new Map<string, SoakJob>();
  const users = Array.from({ length: USERS }, (_, i) => `U0SOAK${String(i).padStart(2, '0')}`);
  const unattributedFailures = new Map<string, number>(); // ephemerals: not tied to one job
  const strayImages: string[] = [];
  const wrongBytes: string[] = [];
  const refusals: string[] = [];
  const storageRefusals = new Map<string, number>();
  let seenShares = 0;
  let seenPosts = 0;
  let seenEphemerals = 0;
  const scan = () => {
    const shares = slack.fileShares;
    for (; seenShares < shares.length; seenShares++) {
      const share = shares[seenShares]!;
      const caption = renderSlackMessage({ text: share.initialComment, blocks: share.blocks }).text;
      const prompt = /^"(.*)" \(asked by @U0SOAK\d\d\)$/s.exec(caption)?.[1];
      const job = prompt === undefined ? undefined : byPrompt.get(prompt);
      if (job) job.images++;
      else strayImages.push(caption);
      // Exactly the server's bytes; then the stand-in lets go of them, so RSS shows the bot's memory.
      if (job && !(share.files.length === 1 && share.files[0]!.bytes.equals(imageFor(job.prompt)))) wrongBytes.push(job.prompt);
      for (const f of share.files) {
        slack.uploads.delete(f.id);
        f.bytes = Buffer.alloc(0);
      }
    }
    const posts = slack.responseUrlPosts;
    for (; seenPosts < posts.length; seenPosts++) {
      const post = posts[seenPosts]!;
      const text = typeof post.body.text === 'string' ? post.body.text : '';
      const job = byUrl.get(post.url);
      if (post.accepted && job && text && isFinalFailure(text)) job.failures.push(text);
    }
    const ephemerals = slack.ephemerals;
    for (; seenEphemerals < ephemerals.length; seenEphemerals++) {
      const e = ephemerals[seenEphemerals]!;
      if (e.text && isFinalFailure(e.text)) unattributedFailures.set(e.user, (unattributedFailures.get(e.user) ?? 0) + 1);
    }
  };
  const outcomesOf = (user: string) =>
    jobs.filter((j) => j.user === user).reduce((sum, j) => sum + j.images + j.failures.length, 0) + (unattributedFailures.get(user) ?? 0);
  const totalOutcomes = () => users.reduce((sum, u) => sum + Math.min(outcomesOf(u), jobs.filter((j) => j.user === u).length), 0);

  // --- RSS --------------------------------------------------------------------------------
  const samples: Array<{ at: string; outcomes: number; rssMb: number; heapMb: number; buffersMb: number }> = [];
  const sample = (label?: string) => {
    const m = process.memoryUsage();
    const s = { at: label ?? elapsed(), outcomes: totalOutcomes(), rssMb: m.rss / MB, heapMb: m.heapUsed / MB, buffersMb: m.arrayBuffers / MB };
    samples.push(s);
    return s;
  };
  /** A sample after full collections; backing stores of freed Buffers go on the turns after a GC. */
  const settledSample = async (label: string) => {
    for (let i = 0; i < 4; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    return sample(label);
  };
  let warm: ReturnType<typeof sample> | undefined;
  let harnessAtWarmMb = 0;
  /** Image bytes the stand-ins still hold (released once checked), to tell them from the bot's memory. */
  const harnessMb = () => [...slack.uploads.values()].reduce((sum, b) => sum + b.length, 0) / MB;

  // --- the users ----------------------------------------------------------------------------
  let submitted = 0;
  let paused = false;
  let sending = 0;
  const deadline = Date.now() + DEADLINE_MS;
  const tick = () => new Promise((r) => setTimeout(r, 10));

  const userLoop = async (user: string) => {
    while (submitted < JOBS && Date.now() < deadline) {
      const mine = jobs.filter((j) => j.user === user).length;
      if (paused || mine - outcomesOf(user) >= USER_MAX_PENDING) {
        await tick();
        continue;
      }
      const n = ++submitted;
      const job: SoakJob = { n, user, prompt: `soak job ${n} for ${user}`, responseUrl: '', images: 0, failures: [] };
      job.responseUrl = slack.newResponseUrl({ userId: user, channelId: slack.channelId });
      jobs.push(job);
      byPrompt.set(job.prompt, job);
      byUrl.set(job.responseUrl, job);
      sending++;
      try {
        const res = await slack.sendSlashCommand(eventsUrl, { command: '/imagine', text: job.prompt, user_id: user, response_url: job.responseUrl });
        if (res.status === 200 && res.text && STORAGE_REFUSALS.includes(res.text)) {
          storageRefusals.set(res.text, (storageRefusals.get(res.text) ?? 0) + 1);
          job.failures.push(res.text);
        } else if (res.status !== 200 || !res.text || !/^(Queued|Warming up the GPU)/.test(res.text)) {
          refusals.push(`${job.prompt}: HTTP ${res.status} ${res.text ?? ''}`);
          job.failures.push(`refused: ${res.text ?? res.status}`);
        }
      } catch (error) {
        refusals.push(`${job.prompt}: ${String(error)}`);
        job.failures.push('not delivered to the bot');
      } finally {
        sending--;
      }
      // A little think time between a user's commands, so they arrive spread out.
      await new Promise((r) => setTimeout(r, Math.floor(random() * 50)));
    }
  };

  const scanner = setInterval(scan, 25);
  const sampler = setInterval(() => sample(), 1_000);
  const users$ = users.map(userLoop);
  say(`seed ${seed}: ${JOBS} jobs from ${USERS} users, ${FAULT_RATE * 100}% generation faults, crash after ${CRASH_AFTER}, restart after ${RESTART_AFTER}`);

  // --- storage faults ---------------------------------------------------------------------
  const limitFileSize = (limit: string) => execFileSync('prlimit', ['--pid', String(process.pid), `--fsize=${limit}:`]);
  let diskFilled = false;
  let lockHeld = false;
  let secondBot: string | undefined;
  const fillDisk = () => {
    diskFilled = true;
    say(`disk full for ${STORAGE_FAULT_MS / 1000} s (no file may grow past 16 KiB)`);
    heldOutput = [];
    limitFileSize('16384');
    setTimeout(() => {
      limitFileSize('unlimited');
      const held = heldOutput ?? [];
      heldOutput = undefined;
      for (const line of held) process.stderr.write(line);
      say('disk space back');
    }, STORAGE_FAULT_MS);
  };
  const holdLock = () => {
    lockHeld = true;
    const db = new Database(join(dir.path, 'fairbot.db'));
    keepSqliteObjects(db); // Node 24: never garbage (src/storage/sqlite.ts)
    db.exec('BEGIN IMMEDIATE');
    say(`another process holds fairbot.db's write lock for ${STORAGE_FAULT_MS / 1000} s`);
    setTimeout(() => {
      db.exec('ROLLBACK');
      db.close();
      say('lock released');
    }, STORAGE_FAULT_MS);
  };
  const startSecondBot = async () => {
    const second = await startApp({ env, logDestination: logs, timing: FAST_TIMING }).then(
      async (started) => {
        await started.stop(0);
        return 'it started';
      },
      (error: unknown) => `${(error as Error).name}: ${(error as Error).message}`,
    );
    say(`second bot on the same DATA_DIR: ${second}`);
    return second;
  };

  let restarted = false;
  let lastReport = 0;
  while (Date.now() < deadline) {
    scan();
    const done = totalOutcomes();
    if (done - lastReport >= 50) {
      lastReport = done - (done % 50);
      const m = process.memoryUsage();
      say(
        `${done} outcomes, ${submitted} submitted, RSS ${(m.rss / MB).toFixed(0)} MB, heap ${(m.heapUsed / MB).toFixed(0)} MB, Buffers ${(m.arrayBuffers / MB).toFixed(0)} MB`,
      );
    }
    if (!warm && done >= WARMUP_AFTER) {
      warm = await settledSample('warm-up');
      harnessAtWarmMb = harnessMb();
    }
    if (!crashRequested && done >= CRASH_AFTER) {
      const live = fair.diffusion();
      if (live) {
        crashRequested = true;
        crashPending = true;
        live.setFault('crash', { times: 1 });
        say('GPU server: the next generation crashes it');
      }
    }
    if (!diskFilled && done >= DISK_FULL_AFTER) fillDisk();
    if (!lockHeld && done >= LOCK_AFTER) holdLock();
    if (secondBot === undefined && done >= SECOND_BOT_AFTER) secondBot = await startSecondBot();
    if (!restarted && done >= RESTART_AFTER) {
      restarted = true;
      paused = true;
      while (sending > 0) await tick();
      say('bot restart: app.stop() (the SIGTERM path), then startApp on the same DATA_DIR');
      await app.stop();
      app = await start();
      eventsUrl = `http://127.0.0.1:${app.slack!.port}/slack/events`;
      paused = false;
    }
    if (submitted >= JOBS && done >= JOBS) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(users$);
  // Let whatever is still under way settle through the SIGTERM path, then count.
  await app.stop();
  clearInterval(scanner);
  clearInterval(sampler);
  scan();
  const end = await settledSample('end');
  // For finding what holds memory: SOAK_HEAPSNAPSHOT=/tmp/soak.heapsnapshot npm run soak
  if (process.env.SOAK_HEAPSNAPSHOT) say(`heap snapshot: ${writeHeapSnapshot(process.env.SOAK_HEAPSNAPSHOT)}`);
  const harnessEndMb = harnessMb();

  // --- invariants --------------------------------------------------------------------------
  const failures: string[] = [];
  const check = (ok: boolean, what: string) => {
    if (!ok) failures.push(what);
  };
  const outcomes = jobs.map((j) => j.images + j.failures.length);
  const noOutcomeJobs = jobs.filter((j) => j.images + j.failures.length === 0);
  const twoOutcomeJobs = jobs.filter((j) => j.images + j.failures.length > 1);
  const unattributedTotal = [...unattributedFailures.values()].reduce((a, b) => a + b, 0);
  const perUserMismatch = users.filter((u) => outcomesOf(u) !== jobs.filter((j) => j.user === u).length);
  const imagesTwice = jobs.filter((j) => j.images > 1);
  const imageJobs = jobs.filter((j) => j.images === 1);
  const rows = recordedJobs(dir.path);
  const unfinished = rows.filter((r) => !['delivered', 'failed', 'cancelled'].includes(r.state));
  const delivered = rows.filter((r) => r.state === 'delivered').length;
  const infers = diffusions.reduce((sum, d) => sum + d.infers.length, 0);
  const faulted = [...faultsTaken.values()].reduce((a, b) => a + b, 0);
  const refusedPosts = slack.responseUrlPosts.filter((p) => !p.accepted).length;

  check(submitted === JOBS, `${submitted} jobs submitted, ${JOBS} planned`);
  check(refusals.length === 0, `${refusals.length} commands refused or lost at the door: ${refusals.slice(0, 3).join(' | ')}`);
  check(
    noOutcomeJobs.length <= unattributedTotal && perUserMismatch.length === 0,
    `${noOutcomeJobs.length} jobs without an outcome (users with a mismatch: ${perUserMismatch.slice(0, 5).join(', ')})`,
  );
  check(
    twoOutcomeJobs.length === 0,
    `${twoOutcomeJobs.length} jobs with more than one outcome: ${twoOutcomeJobs
      .slice(0, 3)
      .map((j) => j.prompt)
      .join(' | ')}`,
  );
  check(imagesTwice.length === 0, `${imagesTwice.length} images posted twice`);
  check(strayImages.length === 0, `${strayImages.length} images nobody asked for`);
  check(wrongBytes.length === 0, `${wrongBytes.length} images whose bytes differ from the server's`);
  check(
    unfinished.length === 0,
    `${unfinished.length} jobs left unfinished in DATA_DIR (${unfinished
      .slice(0, 3)
      .map((r) => r.state)
      .join(', ')})`,
  );
  check(delivered === imageJobs.length, `DATA_DIR says ${delivered} delivered, the channel shows ${imageJobs.length} images`);
  check(unhandled === 0, `${unhandled} unhandled rejections`);
  check((faultsTaken.get('crash') ?? 0) === 1, `the GPU server crash happened ${faultsTaken.get('crash') ?? 0} times`);
  check(restarted, 'the bot restart did not happen');
  check(diskFilled && lockHeld, 'the storage faults did not all happen');
  check(secondBot?.startsWith('DataDirRefusal: DATA_DIR ') === true, `the second bot on the same DATA_DIR was not refused: ${secondBot ?? 'never tried'}`);
  const rssGrowthMb = warm ? end.rssMb - warm.rssMb : NaN;
  const harnessGrowthMb = harnessEndMb - harnessAtWarmMb;
  check(
    warm !== undefined && rssGrowthMb <= harnessGrowthMb + RSS_TOLERANCE_MB,
    `RSS grew ${rssGrowthMb.toFixed(1)} MB after warm-up (stand-ins kept ${harnessGrowthMb.toFixed(1)} MB of images; tolerance ${RSS_TOLERANCE_MB} MB beyond that)`,
  );
  check(
    warm !== undefined && end.heapMb - warm.heapMb <= HEAP_TOLERANCE_MB,
    `the JS heap grew ${(end.heapMb - (warm?.heapMb ?? 0)).toFixed(1)} MB after warm-up (tolerance ${HEAP_TOLERANCE_MB} MB)`,
  );
  check(
    warm !== undefined && end.buffersMb - warm.buffersMb <= harnessGrowthMb + BUFFERS_TOLERANCE_MB,
    `Buffers grew ${(end.buffersMb - (warm?.buffersMb ?? 0)).toFixed(1)} MB after warm-up (tolerance ${BUFFERS_TOLERANCE_MB} MB)`,
  );

  // --- report ----------------------------------------------------------------------------------
  const failureKinds = new Map<string, number>();
  for (const j of jobs)
    for (const f of j.failures) {
      const kind = f.replace(/\d+/g, 'N').slice(0, 90);
      failureKinds.set(kind, (failureKinds.get(kind) ?? 0) + 1);
    }
  const line = (k: string, v: unknown) => console.log(`${k.padEnd(44)} ${String(v)}`);
  console.log(`\nfairbot soak (seed ${seed}, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  line('jobs submitted / users', `${submitted} / ${USERS} (USER_MAX_PENDING ${USER_MAX_PENDING}, QUEUE_MAX raised to 200)`);
  line('jobs with exactly one outcome', outcomes.filter((o) => o === 1).length);
  line('  of which: image in the channel', imageJobs.length);
  line('  of which: error message on its response_url', jobs.filter((j) => j.images === 0 && j.failures.length === 1).length);
  line('jobs without an attributed outcome', `${noOutcomeJobs.length} (error ephemerals not tied to a job: ${unattributedTotal})`);
  line('jobs with more than one outcome', twoOutcomeJobs.length);
  line('images posted twice', imagesTwice.length);
  line("images with bytes not the server's", wrongBytes.length);
  line('images nobody asked for', strayImages.length);
  line('DATA_DIR: delivered / failed / unfinished', `${delivered} / ${rows.filter((r) => r.state === 'failed').length} / ${unfinished.length}`);
  line('generations (POST /infer) / with a fault', `${infers} / ${faulted} (${((faulted / Math.max(1, infers)) * 100).toFixed(1)}%)`);
  line(
    'faults taken',
    [...faultsTaken.entries()]
      .sort()
      .map(([k, v]) => `${k}:${v}`)
      .join(' '),
  );
  line('start programs sent to Fair', fair.startPrograms());
  line('bot restarts / jobs it took over from DATA_DIR', `${restarted ? 1 : 0} / ${recoveredAtRestart}`);
  line('response_url posts refused by Slack', refusedPosts);
  line('commands refused by storage faults', [...storageRefusals.entries()].map(([text, n]) => `${n} "${text.slice(0, 50)}..."`).join(', ') || 0);
  line(
    'bot log: writes it could not record',
    [...logCounts.entries()].filter(([m]) => m.startsWith('could not record')).reduce((a, [, n]) => a + n, 0),
  );
  line('second bot on the same DATA_DIR', secondBot ?? 'never tried');
  line('unhandled rejections', unhandled);
  line('bot log: job delivered / job failed', `${logCounts.get('job delivered') ?? 0} / ${logCounts.get('job failed') ?? 0}`);
  line('bot log lines at level error', errorLines.length);
  line(
    'RSS after GC: warm-up -> end (MB)',
    warm ? `${warm.rssMb.toFixed(1)} -> ${end.rssMb.toFixed(1)} (${rssGrowthMb >= 0 ? '+' : ''}${rssGrowthMb.toFixed(1)})` : 'no warm-up sample',
  );
  line('heap after GC: warm-up -> end (MB)', warm ? `${warm.heapMb.toFixed(1)} -> ${end.heapMb.toFixed(1)}` : '-');
  line('Buffers after GC: warm-up -> end (MB)', warm ? `${warm.buffersMb.toFixed(1)} -> ${end.buffersMb.toFixed(1)}` : '-');
  line('kept by the stand-ins since warm-up (MB)', harnessGrowthMb.toFixed(1));
  line('tolerances RSS / heap / Buffers (MB)', `${RSS_TOLERANCE_MB} / ${HEAP_TOLERANCE_MB} / ${BUFFERS_TOLERANCE_MB}`);
  line('RSS max during the run (MB)', Math.max(...samples.map((s) => s.rssMb)).toFixed(1));
  console.log('\nfailure messages users read:');
  for (const [kind, count] of [...failureKinds.entries()].sort((a, b) => b[1] - a[1])) console.log(`  ${String(count).padStart(4)}  ${kind}`);
  if (errorLines.length) {
    console.log('\nbot error log lines (first ones):');
    for (const l of errorLines.slice(0, 5)) console.log(`  ${l}`);
  }
  console.log(failures.length === 0 ? '\nall invariants hold' : `\nINVARIANTS FAILED:\n  ${failures.join('\n  ')}`);

  await slack.close();
  await fair.close();
  dir.remove();
  return failures.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(2);
  },
);
