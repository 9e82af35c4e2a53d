/**
 * Secrets never reach the logs: FAIR_PASSWORD, the chat tokens and the Fair bearer
 * token (which the bot only learns at login), even at LOG_LEVEL=debug and even when a
 * server or an adapter puts them into an error message.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createServices } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import type { Services } from '../src/services.js';
import { FAST_TIMING, FAIR_EMAIL, FAIR_PASSWORD, LogCapture, tempDir } from './helpers/app.js';
import { imageOf, submit } from './helpers/jobs.js';
import { registerSecret } from './helpers/secret-scan.js';
import { freePort, startFairStandin, type FairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const DISCORD_TOKEN = 'MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.discord-token-for-logger-test';
const SLACK_BOT_TOKEN = 'xoxb-1234-5678-slack-token-for-logger-test';
const SLACK_SIGNING_SECRET = 'slack-signing-secret-for-logger-test';
for (const s of [DISCORD_TOKEN, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET]) registerSecret(s);

type Injection = (req: IncomingMessage, tokens: string[]) => { status: number; body: unknown } | undefined;

/**
 * A recording proxy in front of the Fair stand-in: it reads the bearer tokens out of the
 * login answers, and can answer a request itself (a server that echoes what it was sent).
 */
async function startFairProxy(target: FairStandin) {
  const tokens: string[] = [];
  let inject: Injection = () => undefined;
  const server: Server = createServer((req, res) => {
    const injected = inject(req, tokens);
    if (injected) {
      req.resume();
      const text = JSON.stringify(injected.body);
      res.writeHead(injected.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    const upstream = request(`${target.url}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      const chunks: Buffer[] = [];
      answer.on('data', (c: Buffer) => chunks.push(c));
      answer.on('end', () => {
        const body = Buffer.concat(chunks);
        if (req.url === '/api/v0/auth/login' && answer.statusCode === 200) {
          const token = (JSON.parse(body.toString('utf8')) as { token: string }).token;
          tokens.push(token);
          registerSecret(token);
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.end(body);
      });
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    tokens,
    setInjection(fn: Injection) {
      inject = fn;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function botBehindProxy() {
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD });
  cleanups.push(() => fair.close());
  const proxy = await startFairProxy(fair);
  cleanups.push(() => proxy.close());
  const dir = tempDir();
  cleanups.push(() => dir.remove());
  const logs = new LogCapture();
  const config = loadConfig({
    FAIR_SERVER_URL: proxy.url,
    FAIR_EMAIL,
    FAIR_PASSWORD,
    FAIR_PORTS: `${await freePort()}:8080`,
    DATA_DIR: dir.path,
    LOG_LEVEL: 'debug',
    DISCORD_TOKEN,
    SLACK_BOT_TOKEN,
    SLACK_SIGNING_SECRET,
  });
  const services: Services = createServices(config, { logDestination: logs, timing: FAST_TIMING });
  cleanups.push(async () => {
    await services.jobs.shutdown(0);
    await services.lifecycle.close();
    await services.inference.close();
  });
  return { fair, proxy, logs, services };
}

function expectNoSecrets(logs: LogCapture, secrets: string[]) {
  expect(logs.lines.length).toBeGreaterThan(5);
  for (const secret of secrets) {
    expect(secret.length).toBeGreaterThanOrEqual(8);
    expect(logs.text.includes(secret), `a log line contains ${secret.slice(0, 4)}…`).toBe(false);
  }
}

describe('secrets in the logs of a full job run (LOG_LEVEL=debug)', () => {
  it('logs the run at debug level without the password, the chat tokens or the bearer token', async () => {
    const { proxy, logs, services, fair } = await botBehindProxy();
    const job = submit(services, 'a red fox');
    expect((await imageOf(job)).equals(pngForPrompt('a red fox'))).toBe(true);
    fair.expireTokens(); // a re-login: a second token
    await services.lifecycle.kill();
    expect(proxy.tokens).toHaveLength(2);
    expect(logs.entries().some((e) => e.level === 20)).toBe(true); // debug lines are there
    expectNoSecrets(logs, [FAIR_PASSWORD, DISCORD_TOKEN, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, ...proxy.tokens]);
  });

  it('scrubs the password and the bearer token when the control plane echoes them in an error', async () => {
    const { proxy, logs, services } = await botBehindProxy();
    let loginFaults = 1;
    let nodeFaults = 1;
    proxy.setInjection((req, tokens) => {
      if (req.url === '/api/v0/auth/login' && loginFaults-- > 0) {
        return { status: 500, body: { message: `could not verify password ${FAIR_PASSWORD} for ${FAIR_EMAIL}` } };
      }
      if (req.url === '/api/v0/nodes' && tokens.length > 0 && nodeFaults-- > 0) {
        return { status: 503, body: { message: `backend busy, request had ${req.headers.authorization}` } };
      }
      return undefined;
    });
    const job = submit(services, 'through the faults');
    expect((await imageOf(job)).equals(pngForPrompt('through the faults'))).toBe(true);
    expect(proxy.tokens).toHaveLength(1);
    // The faults did happen and were logged, only without the secrets.
    expect(logs.entries().filter((e) => e.msg === 'Fair call failed; retrying')).toHaveLength(2);
    expect(logs.text).toContain('could not verify password [REDACTED]');
    expectNoSecrets(logs, [FAIR_PASSWORD, ...proxy.tokens]);
  });

  it('scrubs chat tokens from an adapter error that quotes them', async () => {
    const { logs, services } = await botBehindProxy();
    const job = submit(services, 'listener trouble');
    job.subscribe((event) => {
      if (event.type === 'generating') {
        throw new Error(
          `POST https://discord.com/api/v10/webhooks/1/${DISCORD_TOKEN}/messages failed (Authorization: Bot ${DISCORD_TOKEN}, slack ${SLACK_BOT_TOKEN})`,
        );
      }
    });
    expect((await imageOf(job)).equals(pngForPrompt('listener trouble'))).toBe(true);
    const failures = logs.entries().filter((e) => e.msg === 'a progress listener failed');
    expect(failures).toHaveLength(1);
    expect(JSON.stringify(failures[0])).toContain('webhooks/1/[REDACTED]/messages');
    expectNoSecrets(logs, [DISCORD_TOKEN, SLACK_BOT_TOKEN]);
  });
});

