// Stand-in for the Fair control plane, API v0 / protocol V018 (the programs, nodes and login fairbot uses): a real
// HTTP server that validates programs strictly and "runs" the diffusion container by
// spawning the diffusion stand-in on the requested host port after a cold start.
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  readBody,
  sendJson,
  startDiffusionStandin,
  waitForEvent,
  type DiffusionOptions,
  type DiffusionStandin,
} from './diffusion.js';

import { registerSecret } from '../helpers/secret-scan.js';

export { waitForEvent } from './diffusion.js';

export const PROTOCOL_VERSION = 'V018';
export type ProgramStatus = 'Queued' | 'NotResponding' | 'Processing' | 'Completed';
export type FairFault = 'down' | '500' | 'slow' | 'login-refused';

export interface FairOptions {
  port?: number;
  host?: string;
  email?: string;
  password?: string;
  nodes?: Array<{ node_id: string; host_address: string }>;
  /** Delay between the Start program and the diffusion server listening. */
  coldStartMs?: number;
  /** Forwarded to startDiffusionStandin for each container (read at spawn time). */
  diffusion?: Omit<DiffusionOptions, 'port' | 'host'>;
  /** What successive `info` polls of one program answer; the last one repeats. */
  programStatusSequence?: ProgramStatus[];
  /** Tokens older than this answer 401. */
  tokenTtlMs?: number;
  /** Like docker-proxy: the host port accepts and resets connections during the cold start (default: refused). */
  dockerProxy?: boolean;
}

export interface FairRequest {
  method: string;
  /** Raw path as sent (still percent-encoded, e.g. `/api/v0/buckets/1/%23stdin/eof`). */
  path: string;
  body: unknown;
  at: number;
}

export interface FairContainer {
  id: string;
  node: string;
  programId: string;
  hostPort: number;
  /** From Start until Kill or crash, as Docker sees it (the app may still be cold). */
  running: boolean;
  diffusion?: DiffusionStandin;
  /** Why the server never came up (e.g. the port was taken at spawn time). */
  error?: string;
}

export interface FairStandin {
  /** FAIR_SERVER_URL: no `/api/v0` suffix. */
  url: string;
  port: number;
  requests: FairRequest[];
  /** Programs answered 400, with the reason. */
  rejections: Array<{ path: string; message: string; body: unknown }>;
  containers: Map<string, FairContainer>;
  /** Mutable: changes apply to the next container spawned. */
  diffusionOptions: Omit<DiffusionOptions, 'port' | 'host'>;
  /** 'request' (FairRequest), 'start' ({node, programId, containerId, hostPort}),
   *  'kill' ({node, containerId, ok}), 'diffusion-listening' (DiffusionStandin, containerId),
   *  'rejected' ({path, message}), 'container-error' (FairContainer). */
  events: EventEmitter;
  /** Valid Create+Start programs received. */
  startPrograms(): number;
  killPrograms(): Array<{ node: string; containerId: string }>;
  /** POST /auth/login requests received (successful or not). */
  logins(): number;
  /** Bucket ids whose stdin was closed. */
  eofs(): string[];
  diffusion(): DiffusionStandin | undefined;
  /** The live diffusion stand-in, waiting for one to start listening if need be. */
  waitForDiffusion(timeoutMs?: number): Promise<DiffusionStandin>;
  expireTokens(): void;
  setFault(fault: FairFault | null, opts?: { times?: number; slowMs?: number }): void;
  crashDiffusion(): void;
  close(): Promise<void>;
}

/** A port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Listens on 127.0.0.1:port, or rejects with EADDRINUSE. */
function bind(server: NetServer, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

const closeNet = (s: NetServer) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()));

// ---- strict program validation (throws the 400 message) ----

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function shape(v: unknown, keys: string[], where: string): Obj {
  if (!isObj(v)) throw new Error(`${where} must be an object`);
  const extra = Object.keys(v).filter((k) => !keys.includes(k));
  const missing = keys.filter((k) => !(k in v));
  if (extra.length) throw new Error(`${where}: unexpected key(s) ${extra.join(', ')}`);
  if (missing.length) throw new Error(`${where}: missing key(s) ${missing.join(', ')}`);
  return v;
}

const isPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536;

