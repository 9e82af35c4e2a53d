/**
 * Model-based test of the GPU server lifecycle (issue 12): random sequences of what users,
 * admins, a second process (the CLI) on the same DATA_DIR, the idle timer, crashes and a
 * faulty, slow Fair do, run against the real services and the Fair stand-in over real
 * sockets. After each command the world is brought to a quiescent point (every job settled,
 * no start or stop in flight anywhere, pending kills given their chance) and the promises
 * are checked:
 *   1. every container running on Fair is the one the shared record tracks (by container id,
 *      or by start program while Fair has not named it), and a container Fair killed is never
 *      still recorded as running (one that crashed by itself stays recorded until a job finds it down);
 *   2. no /gpu kill said "Stopped" while a container of ours was still running, and a kill
 *      that was not confirmed is finished once Fair answers again;
 *   3. every job settled exactly once: its exact image, or a failure message from the catalogue;
 *   4. no job waited for a server past STARTUP_TIMEOUT_S (+ backoff, + slack);
 *   5. never two live containers (checked on every Fair event, not only at quiescent points).
 *
 * `npm test` runs MODEL_RUNS (default 15) sequences of up to MODEL_MAX_COMMANDS (default 8)
 * commands; `npm run test:model` runs a few hundred. A failure prints fast-check's seed and
 * path: MODEL_SEED=<seed> MODEL_PATH=<path> replays (and shrinks from) that sequence (the same
 * commands; the interleavings follow real time, so a rare race may need a few replays).
 * MODEL_VERBOSE=1 prints each command and quiescent point. Bugs the model found in src/ are
 * pinned below as `it.fails` counterexamples; the random runs steer around them unless
 * MODEL_KNOWN_BUGS=1 (use it to check a fix).
 */
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { createServices } from '../src/app.js';
import { gpu } from '../src/commands/gpu.js';
import { loadConfig } from '../src/config.js';
import { ServerRecords, type ServerRecord } from '../src/fair/records.js';
import type { FinalEvent, Job } from '../src/jobs/job.js';
import { messages } from '../src/messages.js';
import type { Services } from '../src/services.js';
import { FAIR_EMAIL, FAIR_PASSWORD, FAST_TIMING, LogCapture, eventually, fairEnv, tempDir } from './helpers/app.js';
import { submit, user } from './helpers/jobs.js';
import { freePort, startFairStandin, type CallFault, type FairStandin, type ProgramKind } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const RUNS = Number(process.env.MODEL_RUNS ?? 15);
const MAX_COMMANDS = Number(process.env.MODEL_MAX_COMMANDS ?? 8);
const SEED = process.env.MODEL_SEED === undefined ? undefined : Number(process.env.MODEL_SEED);
const PATH = process.env.MODEL_PATH;
/** Print every sequence as it runs (MODEL_VERBOSE=1). */
const VERBOSE = process.env.MODEL_VERBOSE === '1';
/** Also generate the commands that meet the known bugs below (MODEL_KNOWN_BUGS=1), e.g. to check a fix. */
const KNOWN_BUGS = process.env.MODEL_KNOWN_BUGS === '1';

const STARTUP_TIMEOUT_S = 2;
const STARTUP_TIMEOUT_MS = STARTUP_TIMEOUT_S * 1000;
const STOP_TIMEOUT_MS = FAST_TIMING.stopTimeoutMs!;
const MAX_BACKOFF_MS = Math.max(...FAST_TIMING.backoffMs!);
/** Idle shutdown of a bot that has it on: 0.004 min = 240 ms. */
const IDLE_MIN = '0.004';
/** Timers slip on a loaded two-core machine: the bounds below are generous on purpose. */
const SLACK_MS = 1_500;
/** One wait for a server: the backoff, then the start's own deadline. */
const WAIT_BOUND_MS = MAX_BACKOFF_MS + STARTUP_TIMEOUT_MS + SLACK_MS;
/** How long a pending kill may take once Fair answers: a few rounds of the sync loop, each within the stop deadline. */
const PENDING_KILL_BOUND_MS = 3 * STOP_TIMEOUT_MS + SLACK_MS;

const LIFECYCLE_LEASE = 'server:gpu-0';
const admin = user('admin-1');

type ProcName = 'bot' | 'cli';

interface Proc {
  name: ProcName;
  services: Services;
}

