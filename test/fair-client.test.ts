/**
 * The Fair API v0 client against the Fair stand-in: login and re-login,
 * 64-bit ids, errors with status and message, and the programs as they arrive on the wire.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FairApiError, FairClient } from '../src/fair/client.js';
import { fairId, parseFairJson } from '../src/fair/json.js';
import { createLogger } from '../src/logger.js';
import { freePort, startFairStandin, waitForEvent, type FairOptions, type FairStandin } from './standins/fair.js';
import { LogCapture } from './helpers/app.js';

const EMAIL = 'ops@example.com';
const PASSWORD = 'fair-client-test-pw';

let fair: FairStandin | undefined;
let logs: LogCapture;

async function setup(opts: FairOptions = {}): Promise<{ fair: FairStandin; client: FairClient }> {
  fair = await startFairStandin({ email: EMAIL, password: PASSWORD, ...opts });
  const client = new FairClient({
    serverUrl: fair.url,
    email: EMAIL,
    password: PASSWORD,
    logger: createLogger({ level: 'debug', destination: logs, secrets: [PASSWORD] }),
    requestTimeoutMs: 5_000,
  });
  return { fair, client };
}

/** The requests after `from`, as "METHOD path" lines (program ids left in: they are part of the contract). */
const calls = (f: FairStandin, from = 0) => f.requests.slice(from).map((r) => `${r.method} ${r.path}`);

async function rejection(promise: Promise<unknown>): Promise<FairApiError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(FairApiError);
    return error as FairApiError;
  }
  throw new Error('expected the call to fail');
}

beforeEach(() => {
  logs = new LogCapture();
});

afterEach(async () => {
  await fair?.close();
  fair = undefined;
});

describe('FairClient: login', () => {
  it('logs in with {"email","password","version":"V018"} once, then calls with the token', async () => {
    const { fair, client } = await setup();
    const nodes = await client.listNodes();
    expect(nodes).toEqual([{ nodeId: 'node-1', hostAddress: '127.0.0.1' }]);
    await client.listNodes();
    expect(fair.logins()).toBe(1);
    expect(fair.requests[0]!.body).toStrictEqual({ email: EMAIL, password: PASSWORD, version: 'V018' });
    expect(calls(fair)).toEqual(['POST /api/v0/auth/login', 'GET /api/v0/nodes', 'GET /api/v0/nodes']);
  });

  it('many concurrent first calls share one login', async () => {
    const { fair, client } = await setup();
    await Promise.all(Array.from({ length: 10 }, () => client.listNodes()));
    expect(fair.logins()).toBe(1);
  });

  it('after a 401 logs in again exactly once and retries the call exactly once', async () => {
    const { fair, client } = await setup();
    await client.listNodes();
    fair.expireTokens();
    const from = fair.requests.length;
    await expect(client.listNodes()).resolves.toHaveLength(1);
    expect(calls(fair, from)).toEqual(['GET /api/v0/nodes', 'POST /api/v0/auth/login', 'GET /api/v0/nodes']);
    expect(fair.logins()).toBe(2);
  });

  it('concurrent calls that all meet the expired token share one new login', async () => {
    const { fair, client } = await setup();
    await client.listNodes();
    fair.expireTokens();
    await Promise.all(Array.from({ length: 5 }, () => client.listNodes()));
    expect(fair.logins()).toBe(2);
  });

  it('a second 401 in a row is an error carrying the status and the server message', async () => {
    // Tokens that expire at once: the retry after the new login is refused too.
    const { fair, client } = await setup({ tokenTtlMs: 0 });
    const error = await rejection(client.listNodes());
    expect(error.status).toBe(401);
    expect(error.serverMessage).toBe('token is missing, invalid or expired');
    expect(error.message).toContain('401');
    expect(calls(fair)).toEqual(['POST /api/v0/auth/login', 'GET /api/v0/nodes', 'POST /api/v0/auth/login', 'GET /api/v0/nodes']);
  });

  it('a refused login is an error with status 401 and the server message, not retried', async () => {
    const { fair, client } = await setup();
    fair.setFault('login-refused');
    const error = await rejection(client.listNodes());
    expect(error.status).toBe(401);
    expect(error.serverMessage).toBe('login refused');
    expect(error.transient).toBe(false);
    expect(fair.logins()).toBe(1);
  });
});