/** Validates `[Create, Start{$0}]` and returns the first host port. */
function validateStart(cmds: unknown[]): number {
  const create = shape(cmds[0], ['type', 'container_desc'], 'commands[0]');
  const desc = shape(create.container_desc, ['image', 'runtime', 'ports', 'command', 'host_config'], 'container_desc');
  if (typeof desc.image !== 'string' || !desc.image) throw new Error('container_desc.image must be a non-empty string');
  if (typeof desc.runtime !== 'string' || !desc.runtime) throw new Error('container_desc.runtime must be a non-empty string');
  if (!Array.isArray(desc.command) || !desc.command.every((c) => typeof c === 'string')) {
    throw new Error('container_desc.command must be an array of strings');
  }
  const hc = shape(desc.host_config, ['network_mode'], 'container_desc.host_config');
  if (typeof hc.network_mode !== 'string' || !hc.network_mode) throw new Error('host_config.network_mode must be a string');
  if (!Array.isArray(desc.ports) || desc.ports.length === 0) throw new Error('container_desc.ports must be a non-empty array');
  const hostPorts = desc.ports.map((m: unknown, i) => {
    if (!Array.isArray(m) || m.length !== 2) throw new Error(`ports[${i}] must be a [host, container] pair`);
    const host = shape(m[0], ['port', 'ip'], `ports[${i}][0]`);
    const cont = shape(m[1], ['port', 'protocol'], `ports[${i}][1]`);
    if (!isPort(host.port) || !isPort(cont.port)) throw new Error(`ports[${i}]: ports must be integers 1-65535`);
    if (host.ip !== 'null') throw new Error(`ports[${i}][0].ip must be the string "null"`);
    if (cont.protocol !== 'Tcp') throw new Error(`ports[${i}][1].protocol must be "Tcp"`);
    return host.port;
  });
  const start = shape(cmds[1], ['type', 'container_id'], 'commands[1]');
  if (start.container_id !== '$0') throw new Error('commands[1].container_id must be "$0"');
  return hostPorts[0]!;
}

// Ids above 2^53 (and 2^63), so a client that parses them as numbers gets them wrong.
const PROGRAM_ID_BASE = 18446744073709551000n;
const BUCKET_ID_BASE = 9223372036854775900n;

interface Program {
  node: string;
  polls: number;
  result: unknown[];
}