interface WorldOptions {
  timing?: Partial<typeof FAST_TIMING>;
  /** Jobs may wait no longer than the start's own deadline (no allowance for the known bug). */
  strictWaits?: boolean;
}

interface TrackedJob {
  proc: ProcName;
  prompt: string;
  job: Job;
  submittedAt: number;
  finals: FinalEvent[];
  /** Waits for a server: from submission, or from a 'generating' event, to the next 'generating' or the end. */
  waitsMs: number[];
}

interface KillReply {
  by: ProcName;
  message: string;
  /** Live containers on the stand-in at the moment the reply came. */
  liveAtReply: string[];
  /** Pending/failed replies: what is still to stop (checked once Fair answers again). */
  unfinished: boolean;
}

/** The model: what the commands need to know to be meaningful; the real world is checked, not predicted. */
interface Model {
  cli: boolean;
  botIdle: boolean;
  notResponding: boolean;
}

class World {
  readonly jobs: TrackedJob[] = [];
  readonly kills: KillReply[] = [];
  readonly trace: string[] = [];
  readonly violations: string[] = [];
  bot!: Proc;
  cli: Proc | undefined;
  notResponding = false;
  private prompts = 0;
  private readonly env: Record<string, string>;

  private constructor(
    readonly fair: FairStandin,
    readonly dataDir: { path: string; remove(): void },
    hostPort: number,
    readonly reader: ServerRecords,
    private readonly timing: typeof FAST_TIMING,
    private readonly waitBoundMs: number,
  ) {
    this.env = fairEnv(fair, hostPort, dataDir.path, {
      ADMIN_IDS: `discord:${admin.userId}`,
      STARTUP_TIMEOUT_S: String(STARTUP_TIMEOUT_S),
      QUEUE_CONCURRENCY: '4',
      LOG_LEVEL: 'warn',
    });
    // Invariant 5 at every step, not only at quiescent points.
    fair.events.on('start', () => {
      const live = fair.liveContainers();
      if (live.length > 1) this.violate(`two live containers at once: ${live.map((c) => short(c.containerId)).join(', ')}`);
    });
  }

