/**
 * Faults of the bot's own storage, through the real app and adapters against the stand-ins
 * (issue 17): another process holding fairbot.db's write lock, and a database that lost its
 * state. The full disk and a second bot on the same DATA_DIR need real bot processes:
 * test/datadir.test.ts.
 *
 * The lock is what any `sqlite3` shell or backup tool in a transaction holds: a second
 * connection's `BEGIN IMMEDIATE` on DATA_DIR/fairbot.db.
 */
import { copyFileSync, rmSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { startApp } from '../src/app.js';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { messages } from '../src/messages.js';
import { keepSqliteObjects, StorageError } from '../src/storage/sqlite.js';
import { JobStore } from '../src/jobs/store.js';
import { eventually, FAST_TIMING, LogCapture, tempDir } from './helpers/app.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { healthzAnswers, imageInReply, imagine, replyReads, startDiscordRig } from './helpers/discordApp.js';
import { DONE_TEXT, lastSeen, startSlackRig } from './helpers/slack.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();

/** Another process's transaction on fairbot.db: holds the write lock until released. */
function holdWriteLock(dataDir: string): { release(): void } {
  const db = new Database(join(dataDir, 'fairbot.db'));
  keepSqliteObjects(db); // Node 24: never garbage (src/storage/sqlite.ts)
  db.exec('BEGIN IMMEDIATE');
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    db.exec('ROLLBACK');
    db.close();
  };
  cleanup.defer(release);
  return { release };
}

describe('another process holds the write lock on fairbot.db', () => {
  it('Discord: /imagine is deferred within the 3 s (no 10062) and refused in words; /healthz says why; after the release jobs work', async () => {
    const rig = await cleanup.closing(startDiscordRig({ env: { METRICS_PORT: '0' } }));
    const lock = holdWriteLock(rig.dataDir);

    const held = imagine(rig, 'a fox while the database is locked');
    // The deferral reached Discord in time (the stand-in answers 10062 past 3 s), then the refusal.
    await replyReads(rig, held.id, messages.storageBusy);
    const callbacks = rig.discord.callbacks.filter((c) => c.interactionId === held.id);
    expect(callbacks.map((c) => [c.type, c.status])).toEqual([[5, 204]]);
    const health = await healthzAnswers(rig, 503);
    expect(health.text).toContain(join(rig.dataDir, 'fairbot.db'));
    expect(health.text).toContain('another process holds its write lock');

    lock.release();
    await healthzAnswers(rig, 200);
    const after = imagine(rig, 'a fox once the lock is gone');
    const message = await imageInReply(rig, after.id);
    expect(message.attachments[0]!.bytes.equals(pngForPrompt('a fox once the lock is gone'))).toBe(true);
  }, 30_000);

  it('Slack: /imagine is acknowledged within the 3 s whatever the database does, with the refusal; after the release jobs work', async () => {
    const rig = await cleanup.closing(startSlackRig({ socketMode: true }));
    const lock = holdWriteLock(rig.app.services.config.dataDir);

    // The stand-in fails the send when no ack comes within 3 s.
    const held = await rig.slack.sendSocketCommand({ command: '/imagine', text: 'a heron while the database is locked', user_id: 'U0LOCK' });
    expect(held.text).toBe(escapeMrkdwn(messages.storageBusy));

    lock.release();
    await rig.slack.sendSocketCommand({ command: '/imagine', text: 'a heron once the lock is gone', user_id: 'U0LOCK' });
    await rig.slack.waitFor(() => lastSeen(rig.slack, 'U0LOCK')?.text === DONE_TEXT, 15_000, 'the image to be posted');
    expect(rig.slack.channelFiles().map((f) => f.files[0]!.bytes.equals(pngForPrompt('a heron once the lock is gone')))).toEqual([true]);
  }, 30_000);
});

describe('a database that lost its state', () => {
  it('a zero-length fairbot.db: the bot refuses to start, naming the file and what to do, instead of starting with an empty queue', async () => {
    const rig = await cleanup.closing(startDiscordRig());
    await rig.app.stop(0);
    const file = join(rig.dataDir, 'fairbot.db');
    truncateSync(file, 0);

    const started = startApp({ env: rig.env, logDestination: new LogCapture(), timing: FAST_TIMING });
    await expect(started).rejects.toMatchObject({ name: 'DataDirRefusal' });
    const message = (await started.catch((error: Error) => error.message)) as string;
    expect(message).toContain(`${file} has lost its state`);
    expect(message).toContain(`delete ${file}.marker`);
    // rig.close() stops the app again: start one that is fine once the operator chose an empty queue.
    rmSync(`${file}.marker`);
    rig.app = await startApp({ env: rig.env, logDestination: new LogCapture(), timing: FAST_TIMING });
  }, 30_000);
});

describe('the WAL is checkpointed', () => {
  it('recorded jobs reach fairbot.db itself, not only its -wal file (a lost -wal costs at most the last minute)', async () => {
    const dir = tempDir('fairbot-checkpoint-');
    cleanup.defer(() => dir.remove());
    const store = new JobStore(dir.path, { probeMs: 20, checkpointMs: 50 });
    cleanup.defer(() => store.close());
    store.insert('job1', { platform: 'slack', userId: 'U1' }, 'a checkpointed fox', {});

    // fairbot.db copied alone, without its -wal file, as a crash that lost the -wal would leave it.
    const alone = join(dir.path, 'alone.db');
    const promptsIn = (file: string) => {
      copyFileSync(join(dir.path, 'fairbot.db'), file);
      const db = new Database(file, { readonly: true });
      keepSqliteObjects(db);
      try {
        const hasJobs = db.prepare(`SELECT count(*) AS n FROM sqlite_master WHERE name = 'jobs'`);
        keepSqliteObjects(hasJobs);
        if ((hasJobs.get() as { n: number }).n === 0) return [];
        const select = db.prepare('SELECT prompt FROM jobs');
        keepSqliteObjects(select);
        return (select.all() as Array<{ prompt: string }>).map((r) => r.prompt);
      } finally {
        db.close();
      }
    };
    await eventually(() => promptsIn(alone).length === 1, 5_000, 'the job in fairbot.db itself');
    expect(promptsIn(alone)).toEqual(['a checkpointed fox']);
  });
});

describe('storage errors name the file and the cause', () => {
  it('a full disk, a held lock and any other failure, each in words, with the file', () => {
    const cases = [
      [{ code: 'SQLITE_FULL', message: 'database or disk is full' }, 'full', '/data/fairbot.db: the disk is full (SQLITE_FULL: database or disk is full)'],
      [{ code: 'ENOSPC', message: 'no space left on device' }, 'full', '/data/fairbot.db: the disk is full (ENOSPC: no space left on device)'],
      [
        { code: 'SQLITE_BUSY', message: 'database is locked' },
        'busy',
        '/data/fairbot.db: another process holds its write lock (SQLITE_BUSY: database is locked)',
      ],
      [
        { code: 'SQLITE_READONLY', message: 'attempt to write a readonly database' },
        'unwritable',
        '/data/fairbot.db: it cannot be written (SQLITE_READONLY: attempt to write a readonly database)',
      ],
    ] as const;
    for (const [cause, fault, message] of cases) {
      const error = new StorageError('/data/fairbot.db', Object.assign(new Error(cause.message), { code: cause.code }));
      expect([error.fault, error.message]).toEqual([fault, message]);
    }
  });
});
