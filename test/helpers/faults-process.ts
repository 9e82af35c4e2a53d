/**
 * The bot as a real process (by default `node --import tsx src/main.ts`, what `npm start`
 * runs from source; test/docker-cmd.test.ts runs the Dockerfile's CMD instead), for
 * test/sigterm.test.ts: its JSON log lines on stdout are read as they come, and its exit
 * is awaited with a deadline.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../standins/fair.js';
import { startSlackStandin, type SlackStandin } from '../standins/slack.js';
import { fairEnv, FAIR_EMAIL, FAIR_PASSWORD, tempDir } from './app.js';
import { recordOutput } from './secret-scan.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface BotProcess {
  child: ChildProcess;
  /** Log lines parsed as JSON, in order. */
  entries: Array<Record<string, unknown>>;
  stderr(): string;
  /** Resolves with the first log entry matching `predicate` (already seen or to come). */
  waitForLog(predicate: (entry: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>>;
  /** Resolves with the exit code and signal, or rejects after the deadline. */
  exit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running (cleanup after a failed test). */
  kill(): void;
}

export interface BotCommand {
  /** The program and its arguments; `node` is this test's own Node. */
  argv: string[];
  cwd: string;
}

const FROM_SOURCE: BotCommand = { argv: ['node', '--import', 'tsx', 'src/main.ts'], cwd: ROOT };

export function spawnBot(env: Record<string, string>, command: BotCommand = FROM_SOURCE): BotProcess {
  const [program, ...args] = command.argv;
  const child = spawn(program === 'node' ? process.execPath : program!, args, {
    cwd: command.cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const entries: Array<Record<string, unknown>> = [];
  const seen = new EventEmitter();
  let partial = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString('utf8');
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines.filter(Boolean)) {
      recordOutput('log', line);
      try {
        entries.push(JSON.parse(line) as Record<string, unknown>);
        seen.emit('entry');
      } catch {
        /* not a log line */
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
    recordOutput('bot stderr', chunk.toString('utf8'));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });

  return {
    child,
    entries,
    stderr: () => stderr,
    waitForLog(predicate, timeoutMs, what) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = entries.find(predicate);
          if (!found) return false;
          cleanup();
          resolve(found);
          return true;
        };
        const onExit = () => {
          if (check()) return;
          cleanup();
          reject(new Error(`the bot exited before logging ${what}; stderr: ${stderr.slice(-2000)}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for the bot to log ${what}; stderr: ${stderr.slice(-2000)}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          seen.off('entry', check);
          child.off('exit', onExit);
        };
        if (check()) return;
        seen.on('entry', check);
        child.on('exit', onExit);
      });
    },
    exit(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the bot did not exit within ${timeoutMs} ms`)), timeoutMs);
      });
      return Promise.race([exited, deadline]).finally(() => clearTimeout(timer));
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Waits until a bot in Slack HTTP mode has started; returns its events URL. */
export async function slackEventsUrl(bot: BotProcess): Promise<string> {
  const entry = await bot.waitForLog((e) => e.msg === 'Slack adapter listening (HTTP mode)', 30_000, 'the Slack port');
  await bot.waitForLog((e) => e.msg === 'fairbot started', 10_000, 'that it started');
  return `http://127.0.0.1:${String(entry.port)}/slack/events`;
}

/**
 * Sets the bot process's RLIMIT_FSIZE (prlimit(1), no root needed for one's own processes):
 * with a small limit, no file of the bot may grow past it, which is what a full disk does to
 * a writer; 'unlimited' is the space coming back.
 */
export function limitFileSize(bot: BotProcess, bytes: number | 'unlimited'): void {
  // The soft limit only ("N:"): raising it back needs no privilege, unlike the hard one.
  execFileSync('prlimit', ['--pid', String(bot.child.pid), `--fsize=${bytes}:`]);
}

/**
 * The Slack and Fair stand-ins and a DATA_DIR for bot processes in Slack HTTP mode; `defer`
 * gets what closes them. `env` is what spawnBot takes.
 */
export async function slackProcessRig(
  defer: (fn: () => unknown) => void,
  fairOptions: FairOptions,
): Promise<{ slack: SlackStandin; fair: FairStandin; dataDir: string; env: Record<string, string> }> {
  const slack = await startSlackStandin();
  defer(() => slack.close());
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, ...fairOptions });
  defer(() => fair.close());
  const dir = tempDir('fairbot-process-');
  defer(() => dir.remove());
  const env = fairEnv(fair, await freePort(), dir.path, {
    SLACK_BOT_TOKEN: slack.botToken,
    SLACK_SIGNING_SECRET: slack.signingSecret,
    SLACK_API_URL: slack.apiUrl,
    SLACK_PORT: '0',
    LOG_LEVEL: 'info',
  });
  return { slack, fair, dataDir: dir.path, env };
}