  static async open({ timing = {}, strictWaits = true }: WorldOptions = {}): Promise<World> {
    const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD });
    const hostPort = await freePort();
    const dir = tempDir('fairbot-model-');
    // Known bug: a start that must first stop what the record names waits for that stop's own
    // deadline on top of its own (see the regression test below); allowed for unless strict.
    const waitBoundMs = WAIT_BOUND_MS + (strictWaits ? 0 : STOP_TIMEOUT_MS);
    const world = new World(fair, dir, hostPort, new ServerRecords(dir.path), { ...FAST_TIMING, ...timing }, waitBoundMs);
    world.bot = world.spawn('bot', false);
    await world.bot.services.lifecycle.recover();
    return world;
  }

  spawn(name: ProcName, idle: boolean): Proc {
    const env = { ...this.env, IDLE_SHUTDOWN_MIN: idle ? IDLE_MIN : '0' };
    const services = createServices(loadConfig(env), { logDestination: new LogCapture(), timing: this.timing });
    return { name, services };
  }

  proc(name: ProcName): Proc {
    return name === 'bot' ? this.bot : this.cli!;
  }

  async ensureCli(): Promise<Proc> {
    if (!this.cli) {
      this.cli = this.spawn('cli', false);
      await this.cli.services.lifecycle.recover();
    }
    return this.cli;
  }

  async stopProc(p: Proc): Promise<void> {
    await p.services.jobs.shutdown(0);
    await p.services.lifecycle.close();
    await p.services.inference.close();
  }

  async restartBot(idle: boolean): Promise<void> {
    await this.stopProc(this.bot);
    this.bot = this.spawn('bot', idle);
    await this.bot.services.lifecycle.recover();
  }

  async exitCli(): Promise<void> {
    if (!this.cli) return;
    const cli = this.cli;
    this.cli = undefined;
    await this.stopProc(cli);
  }

  submit(name: ProcName): TrackedJob {
    const p = this.proc(name);
    const prompt = `${name} prompt ${++this.prompts}`;
    const job = submit(p.services, prompt, user(`${name}-user-${this.prompts}`, name === 'cli' ? 'cli' : 'discord'));
    const tracked: TrackedJob = { proc: name, prompt, job, submittedAt: Date.now(), finals: [], waitsMs: [] };
    let waitingSince: number | undefined = tracked.submittedAt;
    job.subscribe((event) => {
      if (event.type === 'generating' || event.type === 'done' || event.type === 'failed') {
        if (waitingSince !== undefined) tracked.waitsMs.push(Date.now() - waitingSince);
        waitingSince = event.type === 'generating' ? Date.now() : undefined;
      }
      if (event.type === 'done' || event.type === 'failed') {
        tracked.finals.push(event);
        // As an adapter does once the image is posted.
        if (event.type === 'done') queueMicrotask(() => p.services.jobs.delivered(job.id));
      }
    });
    this.jobs.push(tracked);
    return tracked;
  }

  /** /gpu kill (confirmed), noting what ran on Fair the moment the reply came. */
  async kill(name: ProcName): Promise<KillReply> {
    const p = name === 'cli' ? await this.ensureCli() : this.bot;
    const result = await gpu({ requester: admin, subcommand: 'kill', confirmed: true }, p.services);
    const reply: KillReply = {
      by: name,
      message: result.message,
      liveAtReply: this.fair.liveContainers().map((c) => c.containerId),
      unfinished: !result.ok && !result.message.startsWith('The GPU server at'),
    };
    this.kills.push(reply);
    this.note(`  ${name} /gpu kill → ${result.message.slice(0, 110)} (live at reply: ${reply.liveAtReply.map(short).join(',') || 'none'})`);
    if (/^Stopped the GPU server/.test(reply.message) && reply.liveAtReply.length > 0) {
      this.violate(`/gpu kill in the ${name} said "Stopped" while container ${reply.liveAtReply.map(short).join(', ')} was running`);
    }
    return reply;
  }

  /**
   * node-1 answers again, at any moment of a pending kill's polling (that race was a bug: see the
   * regression test below).
   */
  async respondAgain(): Promise<void> {
    this.notResponding = false;
    this.fair.setNotResponding('node-1', false);
  }

  note(line: string): void {
    this.trace.push(line);
    if (VERBOSE) console.log(line);
  }

  violate(what: string): void {
    this.violations.push(what);
    this.note(`  VIOLATION: ${what}`);
  }

  record(): ServerRecord | undefined {
    return this.reader.get();
  }

  procs(): Proc[] {
    return this.cli ? [this.bot, this.cli] : [this.bot];
  }

  /** Every job settled (with a deadline far past any legitimate wait); a job that never does is a violation. */
  async jobsSettled(): Promise<void> {
    const open = this.jobs.filter((j) => j.finals.length === 0);
    await eventually(() => open.every((j) => j.finals.length > 0), 2 * this.waitBoundMs + STOP_TIMEOUT_MS + 5_000, 'every job to settle').catch(() =>
      this.violate(
        `job(s) never settled: ${open
          .filter((j) => j.finals.length === 0)
          .map((j) => `"${j.prompt}" (last event ${j.job.lastEvent.type})`)
          .join(', ')}`,
      ),
    );
  }

  /** No start or stop in flight in any process, nothing left running on Fair but Wait programs. */
  quiet(): boolean {
    for (const p of this.procs()) {
      const { lifecycle, jobs } = p.services;
      const { waiting, running } = jobs.counts();
      if (waiting + running > 0) return false;
      if (lifecycle.state === 'starting' || lifecycle.state === 'stopping' || lifecycle.retryInMs() !== undefined) return false;
    }
    if (this.notResponding) return true; // the node's programs and the sync loop's retries are frozen
    if (this.reader.leases.holderOf(LIFECYCLE_LEASE)) return false;
    return this.fair.programs().every((prog) => prog.kind === 'Wait' || prog.status === 'Completed');
  }

  /** The quiescent point: jobs settled, nothing in flight, and (Fair answering) pending kills finished. */
  async quiesce(): Promise<void> {
    try {
      await this.jobsSettled();
      await eventually(() => this.quiet(), PENDING_KILL_BOUND_MS + 10_000, 'a quiescent point (no start, stop or program in flight)');
    } catch (error) {
      this.violate(
        `${(error as Error).message}: ${this.procs()
          .map((p) => `${p.name} ${p.services.lifecycle.state}`)
          .join(', ')}; record ${describeRecord(this.record())}`,
      );
      return;
    }
    if (this.notResponding) return;
    try {
      await eventually(() => !isPending(this.record()) && this.quiet(), PENDING_KILL_BOUND_MS, 'the pending kill to be finished');
    } catch {
      this.violate(`a pending kill was not finished within ${PENDING_KILL_BOUND_MS} ms of Fair answering: ${JSON.stringify(this.record())}`);
    }
  }

  /** Invariants 1-5 at a quiescent point (synchronous: one consistent snapshot). */
  check(): void {
    const live = this.fair.liveContainers();
    const record = this.record();
    if (live.length > 1) this.violate(`${live.length} live containers: ${live.map((c) => short(c.containerId)).join(', ')}`);
    for (const c of live) {
      const tracked =
        record !== undefined &&
        !record.external &&
        (record.containerId === c.containerId || (record.containerId === undefined && record.programId === c.programId));
      if (!tracked) this.violate(`container ${short(c.containerId)} (program ${c.programId}) runs but the record tracks ${describeRecord(record)}`);
    }
    if (record?.containerId && !isPending(record) && !live.some((c) => c.containerId === record.containerId)) {
      // A server that crashed by itself stays recorded until the next job finds it down; one that
      // was killed must not still be recorded as running.
      const container = this.fair.containers.get(record.containerId);
      if (container?.exitCode === 137) this.violate(`the record says ${record.phase} for container ${short(record.containerId)}, which Fair killed`);
    }
    if (!this.notResponding) {
      for (const reply of this.kills.filter((k) => k.unfinished)) {
        const stillUp = reply.liveAtReply.filter((id) => live.some((c) => c.containerId === id));
        if (stillUp.length > 0)
          this.violate(
            `/gpu kill in the ${reply.by} said "${reply.message.slice(0, 80)}", yet container ${stillUp.map(short).join(', ')} still runs with Fair answering`,
          );
      }
      for (const reply of this.kills) reply.unfinished = false;
    }
    for (const j of this.jobs) {
      if (j.finals.length !== 1) this.violate(`job "${j.prompt}" settled ${j.finals.length} times`);
      const final = j.finals[0];
      if (final?.type === 'done' && !final.image.bytes.equals(pngForPrompt(j.prompt))) this.violate(`job "${j.prompt}" got the wrong image`);
      if (final?.type === 'failed' && !KNOWN_FAILURES.some((re) => re.test(final.message)))
        this.violate(`job "${j.prompt}" failed with an unknown text: ${final.message}`);
      const longest = Math.max(0, ...j.waitsMs);
      if (longest > this.waitBoundMs)
        this.violate(
          `job "${j.prompt}" waited ${longest} ms for a server (bound ${this.waitBoundMs} ms): ${final?.type === 'failed' ? final.message : 'done'}`,
        );
    }
    this.note(
      `  quiescent: live ${live.map((c) => short(c.containerId)).join(',') || 'none'}; record ${describeRecord(record)}; jobs ${this.jobs.map((j) => `${j.prompt.split(' ').pop()}:${outcomeWord(j)}`).join(' ')}`,
    );
  }

  async close(): Promise<void> {
    this.fair.setNotResponding('node-1', false);
    for (const p of this.procs()) await this.stopProc(p).catch(() => undefined);
    await this.fair.close();
    this.reader.close();
    this.dataDir.remove();
  }
}

