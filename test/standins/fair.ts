// Stand-in for the Fair control plane, API v0 / protocol V018 (the login, nodes and programs fairbot uses): a real HTTP
// server that validates programs strictly (fair-programs.ts) and runs them as a node would,
// taking time, so a client meets every window the real one has.
//
// What it models (defaults in brackets; queueMs, pullMs, startMs and killMs can be set per node,
// in the options or mid-test with setTiming):
// - A program answers `Queued` for `queueMs` [10], then `Processing` while its commands run one
//   by one, then `Completed`. `result` holds the entries of the commands finished so far (it
//   grows); an `Err` entry ends the program.
// - `Create` pulls the image for `pullMs` [20]; then the container exists (not running) and the
//   entry `{"Ok":{"container_id":ID}}` appears ('created' event).
// - `Start` takes `startMs` [2], then binds the host port on the node's host_address (a port in
//   use on that node or that address: `Err` "port is already allocated"); from then the container
//   runs ('start' event) and, after `coldStartMs` [50], the diffusion stand-in listens on that
//   port ('diffusion-listening'). With `dockerProxy` the port accepts and resets connections
//   during the cold start, as docker-proxy does; otherwise it refuses them.
// - `Wait` (`[Wait ID]`, or `Wait $0` ending `[Create, Start, Wait]`) stays `Processing` while
//   the container runs and ends with `{"Ok":{"exit_code":N}}` when it exits: 137 after a Kill,
//   the code given to a crash (1 by default), 0 when the diffusion server closes cleanly; at once
//   for a container that never started (0) or already exited. Unknown id: `Err` "No such container".
// - `Kill` takes `killMs` [5] after its queue; a container that is not running (created, exited)
//   or unknown is an `Err` with Docker's text. A Kill sent while the Create still pulls cannot
//   name the container (its id does not exist yet): the container then comes up regardless.
// - Exits: Kill (137), crashDiffusion(code), a crash during start-up (`crashDuringStartup`:
//   the container exits `afterMs` after Start, before the diffusion server listens), or the
//   diffusion stand-in closing by itself. Each emits 'exited' ({node, containerId, exitCode}).
// - Nodes: each has its own host_address (use the loopback range, 127.0.0.2, 127.0.0.3...:
//   Linux answers on all of 127.0.0.0/8), so two nodes can publish the same host port; a node
//   may be listed without one (its containers then bind 127.0.0.1). A node can be made slow
//   (setTiming), NotResponding (its programs answer so and stop advancing until it is back) or
//   removed from GET /nodes (new programs there answer 404; its running programs go on).
// - Faults: setFault (every call, as before), failCall (one call kind, optionally one program
//   kind: an HTTP status, 'down' = the socket is reset, or '500-after-acting' = the call takes
//   effect, e.g. the program is created and runs, but the answer is a 500), setProgramStatus
//   (every program of a kind answers a given status, e.g. the unknown `Expired`).
// - `programStatusSequence` scripts `info` poll by poll (the last entry repeats) for tests that
//   need exact statuses; with it the durations above default to 0 (commands run at once).
//   What `info` answers, first match: the node NotResponding, setProgramStatus, the script, the truth.
// - For invariant checks: liveContainers(), programs() (each with its result so far),
//   programCounts(), callCount(call, kind?), waitForProgram(id, status), killPrograms() (Kills
//   received) and the events. close() ends every timer, server and socket at once.
// Ids are above 2^53 (program ids above 2^64), so a client that parses them as numbers fails.
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { readBody, sendJson, startDiffusionStandin, waitForEvent, type DiffusionOptions, type DiffusionStandin } from './diffusion.js';
import { isObj, PROGRAM_KINDS, validateProgram, type Command, type ProgramKind } from './fair-programs.js';

import { registerSecret } from '../helpers/secret-scan.js';

export { waitForEvent } from './diffusion.js';
export type { ProgramKind } from './fair-programs.js';

