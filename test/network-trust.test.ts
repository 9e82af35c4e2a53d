/**
 * Trust in the network (issue 17, item 11b): a server on the GPU host port is adopted as
 * the diffusion server only when it speaks the diffusion protocol. A plain web server that
 * answers `GET /` never gets a user's prompt.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { describe, expect, it } from 'vitest';
import { escapeMrkdwn } from '../src/bots/slack/text.js';
import { InferenceClient } from '../src/inference/client.js';
import { messages } from '../src/messages.js';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { lastSlackText } from './helpers/faults.js';
import { slackRigs } from './helpers/slack.js';
import { startDiffusionStandin } from './standins/diffusion.js';
import { freePort } from './standins/fair.js';

const cleanup = cleanupAfterEach();
const rig = slackRigs();

/** A plain web server: 200 with an HTML page for every GET, 404 on /healthcheck, 405 otherwise. Records what it got. */
async function plainWebServer(port = 0): Promise<{ port: number; requests: Array<{ method: string; path: string; body: string }> }> {
  const requests: Array<{ method: string; path: string; body: string }> = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      requests.push({ method: req.method ?? 'GET', path, body: Buffer.concat(chunks).toString('utf8') });
      if (path === '/healthcheck') res.writeHead(404).end('not found');
      else if (req.method === 'GET') res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>It works!</body></html>');
      else res.writeHead(405).end('method not allowed');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanup.defer(() => new Promise((resolve) => server.close(resolve)));
  return { port: (server.address() as { port: number }).port, requests };
}

describe('readiness of an older server (404 on /healthcheck)', () => {
  const client = new InferenceClient({ inferTimeoutMs: 1_000, probeTimeoutMs: 500 });
  cleanup.defer(() => client.close());

  it('an octo server (its API lists POST /infer) is ready; a plain web server is not a diffusion server', async () => {
    const octo = await startDiffusionStandin({ legacy: true });
    cleanup.defer(() => octo.close());
    expect(await client.probe(octo.url)).toBe('ready');

    const plain = await plainWebServer();
    expect(await client.probeDetail(`http://127.0.0.1:${plain.port}`)).toEqual({ readiness: 'down', refused: false });
    expect(plain.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['GET /healthcheck', 'GET /', 'GET /openapi.json']);
  });
});

describe('a plain web server on the GPU host port', () => {
  it('is not adopted: the user is told the port is taken (FAIR_PORTS), and the server never sees the prompt', async () => {
    const hostPort = await freePort();
    const plain = await plainWebServer(hostPort);
    const r = await rig({ env: { FAIR_PORTS: `${hostPort}:8080` } });
    const prompt = 'a private prompt for the GPU only';
    const ack = await r.slack.sendSlashCommand(r.eventsUrl, { command: '/imagine', text: prompt, user_id: 'U0PLAIN' });
    expect(ack.status).toBe(200);
    const text = await r.slack.waitFor(
      () => {
        const last = lastSlackText(r.slack, 'U0PLAIN');
        return last && !/^(Queued|Warming up the GPU|Generating your image)/.test(last) ? last : undefined;
      },
      15_000,
      'the final message',
    );
    const reason = `host port ${hostPort} is already taken on node node-1 and no diffusion server answers there (change FAIR_PORTS)`;
    expect(text).toBe(escapeMrkdwn(messages.startupFailed(reason)));
    expect(plain.requests.filter((q) => q.method !== 'GET')).toEqual([]);
    expect(plain.requests.some((q) => q.body.includes(prompt))).toBe(false);
    expect(r.slack.channelFiles()).toHaveLength(0);
  });
});
