/**
 * The bot as a real process (by default `node --import tsx src/main.ts`, what `npm start`
 * runs from source; test/docker-cmd.test.ts runs the Dockerfile's CMD instead), for
 * test/sigterm.test.ts: its JSON log lines on stdout are read as they come, and its exit
 * is awaited with a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
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