const KNOWN_FAILURES = [
  new RegExp(`^${escapeRegExp(messages.killedByAdmin)}$`),
  new RegExp(`^${escapeRegExp(messages.stoppedForShutdown)}$`),
  new RegExp(`^${escapeRegExp(messages.startupTimeout(STARTUP_TIMEOUT_S))}$`),
  /^Could not start the GPU server: .+\. Your image was not generated/,
  /^Image generation failed: .+\. Try again/,
];

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function isPending(record: ServerRecord | undefined): boolean {
  return record !== undefined && (record.abandoned || record.phase === 'stopping');
}

function short(id: string): string {
  return id.slice(0, 8);
}

function describeRecord(record: ServerRecord | undefined): string {
  if (!record) return 'nothing';
  const flags = [record.abandoned && 'abandoned', record.external && 'external'].filter(Boolean).join(' ');
  return `${record.phase}${flags ? ` (${flags})` : ''} program ${record.programId ?? '-'} container ${record.containerId ? short(record.containerId) : '-'}`;
}

function outcomeWord(j: TrackedJob): string {
  const f = j.finals[0];
  if (!f) return 'open';
  if (f.type === 'done') return 'image';
  return f.message.slice(0, 24).replace(/\s+/g, '_');
}

// --- commands -------------------------------------------------------------------------