const PROTOCOL_VERSION = 'V018';
export type ProgramStatus = 'Queued' | 'NotResponding' | 'Processing' | 'Completed';
export type FairFault = 'down' | '500' | 'slow' | 'login-refused';
/** The calls of Fair API v0 fairbot makes, as failCall and callCount name them. */
export type FairCall = 'login' | 'nodes' | 'create' | 'eof' | 'info' | 'result';

/** How long each step of a program takes on a node. */
export interface FairTiming {
  /** A program answers Queued this long before its first command runs. */
  queueMs?: number;
  /** The image pull of a Create. */
  pullMs?: number;
  /** A Start, before the host port is bound. */
  startMs?: number;
  /** A Kill, once its program runs. */
  killMs?: number;
}

export interface FairNodeOptions extends FairTiming {
  node_id: string;
  /** Omitted from GET /nodes when absent (the node's containers then bind 127.0.0.1). */
  host_address?: string;
}

export interface CallFault {
  call: FairCall;
  /** Only calls about programs of this kind (create, eof, info, result). */
  kind?: ProgramKind;
  /** An HTTP status to answer instead; 'down' resets the socket; '500-after-acting' acts, then answers 500. */
  status: number | 'down' | '500-after-acting';
  /** How many matching calls fail [1]. */
  times?: number;
}

export interface StartupCrash {
  /** [1] */
  exitCode?: number;
  /** After Start, always before the diffusion server listens [10]. */
  afterMs?: number;
  /** How many of the next containers crash so [1]. */
  times?: number;
}

export interface FairOptions extends FairTiming {
  port?: number;
  host?: string;
  email?: string;
  password?: string;
  nodes?: FairNodeOptions[];
  /** Delay between Start and the diffusion server listening. */
  coldStartMs?: number;
  /** Forwarded to startDiffusionStandin for each container (read at spawn time). */
  diffusion?: Omit<DiffusionOptions, 'port' | 'host'>;
  /** What successive `info` polls of one program answer; the last one repeats. Durations then default to 0. */
  programStatusSequence?: ProgramStatus[];
  /** Tokens older than this answer 401. */
  tokenTtlMs?: number;
  /** Like docker-proxy: the host port accepts and resets connections during the cold start (default: refused). */
  dockerProxy?: boolean;
  /** The next container(s) exit during their cold start. */
  crashDuringStartup?: StartupCrash;
}

export interface FairRequest {
  method: string;
  /** Raw path as sent (still percent-encoded, e.g. `/api/v0/buckets/1/%23stdin/eof`). */
  path: string;
  body: unknown;
  at: number;
  call?: FairCall;
  /** The kind of the program the call is about, when it names one. */
  kind?: ProgramKind;
}

export interface FairContainer {
  id: string;
  node: string;
  programId: string;
  hostPort: number;
  /** Where the host port is published: the node's host_address (127.0.0.1 without one). */
  hostAddress: string;
  /** created (pulled, never started), running (from Start until it exits, as Docker sees it: the app may still be cold), exited. */
  state: 'created' | 'running' | 'exited';
  readonly running: boolean;
  exitCode?: number;
  diffusion?: DiffusionStandin;
  /** Why the server never came up (e.g. the port was taken at spawn time). */
  error?: string;
}