describe('createLogger', () => {
  it('redacts secret fields by name and scrubs known secret values anywhere', () => {
    const logs = new LogCapture();
    const secret = 'a-known-secret-value';
    const logger = createLogger({ level: 'trace', destination: logs, secrets: [secret, 'abc'] });
    logger.info({ token: 'field-token-1234', password: 'field-password-1234' }, 'top-level fields');
    logger.info({ request: { headers: { authorization: 'Bearer header-token-1234' } } }, 'nested header');
    logger.info({ config: { fairPassword: 'config-password-1234', discordToken: 'config-token-1234' } }, 'config');
    logger.debug(`a message that quotes ${secret}`);
    logger.error({ err: new Error(`failed with ${secret} in it`) }, 'an error');
    logger.info({ url: `https://hooks.example.com/${secret}/x` }, 'a url field');
    const text = logs.text;
    for (const leaked of ['field-token-1234', 'field-password-1234', 'header-token-1234', 'config-password-1234', 'config-token-1234', secret]) {
      expect(text).not.toContain(leaked);
    }
    expect(text.match(/\[REDACTED\]/g)!.length).toBeGreaterThanOrEqual(8);
    expect(logs.entries().find((e) => String(e.msg).startsWith('a message that quotes'))?.msg).toBe('a message that quotes [REDACTED]');
  });

  it('leaves secrets shorter than 4 characters in the text (they would mangle ordinary words); 4 and more are scrubbed', () => {
    const logs = new LogCapture();
    const logger = createLogger({ level: 'info', destination: logs, secrets: ['abc', 'wxyz'] });
    logger.info('abcdef and wxyz and abc');
    expect(logs.entries()[0]?.msg).toBe('abcdef and [REDACTED] and abc');
  });
});