describe('FairClient: errors', () => {
  it('carries the HTTP status and the server message (404 for an unknown node)', async () => {
    const { client } = await setup();
    const error = await rejection(client.createProgram('no-such-node', [{ type: 'Kill', container_id: 'abc' }]));
    expect(error.status).toBe(404);
    expect(error.serverMessage).toBe('no node no-such-node');
    expect(error.message).toBe('PUT /nodes/no-such-node/programs answered 404: no node no-such-node');
    expect(error.transient).toBe(false);
  });

  it('a 500 is transient and says what the server said', async () => {
    const { fair, client } = await setup();
    await client.listNodes();
    fair.setFault('500', { times: 1 });
    const error = await rejection(client.listNodes());
    expect(error.status).toBe(500);
    expect(error.serverMessage).toBe('internal server error');
    expect(error.transient).toBe(true);
    await expect(client.listNodes()).resolves.toHaveLength(1);
  });

  it('a dropped connection is transient, without a status, naming the host', async () => {
    const { fair, client } = await setup();
    await client.listNodes();
    fair.setFault('down', { times: 1 });
    const error = await rejection(client.listNodes());
    expect(error.status).toBeUndefined();
    expect(error.transient).toBe(true);
    expect(error.serverMessage).toContain(`cannot reach 127.0.0.1:${fair.port}`);
  });

  it('a program the stand-in rejects (400) surfaces the reason', async () => {
    const { client } = await setup();
    const error = await rejection(client.createProgram('node-1', [{ type: 'Reboot' }]));
    expect(error.status).toBe(400);
    expect(error.serverMessage).toBe('unsupported program [Reboot]');
  });

  it('an Err entry in a program result fails the call with its text (port already allocated)', async () => {
    const { fair, client } = await setup();
    const hostPort = await freePort();
    const spec = { image: 'faircompute/diffusion-octo:v1', runtime: 'nvidia', hostPort, containerPort: 8080 };
    await client.startContainer('node-1', spec, { pollMs: 5 });
    const error = await rejection(client.startContainer('node-1', spec, { pollMs: 5 }));
    expect(error.serverMessage).toBe(`Bind for 0.0.0.0:${hostPort} failed: port is already allocated`);
    expect(error.message).toContain('start program');
    expect(fair.startPrograms()).toBe(2);
  });
});

describe('FairClient: 64-bit ids', () => {
  it('parses integers above 2^53 as their exact decimal text', () => {
    const parsed = parseFairJson('{"program_id":18446744073709551001,"bucket_id":9223372036854775901,"n":42}') as Record<string, unknown>;
    expect(parsed).toEqual({ program_id: '18446744073709551001', bucket_id: '9223372036854775901', n: 42 });
    expect(fairId(parsed.program_id)).toBe('18446744073709551001');
    expect(fairId(42)).toBe('42');
    expect(fairId(null)).toBeUndefined();
    expect(fairId(1.5)).toBeUndefined();
    expect(fairId('')).toBeUndefined();
    expect(fairId('42')).toBe('42');
  });

  it('sends program and bucket ids back exactly as the stand-in sent them', async () => {
    const { fair, client } = await setup();
    const hostPort = await freePort();
    const started = waitForEvent<{ programId: string; containerId: string }>(fair.events, 'start');
    const from = fair.requests.length;
    const result = await client.startContainer('node-1', { image: 'img', runtime: 'nvidia', hostPort, containerPort: 8080 }, { pollMs: 5 });
    const { programId, containerId } = await started;
    // The stand-in's ids are above 2^64: a JS number would round them.
    expect(BigInt(programId) > 2n ** 53n).toBe(true);
    expect(String(Number(programId))).not.toBe(programId);
    expect(result).toEqual({ programId, containerId });

    const sent = calls(fair, from);
    const info = sent.filter((c) => c.endsWith('/info'));
    const resultCalls = sent.filter((c) => c.endsWith('/result'));
    expect(info.length).toBeGreaterThan(0);
    expect(resultCalls.length).toBeGreaterThan(0);
    for (const c of info) expect(c).toBe(`GET /api/v0/nodes/node-1/programs/${programId}/info`);
    for (const c of resultCalls) expect(c).toBe(`GET /api/v0/nodes/node-1/programs/${programId}/result`);

    // The bucket id went back exactly too: stdin was closed on the bucket the stand-in named.
    expect(fair.eofs()).toHaveLength(1);
    const bucket = fair.eofs()[0]!;
    expect(BigInt(bucket) > 2n ** 63n).toBe(true);
    expect(sent).toContain(`PUT /api/v0/buckets/${bucket}/%23stdin/eof`);
  });
});