export interface FairProgram {
  node: string;
  programId: string;
  bucketId: string;
  kind: ProgramKind;
  /** What the program really is (info may answer otherwise: NotResponding, an injected status, the script). */
  status: 'Queued' | 'Processing' | 'Completed';
  result: unknown[];
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
  /** 'request' (FairRequest), 'created' ({node, programId, containerId}), 'start' ({node, programId,
   *  containerId, hostPort}), 'kill' ({node, containerId, ok}), 'exited' ({node, containerId, exitCode}),
   *  'diffusion-listening' (DiffusionStandin, containerId), 'rejected' ({path, message}),
   *  'container-error' (FairContainer), 'program-status' ({node, programId, kind, status}) when a
   *  program starts Processing or Completes. */
  events: EventEmitter;
  /** Valid Create+Start(+Wait) programs received. */
  startPrograms(): number;
  /** Kill programs received (whatever they did). */
  killPrograms(): Array<{ node: string; containerId: string }>;
  /** Programs received, by kind. */
  programCounts(): Record<ProgramKind, number>;
  /** Every program, in the order received, as it stands now. */
  programs(): FairProgram[];
  /** Resolves once the program has reached `status` [Completed] (at once if it has). */
  waitForProgram(programId: string, status?: FairProgram['status'], timeoutMs?: number): Promise<FairProgram>;
  /** The containers running now (started, not exited; the app may still be cold). */
  liveContainers(): Array<{ node: string; containerId: string; programId: string; hostPort: number; hostAddress: string }>;
  /** Requests received for a call (optionally about programs of one kind), faulted ones included. */
  callCount(call: FairCall, kind?: ProgramKind): number;
  /** POST /auth/login requests received (successful or not). */
  logins(): number;
  /** Bucket ids whose stdin was closed. */
  eofs(): string[];
  diffusion(): DiffusionStandin | undefined;
  /** The live diffusion stand-in, waiting for one to start listening if need be. */
  waitForDiffusion(timeoutMs?: number): Promise<DiffusionStandin>;
  expireTokens(): void;
  /** Every request (login only, for 'login-refused') meets the fault. */
  setFault(fault: FairFault | null, opts?: { times?: number; slowMs?: number }): void;
  /** Calls of one kind fail; several can be armed at once, the first armed match applies. */
  failCall(fault: CallFault): void;
  /** Disarms every failCall fault still armed. */
  clearCallFaults(): void;
  /** `info` of every program of this kind answers `status` (e.g. 'Expired'); null turns it off. */
  setProgramStatus(kind: ProgramKind, status: string | null): void;
  /** The node's programs answer NotResponding and stop advancing (containers keep running) until turned off. */
  setNotResponding(nodeId: string, on?: boolean): void;
  removeNode(nodeId: string): void;
  restoreNode(nodeId: string): void;
  /** Changes durations from the next step on, for one node or (without nodeId) every node without its own. */
  setTiming(timing: FairTiming, nodeId?: string): void;
  /** The next container(s) exit during their cold start. */
  crashDuringStartup(crash?: StartupCrash): void;
  /** The live diffusion server dies abruptly; its container exits with exitCode [1]. */
  crashDiffusion(exitCode?: number): void;
  /** Stops every timer, server and socket, whatever state programs are in. */
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

/** Listens on address:port, or rejects with EADDRINUSE. */
function bind(server: NetServer, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

const closeNet = (s: NetServer) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()));

const DEFAULT_TIMING: Required<FairTiming> = { queueMs: 10, pullMs: 20, startMs: 2, killMs: 5 };
const INSTANT: Required<FairTiming> = { queueMs: 0, pullMs: 0, startMs: 0, killMs: 0 };
const KILLED = 137; // 128 + SIGKILL, as Docker reports it

// Ids above 2^53 (and 2^63), so a client that parses them as numbers gets them wrong.
const PROGRAM_ID_BASE = 18446744073709551000n;
const BUCKET_ID_BASE = 9223372036854775900n;

interface Container extends FairContainer {
  /** Resolves with the exit code. */
  exited: Promise<number>;
  onExit(code: number): void;
  /** The host port, held during the cold start (docker-proxy, or the bind probe). */
  proxy?: NetServer;
}

interface Program extends FairProgram {
  commands: Command[];
  polls: number;
  /** What its Create made. */
  container?: Container;
}

interface Node {
  id: string;
  hostAddress?: string;
  timing: FairTiming;
  listed: boolean;
  notResponding: boolean;
  /** Resolves when the node answers again. */
  back: Promise<void>;
  wake(): void;
}

type Reply = { status: number; body?: unknown };
/** A request as a Fair API v0 call: `node` and `id` (program or bucket) from its path. */
type Call = { call: FairCall; node: string; id: string; kind?: ProgramKind };

