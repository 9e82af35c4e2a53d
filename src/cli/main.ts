#!/usr/bin/env node
import { realpathSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { createServices } from '../app.js';
import { loadConfig } from '../config.js';
import { gpu } from '../commands/gpu.js';
import { imagine } from '../commands/imagine.js';
import { exitOnConfigError, loadDotEnv } from '../env.js';
import type { JobEvent } from '../jobs/types.js';
import { messages } from '../messages.js';
import type { Services } from '../services.js';

const USAGE = `Usage:
  fairbot imagine "<prompt>" [--out FILE]   generate one image (default file ./<job id>.png)
  fairbot gpu status                        show the GPU server
  fairbot gpu kill                          stop the GPU server
  fairbot register-commands                 register the Discord slash commands
Configuration comes from the environment and ./.env (see .env.example).`;

export interface CliIo {
  env: Record<string, string | undefined>;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** Runs one CLI command and returns its exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { out: { type: 'string', short: 'o' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (error) {
    // An unknown or incomplete flag is a mistake worth saying, not something to ignore.
    io.stderr.write(`fairbot: ${(error as Error).message}\n${USAGE}\n`);
    return 1;
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    io.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 1;
  }
  const config = loadConfig(io.env);
  if (command === 'register-commands') {
    // Loaded only for this command: imagine and gpu never load discord.js.
    const { registerCommands } = await import('../bots/discord/index.js');
    io.stdout.write(`${await registerCommands(config)}\n`);
    return 0;
  }
  if (command !== 'imagine' && command !== 'gpu') {
    io.stderr.write(`fairbot: unknown command "${command}"\n${USAGE}\n`);
    return 1;
  }
  // Logs go to stderr with the progress; stdout stays for results.
  const services = createServices(config, { logDestination: io.stderr });
  try {
    if (command === 'gpu') {
      // A server started by an earlier run is reported (and stopped) from its record.
      await services.lifecycle.recover().catch(() => undefined);
      const result = await gpu({ requester: { platform: 'cli', userId: cliUser() }, subcommand: rest.join(' '), confirmed: true }, services);
      (result.ok ? io.stdout : io.stderr).write(`${result.message}\n`);
      return result.ok ? 0 : 1;
    }
    const out = typeof values.out === 'string' ? values.out : undefined;
    return await imagineToFile(rest.join(' '), out, services, io);
  } finally {
    await services.lifecycle.close();
    await services.inference.close();
  }
}

async function imagineToFile(prompt: string, out: string | undefined, services: Services, io: CliIo): Promise<number> {
  await services.lifecycle.recover().catch(() => undefined);
  const result = imagine({ requester: { platform: 'cli', userId: cliUser() }, prompt }, services);
  if (!result.ok) {
    io.stderr.write(`fairbot: ${result.message}\n`);
    return 1;
  }
  const { job } = result;
  let lastLine = '';
  let lastWarmingReport = -Infinity;
  job.subscribe((event: JobEvent) => {
    if (event.type === 'done' || event.type === 'failed') return;
    // A line per change; while warming, one every 10 s is enough for a terminal.
    if (event.type === 'warming') {
      if (event.elapsedS - lastWarmingReport < 10 && lastLine.startsWith('Warming')) return;
      lastWarmingReport = event.elapsedS;
    }
    const line = messages.progress(event);
    if (line === lastLine) return;
    lastLine = line;
    io.stderr.write(`[${job.id}] ${line}\n`);
  });
  const final = await job.outcome;
  if (final.type === 'failed') {
    io.stderr.write(`fairbot: ${final.message}\n`);
    return 1;
  }
  const file = out ?? `./${job.id}.${final.image.extension}`;
  try {
    await writeFile(file, final.image.bytes);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    services.jobs.deliveryFailed(job.id, reason);
    io.stderr.write(`fairbot: ${messages.deliveryFailed(`cannot write ${file} (${reason})`)}\n`);
    return 1;
  }
  services.jobs.delivered(job.id);
  io.stderr.write(`[${job.id}] Wrote ${file} (${final.image.bytes.length} bytes, ${(final.generationMs / 1000).toFixed(1)} s to generate)\n`);
  if (services.lifecycle.managed && services.lifecycle.state === 'ready') {
    io.stderr.write(`[${job.id}] The GPU server stays up for the next image; "fairbot gpu kill" stops it.\n`);
  }
  io.stdout.write(`${file}\n`);
  return 0;
}

function cliUser(): string {
  try {
    return userInfo().username;
  } catch {
    return 'cli';
  }
}


// Run when executed as the `fairbot` bin (not when imported by tests).
const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpath(process.argv[1])).href;
if (invokedDirectly) {
  loadDotEnv();
  runCli(process.argv.slice(2), { env: process.env, stdout: process.stdout, stderr: process.stderr })
    .catch((error: unknown) => {
      exitOnConfigError(error);
      process.stderr.write(`fairbot: ${error instanceof Error ? error.message : String(error)}\n`);
      return 1;
    })
    .then((code) => process.exit(code));
}

function realpath(path: string): string {
  try {
    // npm's bin is a symlink: compare the real file.
    return realpathSync(path);
  } catch {
    return path;
  }
}
