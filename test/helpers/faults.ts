/**
 * Fault helpers for test/faults.test.ts, test/hostile.test.ts and test/sigterm.test.ts:
 *  - a forwarding HTTP proxy that answers chosen requests itself (a 429 with
 *    retry_after in Discord's shape, ...) and records what went through;
 *  - the whole bot (startApp) on Discord with its REST traffic through that proxy;
 *  - small readers for the Slack stand-in and DATA_DIR.
 * The stand-ins themselves are not changed: the proxy sits in front of them.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { keepSqliteObjects } from '../../src/storage/sqlite.js';
import { startApp, type RunningApp } from '../../src/app.js';
import { startDiscordStandin, type DiscordStandin, type DiscordStandinOptions } from '../standins/discord.js';
import { freePort, startFairStandin, type FairOptions, type FairStandin } from '../standins/fair.js';
import type { SlackStandin } from '../standins/slack.js';
import { FAIR_EMAIL, FAIR_PASSWORD, FAST_TIMING, fairEnv, LogCapture, tempDir } from './app.js';
import { scanDiscord } from './discordApp.js';
import { captionOf } from './slack.js';
import { pngForPrompt } from '../standins/png.js';

export interface ProxiedRequest {
  method: string;
  path: string;
  contentType: string;
  /** The status the client got: injected, or the target's. */
  status: number;
  injected: boolean;
  at: number;
}

export interface InjectedAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

/** Decides, per request, whether the proxy answers it itself. */
export type FaultRule = (req: IncomingMessage) => InjectedAnswer | undefined;

export interface FaultProxy {
  /** `http://127.0.0.1:<port>`: paths are forwarded unchanged to the target. */
  url: string;
  requests: ProxiedRequest[];
  /** Answers the next `times` requests matching `match` with `answer` (in order of arrival). */
  inject(match: (req: IncomingMessage) => boolean, answer: InjectedAnswer, times?: number): void;
  /**
   * Holds the next `times` requests matching `match`: never answered (a call cut off by a
   * crash). With `forward`, the target gets the request and answers; the answer is not relayed.
   */
  hold(match: (req: IncomingMessage) => boolean, times?: number, opts?: { forward?: boolean }): void;
  close(): Promise<void>;
}

/** A forwarding proxy in front of `target` (an http base URL), with injectable answers. */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const requests: ProxiedRequest[] = [];
  const rules: Array<{ match: (req: IncomingMessage) => boolean; answer: InjectedAnswer; left: number }> = [];
  const holds: Array<{ match: (req: IncomingMessage) => boolean; left: number; forward: boolean }> = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const record: ProxiedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      contentType: String(req.headers['content-type'] ?? ''),
      status: 0,
      injected: false,
      at: Date.now(),
    };
    requests.push(record);
    const held = holds.find((h) => h.left > 0 && h.match(req));
    if (held) {
      held.left--;
      record.injected = true;
      if (!held.forward) {
        req.resume();
        return;
      }
      const upstream = request(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (answer) => {
        record.status = answer.statusCode ?? 0;
        answer.resume();
      });
      upstream.on('error', () => undefined);
      req.pipe(upstream);
      return;
    }
    const rule = rules.find((r) => r.left > 0 && r.match(req));
    if (rule) {
      rule.left--;
      record.injected = true;
      record.status = rule.answer.status;
      req.resume();
      req.on('end', () => {
        const text = rule.answer.body === undefined ? '' : JSON.stringify(rule.answer.body);
        res.writeHead(rule.answer.status, {
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(text)),
          ...rule.answer.headers,
        });
        res.end(text);
      });
      return;
    }
    const upstream = request(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (answer) => {
      record.status = answer.statusCode ?? 0;
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    inject(match, answer, times = 1) {
      rules.push({ match, answer, left: times });
    },
    hold(match, times = 1, opts = {}) {
      holds.push({ match, left: times, forward: opts.forward ?? false });
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Discord's answer to a rate-limited call: HTTP 429, `Retry-After` (s) and `retry_after` in the body. */
export function discordRateLimit(retryAfterS: number): InjectedAnswer {
  return {
    status: 429,
    headers: { 'retry-after': String(retryAfterS), 'x-ratelimit-scope': 'user' },
    body: { message: 'You are being rate limited.', retry_after: retryAfterS, global: false, code: 0 },
  };
}

export interface ProxiedDiscordRig {
  discord: DiscordStandin;
  proxy: FaultProxy;
  fair: FairStandin;
  app: RunningApp;
  logs: LogCapture;
  close(): Promise<void>;
}

/**
 * The bot as `npm start` runs it on Discord, with every REST call going through a
 * fault proxy in front of the Discord stand-in (the gateway, discovered through
 * `GET /gateway/bot`, is reached directly).
 */
export async function startProxiedDiscordRig(
  opts: { discord?: DiscordStandinOptions; fair?: FairOptions; env?: Record<string, string> } = {},
): Promise<ProxiedDiscordRig> {
  const discord = await startDiscordStandin(opts.discord);
  const base = discord.apiUrl.replace(/\/api$/, '');
  const proxy = await startFaultProxy(base);
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, ...opts.fair });
  const dir = tempDir('fairbot-faults-');
  const env = fairEnv(fair, await freePort(), dir.path, {
    DISCORD_TOKEN: discord.token,
    DISCORD_API_URL: `${proxy.url}/api`,
    DISCORD_GUILD_ID: discord.guildId,
    ...opts.env,
  });
  const logs = new LogCapture();
  const closeStandins = async () => {
    scanDiscord(discord);
    await proxy.close();
    await discord.close();
    await fair.close();
    dir.remove();
  };
  let app: RunningApp;
  try {
    app = await startApp({ env, logDestination: logs, timing: FAST_TIMING });
  } catch (error) {
    await closeStandins();
    throw error;
  }
  return {
    discord,
    proxy,
    fair,
    app,
    logs,
    async close() {
      await app.stop(0);
      await closeStandins();
    },
  };
}

/** The last message a Slack user sees (ephemeral status or outcome), if any. */
export function lastSlackText(slack: SlackStandin, userId: string): string | undefined {
  return slack.userView(userId).at(-1)?.text;
}

/** The images in the channel, by the prompt they were generated for. */
export function imagesByPrompt(slack: SlackStandin, prompts: string[]): Record<string, number> {
  const count: Record<string, number> = {};
  for (const share of slack.channelFiles()) {
    const prompt = prompts.find((p) => share.files[0]!.bytes.equals(pngForPrompt(p)));
    const key = prompt ?? `unknown: ${captionOf(share).text}`;
    count[key] = (count[key] ?? 0) + 1;
  }
  return count;
}

/** Every job row in DATA_DIR (read-only, beside a running bot: SQLite WAL allows it). */
export function recordedJobs(dataDir: string): Array<{ id: string; user_id: string; prompt: string; state: string }> {
  const db = new Database(join(dataDir, 'fairbot.db'), { readonly: true, fileMustExist: true });
  const select = db.prepare('SELECT id, user_id, prompt, state FROM jobs ORDER BY seq');
  // Never garbage: Node 24 aborts when better-sqlite3 12 objects are collected (src/jobs/store.ts).
  keepSqliteObjects(db, select);
  try {
    return select.all() as Array<{
      id: string;
      user_id: string;
      prompt: string;
      state: string;
    }>;
  } finally {
    db.close();
  }
}