type Trigger = 'at-once' | 'put' | 'created' | 'start' | 'listening' | 'settled';
type Interruption = 'kill-by-bot' | 'kill-by-cli' | 'restart-bot' | 'exit-cli';

/** What one command does; every command ends at a checked quiescent point. */
abstract class Step implements fc.AsyncCommand<Model, World> {
  /** Whether the command makes sense in this model state (most always do). */
  check(_m: Readonly<Model>): boolean {
    return true;
  }
  protected abstract act(m: Model, w: World): Promise<void>;
  abstract toString(): string;
  /** Faults armed for this command are disarmed before the quiescent point. */
  protected healAfter = false;

  async run(m: Model, w: World): Promise<void> {
    w.note(this.toString());
    await this.act(m, w);
    await w.jobsSettled();
    if (this.healAfter) w.fair.clearCallFaults();
    await w.quiesce();
    w.check();
    if (w.violations.length > 0) throw new Error(`invariant broken:\n${w.violations.join('\n')}\n--- trace ---\n${w.trace.join('\n')}`);
  }
}

class Submit extends Step {
  constructor(
    readonly who: ProcName,
    readonly count: number,
  ) {
    super();
  }
  async act(m: Model, w: World) {
    if (this.who === 'cli') await w.ensureCli();
    m.cli ||= this.who === 'cli';
    for (let i = 0; i < this.count; i++) w.submit(this.who);
  }
  override toString(): string {
    return `submit ${this.count} job(s) in the ${this.who}`;
  }
}

class Kill extends Step {
  constructor(readonly who: ProcName) {
    super();
  }
  async act(m: Model, w: World) {
    m.cli ||= this.who === 'cli';
    await w.kill(this.who);
  }
  override toString(): string {
    return `/gpu kill in the ${this.who}`;
  }
}

/** A job starts the server; at a point of its start, an admin kills, the bot restarts or the CLI exits. */
class DuringStart extends Step {
  constructor(
    readonly submitter: ProcName,
    readonly trigger: Trigger,
    readonly then: Interruption,
  ) {
    super();
  }
  override check(m: Readonly<Model>): boolean {
    return this.then !== 'exit-cli' || m.cli || this.submitter === 'cli';
  }
  async act(m: Model, w: World) {
    if (this.submitter === 'cli' || this.then === 'kill-by-cli') await w.ensureCli();
    m.cli ||= this.submitter === 'cli' || this.then === 'kill-by-cli';
    const job = w.submit(this.submitter);
    await reached(w, this.trigger, job);
    w.note(`  trigger ${this.trigger} ${job.finals.length ? '(job already settled)' : ''}`);
    switch (this.then) {
      case 'kill-by-bot':
        await w.kill('bot');
        break;
      case 'kill-by-cli':
        await w.kill('cli');
        break;
      case 'restart-bot':
        await w.restartBot(m.botIdle);
        break;
      case 'exit-cli':
        await w.exitCli();
        m.cli = false;
        break;
    }
  }
  override toString(): string {
    return `${this.submitter} submits; at ${this.trigger}: ${this.then}`;
  }
}

/** The moment of a start to interrupt at, or the job's end if the start never gets there. */
async function reached(w: World, trigger: Trigger, job: TrackedJob): Promise<void> {
  if (trigger === 'at-once') return;
  const settled = job.job.outcome.then(() => undefined);
  if (trigger === 'settled') return void (await settled);
  const event = { put: 'request', created: 'created', start: 'start', listening: 'diffusion-listening' }[trigger];
  let listener: ((value: { call?: string; kind?: string }) => void) | undefined;
  const seen = new Promise<void>((resolve) => {
    listener = (value) => {
      if (trigger !== 'put' || (value.call === 'create' && value.kind === 'Create')) resolve();
    };
    w.fair.events.on(event, listener);
  });
  try {
    await Promise.race([seen, settled]);
  } finally {
    w.fair.events.off(event, listener!);
  }
}

class IdleFire extends Step {
  override check(m: Readonly<Model>): boolean {
    return m.botIdle;
  }
  async act(_m: Model, w: World) {
    const { lifecycle } = w.bot.services;
    // The timer is armed only on a ready server of ours: let it fire and its stop finish.
    await eventually(() => lifecycle.status().idleShutdownAt === undefined && lifecycle.state !== 'stopping', 2 * STOP_TIMEOUT_MS + 5_000, 'the idle stop');
  }
  override toString(): string {
    return 'the idle timer fires';
  }
}