export async function startFairStandin(opts: FairOptions = {}): Promise<FairStandin> {
  const email = opts.email ?? 'admin@example.com';
  const password = opts.password ?? 'test-password';
  const coldStartMs = opts.coldStartMs ?? 50;
  const script = opts.programStatusSequence;
  const timing: Required<FairTiming> = { ...(script ? INSTANT : DEFAULT_TIMING), ...pickTiming(opts) };
  const events = new EventEmitter();
  const requests: FairRequest[] = [];
  const rejections: FairStandin['rejections'] = [];
  const containers = new Map<string, Container>();
  const programs = new Map<string, Program>(); // key: `${node}\n${programId}`
  const buckets = new Map<string, Program>();
  const eofs: string[] = [];
  const kills: Array<{ node: string; containerId: string }> = [];
  const tokens = new Map<string, number>(); // token → expiry (performance.now())
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const callFaults: Array<CallFault & { times: number }> = [];
  const statusOverrides = new Map<ProgramKind, string>();
  let startupCrash: Required<StartupCrash> | undefined;
  let seq = 0n;
  let logins = 0;
  let fault: FairFault | null = null;
  let faultTimes = Infinity;
  let slowMs = 1000;
  let closed = false;

  const nodes = new Map<string, Node>();
  for (const n of opts.nodes ?? [{ node_id: 'node-1', host_address: '127.0.0.1' }]) {
    const node: Node = {
      id: n.node_id,
      hostAddress: n.host_address,
      timing: pickTiming(n),
      listed: true,
      notResponding: false,
      back: Promise.resolve(),
      wake: () => {},
    };
    nodes.set(n.node_id, node);
  }
  const nodeNamed = (id: string): Node => {
    const node = nodes.get(id);
    if (!node) throw new Error(`no node ${id} in the Fair stand-in`);
    return node;
  };
  const ms = (node: Node, step: keyof FairTiming) => node.timing[step] ?? timing[step];

  const later = (delayMs: number, fn: () => void) => {
    if (closed) return;
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, delayMs);
    timers.add(t);
  };
  // After close() it never resolves: whatever awaited it is dropped with nothing left to run.
  const sleep = (delayMs: number) => new Promise<void>((r) => later(delayMs, r));
  const answering = async (node: Node) => {
    while (node.notResponding) await node.back;
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

  // Returns the global fault for this request (login-refused only counts login requests).
  function takeFault(isLogin: boolean): FairFault | null {
    if (!fault || (fault === 'login-refused' && !isLogin)) return null;
    const f = fault;
    if (--faultTimes <= 0) fault = null;
    return f;
  }

  function takeCallFault({ call, kind }: Call): CallFault['status'] | undefined {
    const i = callFaults.findIndex((f) => f.call === call && (f.kind === undefined || f.kind === kind));
    if (i < 0) return undefined;
    const f = callFaults[i]!;
    if (--f.times <= 0) callFaults.splice(i, 1);
    return f.status;
  }

  /** Which Fair API v0 call a request is, with its path parameters and the kind of program it is about. */
  function parseCall(method: string, seg: string[], body: unknown): Call | undefined {
    const is = (m: string, pattern: string) => {
      const parts = pattern.split('/');
      return m === method && parts.length === seg.length && parts.every((p, i) => p === ':' || p === seg[i]);
    };
    const [, a = '', , b = ''] = seg;
    if (is('POST', 'auth/login')) return { call: 'login', node: '', id: '' };
    if (is('GET', 'nodes')) return { call: 'nodes', node: '', id: '' };
    if (is('PUT', 'nodes/:/programs')) {
      const first = isObj(body) && Array.isArray(body.commands) ? (body.commands[0] as { type?: unknown } | undefined)?.type : undefined;
      const kind = PROGRAM_KINDS.find((k) => k === first);
      return { call: 'create', node: a, id: '', ...(kind && { kind }) };
    }
    if (is('PUT', 'buckets/:/#stdin/eof')) return { call: 'eof', node: '', id: a, kind: buckets.get(a)?.kind };
    for (const call of ['info', 'result'] as const) {
      if (is('GET', `nodes/:/programs/:/${call}`)) return { call, node: a, id: b, kind: programs.get(`${a}\n${b}`)?.kind };
    }
    return undefined;
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
    let seg: string[] | undefined;
    let badPath = false;
    if (path.startsWith('/api/v0/')) {
      try {
        seg = path.slice('/api/v0/'.length).split('/').map(decodeURIComponent); // `%23stdin` → `#stdin`
      } catch {
        badPath = true;
      }
    }
    const call = seg && parseCall(method, seg, body);
    const record: FairRequest = { method, path, body, at: performance.now(), ...(call && { call: call.call }), ...(call?.kind && { kind: call.kind }) };
    requests.push(record);
    events.emit('request', record);

    const isLogin = call?.call === 'login';
    if (isLogin) logins++;
    const f = takeFault(isLogin);
    if (f === 'down') return void req.socket.resetAndDestroy();
    if (f === '500') return sendJson(res, 500, { message: 'internal server error' });
    if (f === 'login-refused') return sendJson(res, 401, { message: 'login refused' });
    if (f === 'slow') await sleep(slowMs);
    if (res.destroyed) return;

    const injected = call && takeCallFault(call);
    if (injected === 'down') return void req.socket.resetAndDestroy();
    if (typeof injected === 'number') return sendJson(res, injected, { message: (STATUS_CODES[injected] ?? 'injected fault').toLowerCase() });

    let reply: Reply;
    if (badPath) reply = { status: 400, body: { message: 'bad percent-encoding in path' } };
    else if (!call) reply = { status: 404, body: { message: `no route ${method} ${path}` } };
    else if (badJson) reply = { status: 400, body: { message: 'request body is not JSON' } };
    else reply = answer(call, body, path, req.headers.authorization);
    if (injected === '500-after-acting') return sendJson(res, 500, { message: 'internal server error' });
    if (reply.body === undefined) res.writeHead(reply.status).end();
    else sendJson(res, reply.status, reply.body);
  }

  function answer({ call, node, id }: Call, body: unknown, path: string, authorization = ''): Reply {
    if (call === 'login') {
      if (!isObj(body) || typeof body.email !== 'string' || typeof body.password !== 'string') {
        return { status: 400, body: { message: 'expected {"email","password","version"}' } };
      }
      if (body.version !== PROTOCOL_VERSION) return { status: 400, body: { message: `unsupported protocol version ${String(body.version)}` } };
      if (body.email !== email || body.password !== password) return { status: 401, body: { message: 'invalid email or password' } };
      const token = randomBytes(24).toString('hex');
      registerSecret(token); // the bearer token must never reach a log or a message
      tokens.set(token, performance.now() + (opts.tokenTtlMs ?? Infinity));
      return { status: 200, body: { token } };
    }

    const auth = /^Bearer (\S+)$/.exec(authorization);
    const expiry = auth ? tokens.get(auth[1]!) : undefined;
    if (expiry === undefined || performance.now() >= expiry) return { status: 401, body: { message: 'token is missing, invalid or expired' } };

    switch (call) {
      case 'nodes': {
        const listed = [...nodes.values()].filter((n) => n.listed);
        return { status: 200, body: { nodes: listed.map((n) => ({ node_id: n.id, ...(n.hostAddress !== undefined && { host_address: n.hostAddress }) })) } };
      }
      case 'create':
        return createProgram(node, body, path);
      case 'eof':
        if (!buckets.has(id)) return { status: 404, body: { message: `no bucket ${id}` } };
        eofs.push(id);
        return { status: 204 };
      case 'info':
      case 'result': {
        const p = programs.get(`${node}\n${id}`);
        if (!p) return { status: 404, body: { message: `no program ${id} on node ${node}` } };
        if (call === 'result') return { status: 200, body: { result: [...p.result] } };
        return { status: 200, body: { status: reportedStatus(p) } };
      }
    }
  }

  function reportedStatus(p: Program): string {
    if (nodeNamed(p.node).notResponding) return 'NotResponding';
    const forced = statusOverrides.get(p.kind);
    if (forced) return forced;
    if (script) return script[Math.min(p.polls++, script.length - 1)]!;
    return p.status;
  }

  function createProgram(nodeId: string, body: unknown, path: string): Reply {
    const node = nodes.get(nodeId);
    if (!node?.listed) return { status: 404, body: { message: `no node ${nodeId}` } };
    const reject = (message: string): Reply => {
      rejections.push({ path, message, body });
      events.emit('rejected', { path, message });
      return { status: 400, body: { message } };
    };
    if (!isObj(body) || body.version !== PROTOCOL_VERSION) return reject(`expected {"version":"${PROTOCOL_VERSION}","commands":[...]}`);
    const cmds = body.commands;
    if (!Array.isArray(cmds) || !cmds.every(isObj)) return reject('commands must be an array of objects');
    let valid: ReturnType<typeof validateProgram>;
    try {
      valid = validateProgram(cmds);
    } catch (err) {
      return reject((err as Error).message);
    }
    seq++;
    const programId = (PROGRAM_ID_BASE + seq).toString();
    const bucketId = (BUCKET_ID_BASE + seq).toString();
    const p: Program = { node: nodeId, programId, bucketId, kind: valid.kind, status: 'Queued', result: [], commands: valid.commands, polls: 0 };
    programs.set(`${nodeId}\n${programId}`, p);
    buckets.set(bucketId, p);
    for (const c of valid.commands) if (c.type === 'Kill') kills.push({ node: nodeId, containerId: c.containerId });
    void run(p, node);
    // Written by hand: JSON.stringify cannot emit integers above 2^53 exactly.
    return { status: 200, body: `{"program_id":${programId},"bucket_id":${bucketId}}` };
  }

  async function run(p: Program, node: Node): Promise<void> {
    await sleep(ms(node, 'queueMs'));
    await answering(node);
    setStatus(p, 'Processing');
    for (const command of p.commands) {
      let entry: unknown;
      try {
        entry = await execute(p, node, command);
      } catch (err) {
        entry = { Err: String(err) };
      }
      await answering(node);
      if (closed) return;
      p.result.push(entry);
      if (isObj(entry) && 'Err' in entry) break;
    }
    setStatus(p, 'Completed');
  }

  function setStatus(p: Program, status: FairProgram['status']): void {
    p.status = status;
    events.emit('program-status', { node: p.node, programId: p.programId, kind: p.kind, status });
  }

  async function execute(p: Program, node: Node, command: Command): Promise<unknown> {
    switch (command.type) {
      case 'Create':
        await sleep(ms(node, 'pullMs'));
        return create(p, node, command.hostPort);
      case 'Start':
        await sleep(ms(node, 'startMs'));
        return start(p.container!);
      case 'Wait': {
        const c = command.containerId === '$0' ? p.container : containerOn(node, command.containerId);
        if (!c) return { Err: `No such container: ${command.containerId}` };
        // docker wait: a container that is not running answers at once (0 if it never ran).
        const exitCode = c.state === 'running' ? await c.exited : (c.exitCode ?? 0);
        return { Ok: { exit_code: exitCode } };
      }
      case 'Kill':
        await sleep(ms(node, 'killMs'));
        return kill(node, command.containerId);
    }
  }

  const containerOn = (node: Node, id: string) => {
    const c = containers.get(id);
    return c?.node === node.id ? c : undefined;
  };

  function create(p: Program, node: Node, hostPort: number): unknown {
    const id = createHash('sha256').update(`container ${p.programId}`).digest('hex');
    let onExit = (_code: number) => {};
    const exited = new Promise<number>((r) => (onExit = r));
    const c: Container = {
      id,
      node: node.id,
      programId: p.programId,
      hostPort,
      hostAddress: node.hostAddress ?? '127.0.0.1',
      state: 'created',
      get running() {
        return this.state === 'running';
      },
      exited,
      onExit,
    };
    containers.set(id, c);
    p.container = c;
    events.emit('created', { node: node.id, programId: p.programId, containerId: id });
    return { Ok: { container_id: id } };
  }

  async function start(c: Container): Promise<unknown> {
    const taken = { Err: `Bind for 0.0.0.0:${c.hostPort} failed: port is already allocated` };
    if ([...containers.values()].some((o) => o.node === c.node && o.running && o.hostPort === c.hostPort)) return taken;
    c.state = 'running'; // reserve the port now, so a concurrent second Start sees it taken
    // Docker binds the host port at Start: probe it (and, as docker-proxy, keep it and reset connections).
    const proxy = createNetServer((s) => s.resetAndDestroy());
    c.proxy = proxy;
    try {
      await bind(proxy, c.hostPort, c.hostAddress);
    } catch {
      c.proxy = undefined;
      if (c.running) c.state = 'created'; // unless a Kill came meanwhile
      return taken;
    }
    if (closed || !c.running || !opts.dockerProxy) {
      c.proxy = undefined;
      await closeNet(proxy);
    }
    if (closed || !c.running) return { Ok: {} }; // killed while binding
    events.emit('start', { node: c.node, programId: c.programId, containerId: c.id, hostPort: c.hostPort });
    const crash = startupCrash;
    if (crash && --crash.times <= 0) startupCrash = undefined;
    if (crash) later(crash.afterMs, () => void exit(c, crash.exitCode, true));
    else later(coldStartMs, () => void spawn(c));
    return { Ok: {} };
  }

  async function spawn(c: Container): Promise<void> {
    const proxy = c.proxy;
    c.proxy = undefined;
    if (proxy) await closeNet(proxy);
    if (closed || !c.running) return; // killed during the cold start
    try {
      const d = await startDiffusionStandin({ ...api.diffusionOptions, port: c.hostPort, host: c.hostAddress });
      if (closed || !c.running) return void (await d.close()); // killed while binding
      c.diffusion = d;
      // A crash or a close of the server itself: the container has exited.
      d.events.once('close', ({ crashed }: { crashed: boolean }) => void exit(c, crashed ? 1 : 0));
      events.emit('diffusion-listening', d, c.id);
    } catch (err) {
      c.error = (err as Error).message;
      void exit(c, 1);
      events.emit('container-error', c);
    }
  }

  /** The container stops (at once, as SIGKILL or a crash would); resolves once its port is free. */
  async function exit(c: Container, exitCode: number, crashed = false): Promise<void> {
    if (c.state === 'exited') return;
    c.state = 'exited';
    c.exitCode = exitCode;
    const proxy = c.proxy;
    c.proxy = undefined;
    if (crashed) c.diffusion?.crash();
    const freed = Promise.all([c.diffusion?.close(), proxy && closeNet(proxy)]);
    c.onExit(exitCode);
    events.emit('exited', { node: c.node, containerId: c.id, exitCode });
    await freed;
  }

  async function kill(node: Node, containerId: string): Promise<unknown> {
    const c = containerOn(node, containerId);
    let result: { Ok: object } | { Err: string };
    if (!c) result = { Err: `No such container: ${containerId}` };
    else if (!c.running) result = { Err: `Cannot kill container: ${containerId}: Container ${containerId} is not running` };
    else {
      await exit(c, KILLED);
      result = { Ok: {} };
    }
    events.emit('kill', { node: node.id, containerId, ok: 'Ok' in result });
    return result;
  }

  const live = () => [...containers.values()].reverse().find((c) => c.running && c.diffusion && !c.diffusion.closed());

  const setNotResponding = (node: Node, on: boolean) => {
    if (node.notResponding === on) return;
    node.notResponding = on;
    if (on) node.back = new Promise<void>((r) => (node.wake = r));
    else node.wake();
  };

  const api: FairStandin = {
    url: '',
    port: 0,
    requests,
    rejections,
    containers,
    diffusionOptions: { ...opts.diffusion },
    events,
    startPrograms: () => api.programCounts().Create,
    killPrograms: () => kills,
    programCounts() {
      const counts: Record<ProgramKind, number> = { Create: 0, Kill: 0, Wait: 0 };
      for (const p of programs.values()) counts[p.kind]++;
      return counts;
    },
    programs: () => [...programs.values()].map(snapshot),
    async waitForProgram(programId, status = 'Completed', timeoutMs = 5000) {
      const order = ['Queued', 'Processing', 'Completed'];
      const reached = () => {
        const p = [...programs.values()].find((q) => q.programId === programId);
        return p && order.indexOf(p.status) >= order.indexOf(status) ? snapshot(p) : undefined;
      };
      const now = reached();
      if (now) return now;
      await waitForEvent(events, 'program-status', timeoutMs, () => reached() !== undefined);
      return reached()!;
    },
    liveContainers: () =>
      [...containers.values()]
        .filter((c) => c.running)
        .map((c) => ({ node: c.node, containerId: c.id, programId: c.programId, hostPort: c.hostPort, hostAddress: c.hostAddress })),
    callCount: (call, kind) => requests.filter((r) => r.call === call && (kind === undefined || r.kind === kind)).length,
    logins: () => logins,
    eofs: () => eofs,
    diffusion: () => live()?.diffusion,
    async waitForDiffusion(timeoutMs = 5000) {
      return live()?.diffusion ?? (await waitForEvent<DiffusionStandin>(events, 'diffusion-listening', timeoutMs));
    },
    expireTokens: () => tokens.clear(),
    setFault(f, o = {}) {
      fault = f;
      faultTimes = o.times ?? Infinity;
      slowMs = o.slowMs ?? 1000;
    },
    clearCallFaults() {
      callFaults.splice(0);
    },
    failCall(f) {
      callFaults.push({ ...f, times: f.times ?? 1 });
    },
    setProgramStatus(kind, status) {
      if (status === null) statusOverrides.delete(kind);
      else statusOverrides.set(kind, status);
    },
    setNotResponding: (nodeId, on = true) => setNotResponding(nodeNamed(nodeId), on),
    removeNode(nodeId) {
      nodeNamed(nodeId).listed = false;
    },
    restoreNode(nodeId) {
      nodeNamed(nodeId).listed = true;
    },
    setTiming(t, nodeId) {
      Object.assign(nodeId === undefined ? timing : nodeNamed(nodeId).timing, pickTiming(t));
    },
    crashDuringStartup(crash = {}) {
      startupCrash = { exitCode: crash.exitCode ?? 1, afterMs: crash.afterMs ?? 10, times: crash.times ?? 1 };
    },
    crashDiffusion(exitCode = 1) {
      const c = live();
      if (!c) throw new Error('no live diffusion stand-in to crash');
      void exit(c, exitCode, true);
    },
    async close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      const serverClosed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      const held = [...containers.values()].map((c) => {
        if (c.running) c.state = 'exited'; // silently: nobody is listening any more
        return Promise.all([c.diffusion?.close(), c.proxy && closeNet(c.proxy)]);
      });
      await Promise.all([serverClosed, ...held]);
    },
  };
  if (opts.crashDuringStartup) api.crashDuringStartup(opts.crashDuringStartup);

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

const snapshot = ({ node, programId, bucketId, kind, status, result }: FairProgram): FairProgram => ({
  node,
  programId,
  bucketId,
  kind,
  status,
  result: [...result],
});

/** Only the durations that are set (an explicit undefined must not hide a default). */
function pickTiming(t: FairTiming): FairTiming {
  const out: FairTiming = {};
  for (const k of ['queueMs', 'pullMs', 'startMs', 'killMs'] as const) if (t[k] !== undefined) out[k] = t[k];
  return out;
}
