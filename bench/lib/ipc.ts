// Child processes of the benchmark, driven over IPC, always ended by the benchmark itself.
import { fork, type ChildProcess } from 'node:child_process';
import { within } from './rig.js';

export interface Child {
  proc: ChildProcess;
  /** The next message with this `op` (an `error` message or the child's exit rejects). */
  next<T>(op: string, timeoutMs: number): Promise<T>;
  send(msg: unknown): void;
  /** Asks it to close (if it takes `close`), then kills it after graceMs. */
  end(graceMs?: number): Promise<void>;
}

export function forkChild(file: string, opts: { tsx: boolean; env?: Record<string, string>; execArgv?: string[] }): Child {
  const proc = fork(file, [], {
    execArgv: [...(opts.execArgv ?? []), ...(opts.tsx ? ['--import', 'tsx'] : [])],
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  proc.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
  return {
    proc,
    next<T>(op: string, timeoutMs: number) {
      let cleanup: () => void = () => {};
      return within(
        new Promise<T>((resolve, reject) => {
          const onMessage = (m: { op: string; message?: string }) => {
            if (m.op === op) {
              cleanup();
              resolve(m as T);
            } else if (m.op === 'error') {
              cleanup();
              reject(new Error(`${file}: ${m.message}`));
            }
          };
          const onExit = (code: number | null) => {
            cleanup();
            reject(new Error(`${file} exited ${code}: ${stderr.trim()}`));
          };
          cleanup = () => {
            proc.off('message', onMessage);
            proc.off('exit', onExit);
          };
          proc.on('message', onMessage);
          proc.once('exit', onExit);
        }),
        timeoutMs,
        `${file} (${op})`,
      ).finally(() => cleanup());
    },
    send(msg) {
      if (proc.connected) proc.send(msg as never);
    },
    end(graceMs = 5_000) {
      return new Promise<void>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
        const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        proc.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        if (proc.connected) proc.send({ op: 'close' } as never);
        else proc.kill('SIGTERM');
      });
    },
  };
}