class CrashDiffusion extends Step {
  constructor(readonly exitCode: number) {
    super();
  }
  async act(_m: Model, w: World) {
    if (w.fair.diffusion()) w.fair.crashDiffusion(this.exitCode);
    else w.note('  (no live diffusion server to crash)');
  }
  override toString(): string {
    return `the diffusion server crashes (exit ${this.exitCode})`;
  }
}

class ArmStartupCrash extends Step {
  constructor(
    readonly exitCode: number,
    readonly afterMs: number,
  ) {
    super();
  }
  async act(_m: Model, w: World) {
    w.fair.crashDuringStartup({ exitCode: this.exitCode, afterMs: this.afterMs });
    w.submit('bot');
  }
  override toString(): string {
    return `the next container crashes ${this.afterMs} ms into its cold start (exit ${this.exitCode}); the bot submits`;
  }
}

/** Fair fails some calls while a job starts the server, or while an admin kills it. */
class Faulty extends Step {
  protected override healAfter = true;
  constructor(
    readonly fault: CallFault,
    readonly during: 'submit' | 'kill' | 'kill-during-start',
  ) {
    super();
  }
  async act(_m: Model, w: World) {
    w.fair.failCall(this.fault);
    if (this.during === 'submit') w.submit('bot');
    else if (this.during === 'kill') await w.kill('bot');
    else {
      const job = w.submit('bot');
      await reached(w, 'created', job);
      await w.kill('bot');
    }
  }
  override toString(): string {
    return `Fair answers ${this.fault.call}${this.fault.kind ? `(${this.fault.kind})` : ''} with ${this.fault.status} ×${this.fault.times}, during ${this.during}`;
  }
}

class NotResponding extends Step {
  constructor(readonly on: boolean) {
    super();
  }
  override check(m: Readonly<Model>): boolean {
    return m.notResponding !== this.on;
  }
  async act(m: Model, w: World) {
    m.notResponding = this.on;
    if (this.on) {
      w.notResponding = true;
      w.fair.setNotResponding('node-1', true);
    } else await w.respondAgain();
  }
  override toString(): string {
    return `node-1 ${this.on ? 'stops responding' : 'responds again'}`;
  }
}

class SlowPrograms extends Step {
  constructor(
    readonly queueMs: number,
    readonly pullMs: number,
  ) {
    super();
  }
  async act(_m: Model, w: World) {
    w.fair.setTiming({ queueMs: this.queueMs, pullMs: this.pullMs });
  }
  override toString(): string {
    return `programs queue ${this.queueMs} ms, Create pulls ${this.pullMs} ms`;
  }
}

class RestartBot extends Step {
  constructor(readonly idle: boolean) {
    super();
  }
  async act(m: Model, w: World) {
    m.botIdle = this.idle;
    await w.restartBot(this.idle);
  }
  override toString(): string {
    return `the bot restarts (idle shutdown ${this.idle ? 'on' : 'off'})`;
  }
}

class ExitCli extends Step {
  override check(m: Readonly<Model>): boolean {
    return m.cli;
  }
  async act(m: Model, w: World) {
    m.cli = false;
    await w.exitCli();
  }
  override toString(): string {
    return 'the CLI exits';
  }
}

/**
 * The node answers again in the worst moment for a pending kill: right after a `result` read
 * that showed no Create entry, while its `info` request is on the wire (that answer is held
 * 300 ms, so the start program has meanwhile run to Completed).
 */
class NodeBackBetweenResultAndInfo extends Step {
  async act(m: Model, w: World) {
    const starts = new Set(
      w.fair
        .programs()
        .filter((p) => p.kind === 'Create')
        .map((p) => p.programId),
    );
    await new Promise<void>((resolve) => {
      const onRequest = (q: { call?: string; path: string }) => {
        if (q.call !== 'info' || ![...starts].some((id) => q.path.includes(`/programs/${id}/`))) return;
        w.fair.events.off('request', onRequest);
        w.fair.setFault('slow', { times: 1, slowMs: 300 }); // this very info request
        w.fair.setNotResponding('node-1', false);
        m.notResponding = w.notResponding = false;
        resolve();
      };
      w.fair.events.on('request', onRequest);
    });
  }
  override toString(): string {
    return 'node-1 answers again between a result read and an info read of the abandoned start program';
  }
}

