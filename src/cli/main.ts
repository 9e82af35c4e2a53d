#!/usr/bin/env node
import { constants, readFileSync, realpathSync } from 'node:fs';
import { access, open, rm, stat, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { userInfo } from 'node:os';
import { parseArgs } from 'node:util';
import { createServices } from '../app.js';
import { loadConfig, requireGpu } from '../config.js';
import { gpu } from '../commands/gpu.js';
import { imagine } from '../commands/imagine.js';
import { exitOnConfigError, loadDotEnv } from '../env.js';
import type { JobEvent } from '../jobs/types.js';
import { inTerminalWords, messages } from '../messages.js';
import type { Services } from '../services.js';

const USAGE = `Usage:
  fairbot imagine "<prompt>" [--out FILE]   generate one image (default file ./<job id>.png)
  fairbot gpu status                        show the GPU server
  fairbot gpu kill                          stop the GPU server
  fairbot register-commands                 register the Discord slash commands
  fairbot --help | --version
Configuration comes from the environment and ./.env (see .env.example).
Progress goes to stderr, the image's file name to stdout. Exit codes: 0 done,
1 the command failed, 2 a usage or configuration error.`;

/** Exit codes: a usage or configuration error is 2, as for the bot (see env.ts). */
const FAILED = 1;
const USAGE_ERROR = 2;

export interface CliIo {
  env: Record<string, string | undefined>;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

function parseCliArgs(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      options: {
        out: { type: 'string', short: 'o' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}

/** Runs one CLI command and returns its exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const usageError = (problem: string) => {
    io.stderr.write(`fairbot: ${problem}\n${USAGE}\n`);
    return USAGE_ERROR;
  };
  const parsed = parseCliArgs(argv);
  // An unknown or incomplete flag is a mistake worth saying, not something to ignore.
  if (parsed instanceof Error) return usageError(parsed.message);
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (values.help) {
    io.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.version) {
    io.stdout.write(`fairbot ${packageVersion()}\n`);
    return 0;
  }
  if (!command) return usageError('no command given');
  if (command !== 'imagine' && command !== 'gpu' && command !== 'register-commands') return usageError(`unknown command "${command}"`);
  const subcommand = rest.join(' ').trim();
  if (command === 'gpu' && subcommand !== 'status' && subcommand !== 'kill') {
    return usageError(inTerminalWords(subcommand ? messages.gpuUnknownSubcommand(subcommand) : messages.gpuUsage));
  }
  if (command === 'imagine' && rest.length === 0) return usageError('imagine needs a prompt, e.g. fairbot imagine "a red fox"');

  const config = loadConfig(io.env);
  if (command === 'register-commands') {
    // Loaded only for this command: imagine and gpu never load discord.js.
    const { registerCommands } = await import('../bots/discord/index.js');
    io.stdout.write(`${await registerCommands(config)}\n`);
    return 0;
  }
  requireGpu(config);
  const out = typeof values.out === 'string' ? values.out : undefined;
  if (command === 'imagine') {
    // Before any GPU is started for it: the image must have somewhere to go.
    const unwritable = await cannotWrite(out);
    if (unwritable) {
      io.stderr.write(`fairbot: cannot write ${out ?? 'the image to this directory'} (${unwritable}); nothing was generated\n`);
      return FAILED;
    }
  }
  // A terminal gets human lines only; pino's JSON lines (on stderr, with the progress)
  // when LOG_LEVEL is set explicitly.
  const logLevel = io.env.LOG_LEVEL?.trim() ? config.logLevel : 'silent';
  const services = createServices({ ...config, logLevel }, { logDestination: io.stderr });
  try {
    if (command === 'gpu') {
      // A server started by an earlier run is reported (and stopped) from its record.
      await services.lifecycle.recover().catch(() => undefined);
      const result = await gpu({ requester: { platform: 'cli', userId: cliUser() }, subcommand, confirmed: true }, services);
      (result.ok ? io.stdout : io.stderr).write(`${inTerminalWords(result.message)}\n`);
      return result.ok ? 0 : FAILED;
    }
    return await imagineToFile(rest.join(' '), out, services, io);
  } finally {
    await services.lifecycle.close();
    await services.inference.close();
  }
}

/**
 * Why the image could not be written to `out` (or, without --out, to the current
 * directory), or undefined when it can: the file is opened for appending, as the real
 * write will open it, and removed again if it did not exist.
 */
async function cannotWrite(out: string | undefined): Promise<string | undefined> {
  try {
    if (out === undefined) {
      await access('.', constants.W_OK);
      return undefined;
    }
    const existed = await stat(out).then(
      () => true,
      () => false,
    );
    await (await open(out, 'a')).close();
    if (!existed) await rm(out);
    return undefined;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? String(error);
  }
}

async function imagineToFile(prompt: string, out: string | undefined, services: Services, io: CliIo): Promise<number> {
  await services.lifecycle.recover().catch(() => undefined);
  const result = imagine({ requester: { platform: 'cli', userId: cliUser() }, prompt }, services);
  if (!result.ok) {
    io.stderr.write(`fairbot: ${inTerminalWords(result.message)}\n`);
    return FAILED;
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
    io.stderr.write(`fairbot: ${inTerminalWords(final.message)}\n`);
    return FAILED;
  }
  const file = out ?? `./${job.id}.${final.image.extension}`;
  try {
    await writeFile(file, final.image.bytes);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    services.jobs.deliveryFailed(job.id, reason);
    io.stderr.write(`fairbot: ${messages.deliveryFailed(`cannot write ${file} (${reason})`)}\n`);
    return FAILED;
  }
  services.jobs.delivered(job.id);
  io.stderr.write(`[${job.id}] Wrote ${file} (${final.image.bytes.length} bytes, ${(final.generationMs / 1000).toFixed(1)} s to generate)\n`);
  if (services.lifecycle.managed && services.lifecycle.state === 'ready') {
    io.stderr.write(`[${job.id}] The GPU server stays up for the next image; "fairbot gpu kill" stops it.\n`);
  }
  io.stdout.write(`${file}\n`);
  return 0;
}

/** package.json's version: the file is two levels up from both src/cli and dist/cli. */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
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