describe('FairClient: the programs on the wire', () => {
  it('starts the server with exactly the documented Create+Start program ("ip" is the string "null")', async () => {
    const { fair, client } = await setup({ programStatusSequence: ['Queued', 'Queued', 'Processing'] });
    const hostPort = await freePort();
    const from = fair.requests.length;
    const { containerId, programId } = await client.startContainer(
      'node-1',
      { image: 'faircompute/diffusion-octo:v1', runtime: 'nvidia', hostPort, containerPort: 8080 },
      { pollMs: 5 },
    );
    const put = fair.requests.slice(from).filter((r) => r.method === 'PUT' && r.path === '/api/v0/nodes/node-1/programs');
    expect(put).toHaveLength(1);
    expect(put[0]!.body).toStrictEqual({
      version: 'V018',
      commands: [
        {
          type: 'Create',
          container_desc: {
            image: 'faircompute/diffusion-octo:v1',
            runtime: 'nvidia',
            ports: [
              [
                { port: hostPort, ip: 'null' },
                { port: 8080, protocol: 'Tcp' },
              ],
            ],
            command: [],
            host_config: { network_mode: 'bridge' },
          },
        },
        { type: 'Start', container_id: '$0' },
      ],
    });
    expect(fair.rejections).toEqual([]);
    // Polled info until Processing (two Queued first), then read the result.
    const sent = calls(fair, from);
    expect(sent.filter((c) => c.endsWith('/info'))).toHaveLength(3);
    expect(sent.at(-1)).toBe(`GET /api/v0/nodes/node-1/programs/${programId}/result`);
    expect(fair.containers.get(containerId)?.running).toBe(true);
  });

  it('stops it with a Kill program naming the container, on the same node', async () => {
    const { fair, client } = await setup();
    const hostPort = await freePort();
    const { containerId } = await client.startContainer('node-1', { image: 'img', runtime: 'nvidia', hostPort, containerPort: 8080 }, { pollMs: 5 });
    const from = fair.requests.length;
    const killed = waitForEvent<{ containerId: string; ok: boolean }>(fair.events, 'kill');
    await client.killContainer('node-1', containerId, { pollMs: 5 });
    await expect(killed).resolves.toMatchObject({ containerId, ok: true });
    const put = fair.requests.slice(from).filter((r) => r.method === 'PUT' && r.path === '/api/v0/nodes/node-1/programs');
    expect(put.map((r) => r.body)).toStrictEqual([{ version: 'V018', commands: [{ type: 'Kill', container_id: containerId }] }]);
    expect(fair.killPrograms()).toEqual([{ node: 'node-1', containerId }]);
    expect(fair.containers.get(containerId)?.running).toBe(false);
    // stdin of every program is closed right after it is created.
    expect(fair.eofs()).toHaveLength(2);
  });

  it('a Kill of a container that is not running fails with the server text', async () => {
    const { client } = await setup();
    const error = await rejection(client.killContainer('node-1', 'deadbeef', { pollMs: 5 }));
    expect(error.serverMessage).toBe('No such container: deadbeef');
  });

  it('never logs the password or the token at debug level', async () => {
    const { fair, client } = await setup();
    await client.listNodes();
    fair.expireTokens();
    await client.listNodes();
    expect(logs.lines.length).toBeGreaterThan(0);
    expect(logs.text).not.toContain(PASSWORD);
    expect(logs.text).not.toMatch(/Bearer /);
  });
});