/** Waits for an attempt to finish a pending kill to take the lifecycle lease, then to let it go. */
class PendingKillAttempt extends Step {
  async act(_m: Model, w: World) {
    const held = () => w.reader.leases.holderOf(LIFECYCLE_LEASE) !== undefined;
    await eventually(held, 5_000, 'an attempt to finish the pending kill');
    await eventually(() => !held(), 20_000, 'the attempt to end');
  }
  override toString(): string {
    return 'an attempt to finish the pending kill runs to its end';
  }
}

const proc = fc.constantFrom<ProcName>('bot', 'bot', 'cli');
const trigger = fc.constantFrom<Trigger>('at-once', 'put', 'created', 'start', 'listening', 'settled');
const interruption = fc.constantFrom<Interruption>('kill-by-bot', 'kill-by-bot', 'kill-by-cli', 'restart-bot', 'exit-cli');
const fault: fc.Arbitrary<CallFault> = fc.oneof(
  fc.record({
    call: fc.constantFrom<CallFault['call']>('create', 'eof', 'info', 'result'),
    kind: fc.constantFrom<ProgramKind | undefined>(undefined, 'Create', 'Kill', 'Wait'),
    status: fc.constantFrom<CallFault['status']>(500, 503, 'down'),
    times: fc.integer({ min: 1, max: 3 }),
  }),
  fc.record({
    call: fc.constant<CallFault['call']>('create'),
    // A start program answered 500 after Fair made it: known bug (see the regression test below).
    kind: KNOWN_BUGS ? fc.constantFrom<ProgramKind>('Create', 'Kill') : fc.constant<ProgramKind>('Kill'),
    status: fc.constant<CallFault['status']>('500-after-acting'),
    times: fc.constant(1),
  }),
);

const commands = fc.commands(
  [
    fc.tuple(proc, fc.integer({ min: 1, max: 2 })).map(([who, n]) => new Submit(who, n)),
    proc.map((who) => new Kill(who)),
    fc.tuple(proc, trigger, interruption).map(([who, t, then]) => new DuringStart(who, t, then)),
    fc.constant(new IdleFire()),
    fc.integer({ min: 1, max: 3 }).map((code) => new CrashDiffusion(code)),
    fc.tuple(fc.integer({ min: 1, max: 3 }), fc.constantFrom(5, 60)).map(([code, after]) => new ArmStartupCrash(code, after)),
    fc.tuple(fault, fc.constantFrom<Faulty['during']>('submit', 'kill', 'kill-during-start')).map(([f, d]) => new Faulty(f, d)),
    fc.boolean().map((on) => new NotResponding(on)),
    fc.tuple(fc.constantFrom(10, 150, 600), fc.constantFrom(20, 300, 1_200, 2_500)).map(([q, p]) => new SlowPrograms(q, p)),
    fc.boolean().map((idle) => new RestartBot(idle)),
    fc.constant(new ExitCli()),
  ],
  { maxCommands: MAX_COMMANDS, replayPath: PATH },
);

describe('the GPU server lifecycle, model-based', () => {
  it(
    `holds its promises over ${RUNS} random sequences of up to ${MAX_COMMANDS} commands (seeded; MODEL_SEED/MODEL_PATH replay)`,
    async () => {
      await fc.assert(
        fc.asyncProperty(commands, (cmds) => runSequence(cmds)),
        { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: process.env.MODEL_SHRINK === '0', verbose: VERBOSE ? 2 : 1 },
      );
    },
    RUNS * 90_000 + 300_000,
  );
});

/**
 * Counterexamples the sequences above found, shrunk. The fixed ones are regression tests; the two
 * `it.fails` are a limitation of Fair API v0 as the bot speaks it (MODEL_KNOWN_BUGS=1 generates them).
 */