export async function startFairStandin(opts: FairOptions = {}): Promise<FairStandin> {
  const email = opts.email ?? 'admin@example.com';
  const password = opts.password ?? 'test-password';
  const nodes = opts.nodes ?? [{ node_id: 'node-1', host_address: '127.0.0.1' }];
  const coldStartMs = opts.coldStartMs ?? 50;
  const statusSeq = opts.programStatusSequence ?? ['Queued', 'Processing'];
  const events = new EventEmitter();
  const requests: FairRequest[] = [];
  const rejections: FairStandin['rejections'] = [];
  const containers = new Map<string, FairContainer>();
  const programs = new Map<string, Program>(); // key: `${node}\n${programId}`
  const buckets = new Set<string>();
  const eofs: string[] = [];
  const kills: Array<{ node: string; containerId: string }> = [];
  const tokens = new Map<string, number>(); // token → expiry (performance.now())
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const proxies = new Map<string, NetServer>(); // containerId → port held during the cold start
  let seq = 0n;
  let starts = 0;
  let logins = 0;
  let fault: FairFault | null = null;
  let faultTimes = Infinity;
  let slowMs = 1000;

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };

  const server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { message: String(err) });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  // Returns the fault for this request (login-refused only counts login requests).
  function takeFault(isLogin: boolean): FairFault | null {
    if (!fault || (fault === 'login-refused' && !isLogin)) return null;
    const f = fault;
    if (--faultTimes <= 0) fault = null;
    return f;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0]!;
    const text = await readBody(req);
    let body: unknown;
    let badJson = false;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
        badJson = true;
      }
    }
    const record: FairRequest = { method, path, body, at: performance.now() };
    requests.push(record);
    events.emit('request', record);

    const isLogin = method === 'POST' && path === '/api/v0/auth/login';
    if (isLogin) logins++;
    const f = takeFault(isLogin);
    if (f === 'down') {
      req.socket.resetAndDestroy();
      return;
    }
    if (f === '500') return sendJson(res, 500, { message: 'internal server error' });
    if (f === 'login-refused') return sendJson(res, 401, { message: 'login refused' });
    if (f === 'slow') await new Promise<void>((r) => later(slowMs, r));
    if (res.destroyed) return;

    if (!path.startsWith('/api/v0/')) return sendJson(res, 404, { message: `no route ${method} ${path}` });
    let seg: string[];
    try {
      seg = path.slice('/api/v0/'.length).split('/').map(decodeURIComponent); // `%23stdin` → `#stdin`
    } catch {
      return sendJson(res, 400, { message: 'bad percent-encoding in path' });
    }
    if (badJson) return sendJson(res, 400, { message: 'request body is not JSON' });

    if (isLogin) {
      if (!isObj(body) || typeof body.email !== 'string' || typeof body.password !== 'string') {
        return sendJson(res, 400, { message: 'expected {"email","password","version"}' });
      }
      if (body.version !== PROTOCOL_VERSION) return sendJson(res, 400, { message: `unsupported protocol version ${String(body.version)}` });
      if (body.email !== email || body.password !== password) return sendJson(res, 401, { message: 'invalid email or password' });
      const token = randomBytes(24).toString('hex');
      registerSecret(token); // the bearer token must never reach a log or a message
      tokens.set(token, performance.now() + (opts.tokenTtlMs ?? Infinity));
      return sendJson(res, 200, { token });
    }

    const auth = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    const expiry = auth ? tokens.get(auth[1]!) : undefined;
    if (expiry === undefined || performance.now() >= expiry) return sendJson(res, 401, { message: 'token is missing, invalid or expired' });

    // `:` matches any one segment.
    const is = (m: string, pattern: string) => {
      const parts = pattern.split('/');
      return m === method && parts.length === seg.length && parts.every((p, i) => p === ':' || p === seg[i]);
    };
    const [, a = '', , b = ''] = seg;
    if (is('GET', 'nodes')) return sendJson(res, 200, { nodes });
    if (is('PUT', 'nodes/:/programs')) return createProgram(a, body, path, res);
    if (is('PUT', 'buckets/:/#stdin/eof')) {
      if (!buckets.has(a)) return sendJson(res, 404, { message: `no bucket ${a}` });
      eofs.push(a);
      res.writeHead(204).end();
      return;
    }
    if (is('GET', 'nodes/:/programs/:/info') || is('GET', 'nodes/:/programs/:/result')) {
      const p = programs.get(`${a}\n${b}`);
      if (!p) return sendJson(res, 404, { message: `no program ${b} on node ${a}` });
      if (seg[4] === 'result') return sendJson(res, 200, { result: p.result });
      return sendJson(res, 200, { status: statusSeq[Math.min(p.polls++, statusSeq.length - 1)] });
    }
    return sendJson(res, 404, { message: `no route ${method} ${path}` });
  }

  async function createProgram(node: string, body: unknown, path: string, res: ServerResponse): Promise<void> {
    if (!nodes.some((n) => n.node_id === node)) return sendJson(res, 404, { message: `no node ${node}` });
    const reject = (message: string) => {
      rejections.push({ path, message, body });
      events.emit('rejected', { path, message });
      sendJson(res, 400, { message });
    };
    if (!isObj(body) || body.version !== PROTOCOL_VERSION) return reject(`expected {"version":"${PROTOCOL_VERSION}","commands":[...]}`);
    const cmds = body.commands;
    if (!Array.isArray(cmds) || !cmds.every(isObj)) return reject('commands must be an array of objects');
    const types = cmds.map((c) => c.type).join(',');

    let run: () => Promise<unknown[]>;
    try {
      if (types === 'Create,Start') {
        const hostPort = validateStart(cmds);
        run = () => startContainer(node, programId, hostPort);
      } else if (types === 'Kill') {
        const kill = shape(cmds[0], ['type', 'container_id'], 'commands[0]');
        if (typeof kill.container_id !== 'string' || !kill.container_id) throw new Error('Kill.container_id must be a string');
        run = () => killContainer(node, kill.container_id as string);
      } else {
        throw new Error(`unsupported program [${types}]`);
      }
    } catch (err) {
      return reject((err as Error).message);
    }
    seq++;
    const programId = (PROGRAM_ID_BASE + seq).toString();
    const bucketId = (BUCKET_ID_BASE + seq).toString();
    const p: Program = { node, polls: 0, result: await run() };
    programs.set(`${node}\n${programId}`, p);
    buckets.add(bucketId);
    // Written by hand: JSON.stringify cannot emit integers above 2^53 exactly.
    sendJson(res, 200, `{"program_id":${programId},"bucket_id":${bucketId}}`);
  }

  async function startContainer(node: string, programId: string, hostPort: number): Promise<unknown[]> {
    starts++;
    const id = createHash('sha256').update(`container ${programId}`).digest('hex');
    const c: FairContainer = { id, node, programId, hostPort, running: false };
    containers.set(id, c);
    const created = { Ok: { container_id: id } };
    const taken = { Err: `Bind for 0.0.0.0:${hostPort} failed: port is already allocated` };
    if ([...containers.values()].some((o) => o.running && o.hostPort === hostPort)) return [created, taken];
    c.running = true; // reserve the port now, so a concurrent second Start sees it taken
    // Docker binds the host port at Start: probe it (and, as docker-proxy, keep it and reset connections).
    const proxy = createNetServer((s) => s.resetAndDestroy());
    try {
      await bind(proxy, hostPort);
    } catch {
      c.running = false;
      return [created, taken];
    }
    if (opts.dockerProxy) proxies.set(id, proxy);
    else await closeNet(proxy);
    events.emit('start', { node, programId, containerId: id, hostPort });
    later(coldStartMs, () => void spawn(c, proxy));
    return [created, { Ok: {} }];
  }

  async function spawn(c: FairContainer, proxy: NetServer): Promise<void> {
    proxies.delete(c.id);
    await closeNet(proxy);
    if (!c.running) return; // killed during the cold start
    try {
      const d = await startDiffusionStandin({ ...api.diffusionOptions, port: c.hostPort, host: '127.0.0.1' });
      if (!c.running) return void (await d.close()); // killed while binding
      c.diffusion = d;
      d.events.once('close', () => (c.running = false)); // crash or kill: the container has exited
      events.emit('diffusion-listening', d, c.id);
    } catch (err) {
      c.running = false;
      c.error = (err as Error).message;
      events.emit('container-error', c);
    }
  }

  async function killContainer(node: string, containerId: string): Promise<unknown[]> {
    kills.push({ node, containerId });
    const c = containers.get(containerId);
    let result: unknown;
    if (!c || c.node !== node) result = { Err: `No such container: ${containerId}` };
    else if (!c.running) result = { Err: `Cannot kill container: ${containerId}: Container ${containerId} is not running` };
    else {
      c.running = false; // a pending cold start sees this and never spawns
      const proxy = proxies.get(containerId);
      proxies.delete(containerId);
      await Promise.all([c.diffusion?.close(), proxy && closeNet(proxy)]);
      result = { Ok: {} };
    }
    events.emit('kill', { node, containerId, ok: 'Ok' in (result as Obj) });
    return [result];
  }

  const live = () => [...containers.values()].reverse().find((c) => c.running && c.diffusion && !c.diffusion.closed())?.diffusion;

  const api: FairStandin = {
    url: '',
    port: 0,
    requests,
    rejections,
    containers,
    diffusionOptions: { ...opts.diffusion },
    events,
    startPrograms: () => starts,
    killPrograms: () => kills,
    logins: () => logins,
    eofs: () => eofs,
    diffusion: live,
    async waitForDiffusion(timeoutMs = 5000) {
      return live() ?? (await waitForEvent<DiffusionStandin>(events, 'diffusion-listening', timeoutMs));
    },
    expireTokens: () => tokens.clear(),
    setFault(f, o = {}) {
      fault = f;
      faultTimes = o.times ?? Infinity;
      slowMs = o.slowMs ?? 1000;
    },
    crashDiffusion() {
      const d = live();
      if (!d) throw new Error('no live diffusion stand-in to crash');
      d.crash();
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const c of containers.values()) c.running = false;
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await Promise.all([
        closed,
        ...[...proxies.values()].map(closeNet),
        ...[...containers.values()].map((c) => c.diffusion?.close()),
      ]);
    },
  };

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  api.port = (server.address() as AddressInfo).port;
  api.url = `http://127.0.0.1:${api.port}`;
  return api;
}
