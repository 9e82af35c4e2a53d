/**
 * The edges of src/fair that the lifecycle suites reach rarely or never, found by mutation
 * testing (test/MUTATION.md): a control plane that answers something malformed, the words of
 * its errors, and the server record's import from versions before 0.2.
 *
 * The malformed answers come from a scripted HTTP server on a real socket (each route answers
 * what the test says): the Fair stand-in itself always answers well-formed JSON.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { delay, errText, FairApiError, FairClient, networkReason } from '../src/fair/client.js';
import { ServerRecords } from '../src/fair/records.js';
import { createLogger } from '../src/logger.js';
import { keepSqliteObjects, openDatabase } from '../src/storage/sqlite.js';
import { LogCapture, tempDir } from './helpers/app.js';
import { cleanupAfterEach } from './helpers/cleanup.js';

const { defer } = cleanupAfterEach();
const PASSWORD = 'scripted-fair-pw';
const TOKEN = 'tok-scripted-0001';

interface Seen {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
}
type Answer = { status?: number; body?: string | object };
type Route = (seen: Seen, count: number) => Answer;

/** A Fair control plane that answers each "METHOD /path" (under /api/v0) as scripted. */
async function scriptedFair(routes: Record<string, Route | Answer>) {
  const seen: Seen[] = [];
  const counts = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = (req.url ?? '').replace(/^\/api\/v0/, '');
      const key = `${req.method} ${path}`;
      const entry: Seen = { method: req.method ?? '', path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      seen.push(entry);
      const n = (counts.get(key) ?? 0) + 1;
      counts.set(key, n);
      const route = routes[key] ?? (key === 'POST /auth/login' ? { body: { token: TOKEN } } : { status: 404, body: { message: `no route ${key}` } });
      const answer = typeof route === 'function' ? route(entry, n) : route;
      const body = typeof answer.body === 'string' ? answer.body : answer.body === undefined ? '' : JSON.stringify(answer.body);
      res.writeHead(answer.status ?? 200, { 'content-type': 'application/json' }).end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  defer(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const logs = new LogCapture();
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new FairClient({
    // A trailing slash must not make "//api/v0".
    serverUrl: `${url}//`,
    email: 'ops@example.com',
    password: PASSWORD,
    logger: createLogger({ level: 'debug', destination: logs }),
    requestTimeoutMs: 5_000,
  });
  return { client, seen, logs, url };
}

async function failure(promise: Promise<unknown>): Promise<FairApiError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(FairApiError);
  return error as FairApiError;
}

describe('FairClient: answers that are not what the API documents', () => {
  it('a login answer without a token is a non-transient "login" error, and nothing else is called', async () => {
    for (const body of [{}, { token: '' }, { token: 42 }, 'null']) {
      const { client, seen } = await scriptedFair({ 'POST /auth/login': { body } });
      const error = await failure(client.listNodes());
      expect(error.name).toBe('FairApiError');
      expect(error.message).toBe('login answered 200: the answer has no token');
      expect(error.transient).toBe(false);
      expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual(['POST /auth/login']);
    }
  });

  it('calls /api/v0 under the server URL with the bearer token; JSON content-type only with a body', async () => {
    const { client, seen, logs } = await scriptedFair({
      'GET /nodes': { body: { nodes: [] } },
      'PUT /nodes/n1/programs': { body: { program_id: 7, bucket_id: 8 } },
      'PUT /buckets/8/%23stdin/eof': { body: '' },
    });
    await client.listNodes();
    await client.createProgram('n1', []);
    expect(seen.map((s) => s.path)).toEqual(['/auth/login', '/nodes', '/nodes/n1/programs', '/buckets/8/%23stdin/eof']);
    const [login, nodes, put, eof] = seen;
    expect(login!.headers['content-type']).toBe('application/json');
    expect(login!.headers.authorization).toBeUndefined();
    expect(JSON.parse(login!.body)).toEqual({ email: 'ops@example.com', password: PASSWORD, version: 'V018' });
    expect(nodes!.headers['content-type']).toBeUndefined();
    expect(nodes!.headers.accept).toBe('application/json');
    expect(nodes!.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(nodes!.body).toBe('');
    expect(put!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(put!.body)).toEqual({ version: 'V018', commands: [] });
    expect(eof!.headers['content-type']).toBeUndefined();
    expect(logs.entries().filter((e) => e.msg === 'logged in to Fair')).toHaveLength(1);
  });

  it('a 401 on a call: one new login, logged with the path, then the call again', async () => {
    const { client, seen, logs } = await scriptedFair({
      'GET /nodes': (_s, n) => (n === 1 ? { status: 401, body: { message: 'expired' } } : { body: { nodes: [{ node_id: 'a' }] } }),
    });
    expect(await client.listNodes()).toEqual([{ nodeId: 'a' }]);
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual(['POST /auth/login', 'GET /nodes', 'POST /auth/login', 'GET /nodes']);
    expect(logs.entries().find((e) => e.msg === 'Fair token refused; logging in again')).toMatchObject({ path: '/nodes' });
  });

  it('nodes: no list is an error; entries without an id are skipped; host_address absent, null, or not a host', async () => {
    const bad = await scriptedFair({ 'GET /nodes': { body: { nodes: 'all' } } });
    const error = await failure(bad.client.listNodes());
    expect(error.message).toBe('list nodes answered 200: the answer has no "nodes" list');
    expect(error.transient).toBe(false);

    const { client, logs } = await scriptedFair({
      'GET /nodes': {
        body: {
          nodes: [
            null,
            { host_address: '10.0.0.9' },
            { node_id: 'absent' },
            { node_id: 'null', host_address: null },
            { node_id: 'ok', host_address: '10.0.0.1' },
            { node_id: 'path', host_address: 'gpu.example/evil?x=1' },
            { node_id: 'number', host_address: 1234 },
          ],
        },
      },
    });
    expect(await client.listNodes()).toEqual([{ nodeId: 'absent' }, { nodeId: 'null' }, { nodeId: 'ok', hostAddress: '10.0.0.1' }]);
    const warnings = logs.entries().filter((e) => e.msg === 'Fair lists a node whose host_address is not a host; node ignored');
    expect(warnings.map((w) => [w.nodeId, w.hostAddress])).toEqual([
      ['path', 'gpu.example/evil?x=1'],
      ['number', '1234'],
    ]);
  });

  it('a host_address longer than 200 characters is logged cut to 200', async () => {
    const long = `${'x'.repeat(250)}/`;
    const { client, logs } = await scriptedFair({ 'GET /nodes': { body: { nodes: [{ node_id: 'n', host_address: long }] } } });
    expect(await client.listNodes()).toEqual([]);
    expect(logs.entries().find((e) => e.nodeId === 'n')?.hostAddress).toBe(long.slice(0, 200));
  });

  it('a program answer without program_id or bucket_id is an error', async () => {
    for (const body of [{ program_id: 1 }, { bucket_id: 2 }, { program_id: '', bucket_id: 2 }, {}]) {
      const { client } = await scriptedFair({ 'PUT /nodes/n/programs': { body } });
      const error = await failure(client.submitProgram('n', []));
      expect(error.message).toBe('create program answered 200: the answer has no program_id/bucket_id');
      expect(error.transient).toBe(false);
    }
  });

  it('info: no status, or a status Fair does not document, is an error at once', async () => {
    const { client } = await scriptedFair({
      'GET /nodes/n/programs/1/info': { body: { state: 'Queued' } },
      'GET /nodes/n/programs/2/info': { body: { status: `Expired${'!'.repeat(60)}` } },
    });
    const none = await failure(client.programStatus('n', '1'));
    expect(none.message).toBe('program info answered 200: the answer has no status');
    expect(none.transient).toBe(false);
    const unknown = await failure(client.programStatus('n', '2'));
    expect(unknown.message).toBe(`program info: unknown program status "Expired${'!'.repeat(33)}"`);
    expect(unknown.status).toBeUndefined();
    expect(unknown.transient).toBe(false);
  });

  it('result: no list is an error; an entry neither Ok nor Err reads as an Err naming it', async () => {
    const { client } = await scriptedFair({
      'GET /nodes/n/programs/1/result': { body: { result: {} } },
      'GET /nodes/n/programs/2/result': { body: { result: [{ Ok: 1 }, { Err: 'no' }, 'odd', null, { Maybe: 'x'.repeat(300) }] } },
    });
    const error = await failure(client.programResult('n', '1'));
    expect(error.message).toBe('program result answered 200: the answer has no result list');
    expect(error.transient).toBe(false);
    const entries = await client.programResult('n', '2');
    expect(entries.slice(0, 4)).toEqual([{ ok: 1 }, { err: 'no' }, { err: 'unexpected result entry "odd"' }, { err: 'unexpected result entry null' }]);
    expect(entries[4]).toEqual({ err: `unexpected result entry ${JSON.stringify({ Maybe: 'x'.repeat(300) }).slice(0, 200)}` });
  });

  it('createdContainer: undefined until the Create entry is an Ok naming a container', async () => {
    const { client } = await scriptedFair({
      'GET /nodes/n/programs/1/result': { body: { result: [] } },
      'GET /nodes/n/programs/2/result': { body: { result: [{ Err: 'pull failed' }] } },
      'GET /nodes/n/programs/3/result': { body: { result: [{ Ok: null }] } },
      'GET /nodes/n/programs/4/result': { body: { result: [{ Ok: { container_id: 'c-4' } }] } },
    });
    expect(await client.createdContainer('n', '1')).toBeUndefined();
    expect(await client.createdContainer('n', '2')).toBeUndefined();
    expect(await client.createdContainer('n', '3')).toBeUndefined();
    expect(await client.createdContainer('n', '4')).toBe('c-4');
  });

  it('a start whose Create result names no container is an error saying so', async () => {
    const { client } = await scriptedFair({
      'PUT /nodes/n/programs': { body: { program_id: 5, bucket_id: 6 } },
      'PUT /buckets/6/%23stdin/eof': { body: '' },
      'GET /nodes/n/programs/5/info': { body: { status: 'Completed' } },
      'GET /nodes/n/programs/5/result': { body: { result: [{ Ok: {} }, { Ok: null }] } },
    });
    const error = await failure(client.startContainer('n', { image: 'img', runtime: 'nvidia', hostPort: 8000, containerPort: 8000 }, { pollMs: 5 }));
    expect(error.message).toBe('start program: the Create result has no container_id');
    expect(error.transient).toBe(false);
  });

  it('runProgram polls through passing faults (5xx on info and on result) and ends once every command has a result', async () => {
    const { client, seen } = await scriptedFair({
      'PUT /nodes/n/programs': { body: { program_id: 5, bucket_id: 6 } },
      'PUT /buckets/6/%23stdin/eof': { body: '' },
      'GET /nodes/n/programs/5/info': (_s, n) => (n === 1 ? { status: 503, body: 'busy' } : { body: { status: 'Processing' } }),
      'GET /nodes/n/programs/5/result': (_s, n) =>
        n === 1 ? { status: 502, body: '' } : n === 2 ? { body: { result: [{ Ok: 'a' }] } } : { body: { result: [{ Ok: 'a' }, { Ok: 'b' }] } },
    });
    const ran = await client.runProgram('n', [{ type: 'Wait' }, { type: 'Wait' }] as never, { what: 'test', pollMs: 5 });
    expect(ran).toEqual({ programId: '5', results: ['a', 'b'] });
    // One program only, however many polls failed.
    expect(seen.filter((s) => s.method === 'PUT' && s.path.endsWith('/programs'))).toHaveLength(1);
    expect(seen.filter((s) => s.path.endsWith('/result'))).toHaveLength(3);
  });

  it('runProgram: a refusal while polling (4xx) ends the run at once; Completed with fewer results is done', async () => {
    const refused = await scriptedFair({
      'PUT /nodes/n/programs': { body: { program_id: 5, bucket_id: 6 } },
      'PUT /buckets/6/%23stdin/eof': { body: '' },
      'GET /nodes/n/programs/5/info': { status: 404, body: { error: 'no such program' } },
    });
    const error = await failure(refused.client.runProgram('n', [], { what: 'test', pollMs: 5 }));
    expect(error.message).toBe('GET /nodes/n/programs/…/info answered 404: no such program');
    expect(refused.seen.filter((s) => s.path.endsWith('/info'))).toHaveLength(1);

    const { client } = await scriptedFair({
      'PUT /nodes/n/programs': { body: { program_id: 5, bucket_id: 6 } },
      'PUT /buckets/6/%23stdin/eof': { body: '' },
      'GET /nodes/n/programs/5/info': { body: { status: 'Completed' } },
      'GET /nodes/n/programs/5/result': { body: { result: [{ Ok: 'a' }] } },
    });
    expect(await client.runProgram('n', [{ type: 'Wait' }, { type: 'Wait' }] as never, { what: 'test', pollMs: 5 })).toEqual({
      programId: '5',
      results: ['a'],
    });
  });

  it('an Err entry that is not a string is shown as its JSON', async () => {
    const { client } = await scriptedFair({
      'PUT /nodes/n/programs': { body: { program_id: 5, bucket_id: 6 } },
      'PUT /buckets/6/%23stdin/eof': { body: '' },
      'GET /nodes/n/programs/5/info': { body: { status: 'Completed' } },
      'GET /nodes/n/programs/5/result': { body: { result: [{ Err: { code: 'EPORT', detail: 'taken' } }] } },
    });
    const error = await failure(client.killContainer('n', 'c-1', { pollMs: 5 }));
    expect(error.message).toBe('kill program: {"code":"EPORT","detail":"taken"}');
  });

  it('error texts: the server words from message, error, detail or reason, else its text, else "no message"', async () => {
    const { client } = await scriptedFair({
      'GET /nodes/n/programs/1/info': { status: 400, body: { message: 'm', error: 'e' } },
      'GET /nodes/n/programs/2/info': { status: 400, body: { error: 'e', detail: 'd' } },
      'GET /nodes/n/programs/3/info': { status: 400, body: { detail: 'd', reason: 'r' } },
      'GET /nodes/n/programs/4/info': { status: 400, body: { reason: 'r', code: 1 } },
      'GET /nodes/n/programs/5/info': { status: 400, body: { message: 3 } },
      'GET /nodes/n/programs/6/info': { status: 418, body: `  ${'t'.repeat(400)}  ` },
      'GET /nodes/n/programs/7/info': { status: 400, body: '   ' },
      'GET /nodes/n/programs/8/info': { status: 429, body: 'slow down' },
      'GET /nodes/n/programs/9/info': { status: 200, body: '<html>oops</html>' },
    });
    const text = async (id: string) => failure(client.programStatus('n', id));
    expect((await text('1')).serverMessage).toBe('m');
    expect((await text('2')).serverMessage).toBe('e');
    expect((await text('3')).serverMessage).toBe('d');
    expect((await text('4')).serverMessage).toBe('r');
    expect((await text('5')).serverMessage).toBe('{"message":3}');
    expect((await text('6')).serverMessage).toBe('t'.repeat(300));
    const blank = await text('7');
    expect(blank.serverMessage).toBe('no message');
    expect(blank.transient).toBe(false);
    const limited = await text('8');
    expect(limited.transient).toBe(true);
    expect(limited.message).toBe('GET /nodes/n/programs/…/info answered 429: slow down');
    const html = await text('9');
    expect(html.message).toBe('GET /nodes/n/programs/…/info answered 200: not JSON: <html>oops</html>');
    expect(html.transient).toBe(false);
  });

  it('a 4xx is not transient, a 5xx is; a 3xx is not success either', async () => {
    const { client } = await scriptedFair({
      'GET /nodes/n/programs/1/info': { status: 499, body: 'x' },
      'GET /nodes/n/programs/2/info': { status: 500, body: 'x' },
      'GET /nodes/n/programs/3/info': { status: 300, body: { status: 'Completed' } },
    });
    expect((await failure(client.programStatus('n', '1'))).transient).toBe(false);
    expect((await failure(client.programStatus('n', '2'))).transient).toBe(true);
    expect((await failure(client.programStatus('n', '3'))).status).toBe(300);
  });

  it('the password and tokens of 4 characters or more are redacted from error texts; shorter ones are left (they would blank the text)', async () => {
    const { client } = await scriptedFair({
      'POST /auth/login': { body: { token: TOKEN } },
      'GET /nodes/n/programs/1/info': { status: 400, body: { message: `bad ${PASSWORD} and ${TOKEN}` } },
      'GET /nodes/n/programs/2/info': { status: 200, body: `not json ${PASSWORD}` },
    });
    expect((await failure(client.programStatus('n', '1'))).serverMessage).toBe('bad [REDACTED] and [REDACTED]');
    expect((await failure(client.programStatus('n', '2'))).message).toBe('GET /nodes/n/programs/…/info answered 200: not JSON: not json [REDACTED]');

    const short = await scriptedFair({
      'POST /auth/login': { body: { token: 'abc' } },
      'GET /nodes/n/programs/1/info': { status: 400, body: { message: 'abc was refused' } },
    });
    expect((await failure(short.client.programStatus('n', '1'))).serverMessage).toBe('abc was refused');
  });

  it("an unreachable control plane is transient and names the host; a call given up by its caller throws the caller's reason", async () => {
    const { client, url } = await scriptedFair({});
    const dead = new FairClient({ serverUrl: 'http://127.0.0.1:1', email: 'e', password: PASSWORD, logger: createLogger({ level: 'silent' }) });
    const error = await failure(dead.listNodes());
    expect(error.transient).toBe(true);
    expect(error.message).toBe('POST /auth/login: cannot reach 127.0.0.1:1 (ECONNREFUSED)');

    const reason = new Error('the start gave up');
    const controller = new AbortController();
    controller.abort(reason);
    await expect(client.listNodes({ signal: controller.signal })).rejects.toBe(reason);
    expect(url).toMatch(/^http:/);
  });
});

describe('client helpers', () => {
  it('errText: strings as they are, anything else as JSON cut to 300, or its String when JSON cannot', () => {
    expect(errText('plain')).toBe('plain');
    expect(errText({ a: 'b'.repeat(400) })).toBe(JSON.stringify({ a: 'b'.repeat(400) }).slice(0, 300));
    expect(errText(10n)).toBe('10');
  });

  it("networkReason: the code, else the cause's code, else the message, else the value", () => {
    expect(networkReason({ code: 'ECONNRESET', cause: { code: 'X' }, message: 'm' })).toBe('ECONNRESET');
    expect(networkReason({ cause: { code: 'ETIMEDOUT' }, message: 'm' })).toBe('ETIMEDOUT');
    expect(networkReason({ message: 'socket hang up' })).toBe('socket hang up');
    expect(networkReason({ cause: {}, message: 'm' })).toBe('m');
    expect(networkReason(null)).toBe('null');
    expect(networkReason(undefined)).toBe('undefined');
  });

  it("delay: waits, and rejects with the signal's reason when aborted before or during", async () => {
    await expect(delay(1)).resolves.toBeUndefined();
    const before = new AbortController();
    before.abort(new Error('before'));
    await expect(delay(10_000, before.signal)).rejects.toThrow('before');
    const during = new AbortController();
    const waiting = delay(10_000, during.signal);
    during.abort(new Error('during'));
    await expect(waiting).rejects.toThrow('during');
    // A finished delay leaves no listener behind on a signal that lives on.
    const long = new AbortController();
    await delay(1, long.signal);
    long.abort(new Error('later'));
  });
});

describe('ServerRecords: the record of versions before 0.2 (DATA_DIR/gpu-server.json)', () => {
  function dataDirWith(legacy: string | object) {
    const dir = tempDir();
    defer(() => dir.remove());
    writeFileSync(join(dir.path, 'gpu-server.json'), typeof legacy === 'string' ? legacy : JSON.stringify(legacy));
    return dir.path;
  }
  function open(dataDir: string) {
    const records = new ServerRecords(dataDir);
    defer(() => records.close());
    return records;
  }

  it('a ready server is carried over with every field, once, and the old file removed', () => {
    const dataDir = dataDirWith({
      node: 'node-1',
      endpoint: 'http://10.0.0.1:8000',
      hostAddress: '10.0.0.1',
      programId: '77',
      containerId: 'c-77',
      startedAt: '2026-01-02T03:04:05.000Z',
      coldStartMs: 41_000,
    });
    const record = open(dataDir).get();
    expect(record).toMatchObject({
      node: 'node-1',
      endpoint: 'http://10.0.0.1:8000',
      hostAddress: '10.0.0.1',
      programId: '77',
      containerId: 'c-77',
      startedAt: '2026-01-02T03:04:05.000Z',
      coldStartMs: 41_000,
      phase: 'ready',
      abandoned: false,
      external: false,
    });
    expect(existsSync(join(dataDir, 'gpu-server.json'))).toBe(false);
  });

  it('phase from what it knew: a container without a cold-start time is "started", no container is "created"', () => {
    const started = open(dataDirWith({ node: 'n', endpoint: 'http://h:1', containerId: 'c', programId: 'p' })).get();
    expect(started?.phase).toBe('started');
    const created = open(dataDirWith({ node: 'n', endpoint: 'http://h:1', programId: 'p', coldStartMs: 5 })).get();
    expect(created?.phase).toBe('created');
    expect(created?.containerId).toBeUndefined();
  });

  it('fields of the wrong type are dropped, and a missing start time becomes now', () => {
    const before = Date.now();
    const record = open(dataDirWith({ node: 'n', endpoint: 'http://h:1', hostAddress: 5, programId: 6, containerId: 7, startedAt: 8, coldStartMs: '9' })).get();
    expect(record).toBeDefined();
    expect(record!.hostAddress).toBeUndefined();
    expect(record!.programId).toBeUndefined();
    expect(record!.containerId).toBeUndefined();
    expect(record!.coldStartMs).toBeUndefined();
    expect(record!.phase).toBe('created');
    expect(Date.parse(record!.startedAt)).toBeGreaterThanOrEqual(before - 1000);
  });

  it('a file without node or endpoint, or damaged, imports nothing and is removed', () => {
    for (const legacy of [{ endpoint: 'http://h:1' }, { node: 'n' }, { node: 1, endpoint: 'http://h:1' }, { node: 'n', endpoint: 2 }, '{not json']) {
      const dataDir = dataDirWith(legacy);
      expect(open(dataDir).get()).toBeUndefined();
      expect(existsSync(join(dataDir, 'gpu-server.json'))).toBe(false);
    }
  });

  it('a record already in fairbot.db is not replaced by an old file', () => {
    const dir = tempDir();
    defer(() => dir.remove());
    const first = new ServerRecords(dir.path);
    const mine = first.create({ node: 'current', endpoint: 'http://h:2', phase: 'ready', startedAt: new Date().toISOString() });
    first.close();
    writeFileSync(join(dir.path, 'gpu-server.json'), JSON.stringify({ node: 'old', endpoint: 'http://h:1' }));
    const record = open(dir.path).get();
    expect(record?.id).toBe(mine.id);
    expect(record?.node).toBe('current');
    expect(existsSync(join(dir.path, 'gpu-server.json'))).toBe(false);
  });
});

describe('ServerRecords: reads and writes', () => {
  function fresh() {
    const dir = tempDir();
    defer(() => dir.remove());
    const records = new ServerRecords(dir.path);
    defer(() => records.close());
    return { records, dir: dir.path };
  }

  it('update and remove touch only the server they name', () => {
    const { records } = fresh();
    const old = records.create({ node: 'n', endpoint: 'http://h:1', phase: 'created', startedAt: new Date().toISOString() });
    const next = records.create({ node: 'n', endpoint: 'http://h:1', phase: 'creating', startedAt: new Date().toISOString() });
    expect(records.update(old.id, { phase: 'stopping' })).toBeUndefined();
    records.remove(old.id);
    expect(records.get()).toMatchObject({ id: next.id, phase: 'creating' });
    expect(records.update(next.id, { phase: 'created', programId: '9' })).toMatchObject({ id: next.id, phase: 'created', programId: '9' });
    records.remove(next.id);
    expect(records.get()).toBeUndefined();
    expect(records.update(next.id, { phase: 'ready' })).toBeUndefined();
  });

  it('a damaged row reads as no record; a damaged last-generation fact as none', () => {
    const { records, dir } = fresh();
    expect(records.lastGeneration()).toBeUndefined();
    records.noteGeneration(1234, 1_700_000_000_000);
    expect(records.lastGeneration()).toEqual({ at: new Date(1_700_000_000_000), ms: 1234 });
    // Another (older or broken) writer on the same file: kept alive for Node 24 (src/storage/sqlite.ts).
    const raw = openDatabase(join(dir, 'fairbot.db'));
    const putRecord = raw.prepare(`INSERT OR REPLACE INTO servers (slot, record) VALUES ('gpu-0', ?)`);
    const putFact = raw.prepare(`INSERT OR REPLACE INTO server_facts (key, value) VALUES ('last-generation', ?)`);
    keepSqliteObjects(raw, putRecord, putFact);
    defer(() => raw.close());
    putRecord.run('{"id":');
    expect(records.get()).toBeUndefined();
    putRecord.run('{"id":"x"}');
    expect(records.get()).toBeUndefined();
    putFact.run('{');
    expect(records.lastGeneration()).toBeUndefined();
  });

  it('close twice is harmless', () => {
    const { records } = fresh();
    records.close();
    expect(() => records.close()).not.toThrow();
  });
});