describe('counterexamples found by the model', () => {
  // Found with seed 1867597387: the start program's PUT answered 500 although Fair made the
  // program. No call of Fair API v0 lists a node's programs, so that program cannot be found:
  // the bot sends the start program again only while nothing listens on the port, labels a
  // server it has no id for ("started outside this bot", never claimed stopped), and a /gpu kill
  // answers "Not sure everything is stopped ... check node X" rather than "Stopped". The
  // invariant "every container the bot asked for is tracked" cannot hold for that first program:
  // these stay expected failures, and the note of the lifecycle issue says so.
  it.fails('a start program answered 500 after Fair made it: its container stays tracked', async () => {
    await runSequence([new Faulty({ call: 'create', kind: 'Create', status: '500-after-acting', times: 1 }, 'submit')]);
  });

  // The same with a /gpu kill during the start (found with MODEL_KNOWN_BUGS=1). The reply is now
  // "Not sure everything is stopped" (no false "Stopped"); the untracked container remains.
  it.fails('a start program answered 500 after Fair made it, then /gpu kill: no "Stopped" while its container runs', async () => {
    await runSequence([new Faulty({ call: 'create', kind: 'Create', status: '500-after-acting', times: 1 }, 'kill-during-start')]);
  });

  // Found with seed -1261986871 (fixed: close() waits for the unanswered PUT; an earlier start
  // adopted without ids is labelled): the bot restarts (close()) while Fair answers the start
  // program's PUT. close() closed the database at once; the late answer's write (lateProgram)
  // then failed, so the record stayed `creating` with no program id while the container started.
  // Nothing can name that container any more: once STARTUP_TIMEOUT_S has passed, the sync loop's
  // pending kill says "Fair has not answered the start program yet" forever. Worse, a job within
  // that window adopts the answering server
  // through finishEarlierStart (record `ready`, still no ids), and /gpu kill then finds "nothing
  // was created", deletes the record and replies "Stopped the GPU server" with no Kill sent and
  // the container still running.
  it('a restart while Fair answers the start program: its container stays tracked, and no false "Stopped"', async () => {
    await runSequence([new DuringStart('bot', 'put', 'restart-bot'), new Submit('bot', 1), new Kill('bot')]);
  });

  // Found with seed 1351277613 (fixed: the stop ends with the start's deadline; shrunk: node stops responding, a start times out and is
  // abandoned before Fair named its container, then a job): the job's start must first stop
  // what the record names (retireBeforeStart), and that stop runs to its own deadline
  // (stopTimeoutMs), not the start's: the job waits STARTUP_TIMEOUT_S + the stop deadline, then
  // reads "the previous GPU server could not be stopped first". (Issue 12: "A start never waits
  // for a stop beyond its own STARTUP_TIMEOUT_S".) A stop deadline longer than the start's shows it plainly.
  it('a start that must stop an abandoned one first still ends within STARTUP_TIMEOUT_S', async () => {
    // The sync loop seldom (a pending kill is still finished within the final drain, once Fair answers).
    const timing = { stopTimeoutMs: 6_000, syncIntervalMs: 4_000 };
    await runSequence([new NotResponding(true), new Submit('bot', 1), new PendingKillAttempt(), new Submit('bot', 1)], { timing, strictWaits: true });
  });

  // Found with seed 1065130107 (fixed: status is read before result; a timing race, the steps below force it): a start given up
  // while node-1 did not respond is a pending kill. namedContainer reads the program's
  // `result` (no Create entry yet), then its `info`; when the program runs to Completed in
  // between, "Completed without a Create entry" is taken for "made no container": the record is
  // removed as if nothing had been created, and the container runs untracked (a later /gpu kill
  // says "not running"). Reading `result` again after seeing Completed would close the window.
  it('a pending kill whose start program completes between its result and info reads still kills the container', async () => {
    await runSequence([new NotResponding(true), new Submit('bot', 1), new NodeBackBetweenResultAndInfo()]);
  });
});

async function runSequence(cmds: Iterable<fc.AsyncCommand<Model, World>>, options: WorldOptions = {}): Promise<void> {
  const world = await World.open(options);
  try {
    await fc.asyncModelRun(() => ({ model: { cli: false, botIdle: false, notResponding: false }, real: world }), cmds);
    await finalDrain(world);
  } finally {
    await world.close();
  }
}

/** Fair healthy again, a last /gpu kill: nothing may be left running, nothing left recorded. */
async function finalDrain(w: World): Promise<void> {
  w.note('final: Fair answers, faults cleared, the bot kills the server');
  await w.respondAgain();
  w.fair.clearCallFaults();
  await w.quiesce();
  w.check();
  const reply = await w.kill('bot');
  if (reply.unfinished) await w.quiesce();
  if (w.fair.liveContainers().length > 0) w.violate(`after the final kill, ${w.fair.liveContainers().length} container(s) still run`);
  if (w.fair.liveContainers().length === 0 && isPending(w.record())) w.violate(`after the final kill, the record still says ${describeRecord(w.record())}`);
  if (w.violations.length > 0) throw new Error(`invariant broken:\n${w.violations.join('\n')}\n--- trace ---\n${w.trace.join('\n')}`);
}
