import { describe, type LifecycleStatus, type StopOutcome } from '../fair/lifecycle.js';
import type { Requester } from '../jobs/types.js';
import { messages } from '../messages.js';
import type { Services } from '../services.js';
import { isAdmin } from './admin.js';

export interface GpuStatusView extends LifecycleStatus {
  jobsWaiting: number;
  jobsRunning: number;
  generationsLastHour: number;
  medianGenerationMs?: number;
  /** Whether Fair answered just now (absent without a Fair account, or when not checked). */
  controlPlane?: { ok: true; nodes: number } | { ok: false; reason: string };
}

export interface GpuResult {
  ok: boolean;
  /** `/gpu kill` with jobs waiting: the adapter asks again with a confirm button (`confirmed: true`). */
  needsConfirmation?: boolean;
  /** The text to show the admin (ephemeral on chat platforms). */
  message: string;
  status?: GpuStatusView;
}

/** /gpu status | kill, admins only. */
export async function gpu(input: { requester: Requester; subcommand: string; confirmed?: boolean }, services: Services): Promise<GpuResult> {
  if (!isAdmin(input.requester, services.config)) {
    services.logger.warn({ userId: input.requester.userId, platform: input.requester.platform }, '/gpu refused: not an admin');
    return { ok: false, message: messages.adminOnly };
  }
  const sub = input.subcommand.trim().toLowerCase();
  if (sub === '') return { ok: false, message: messages.gpuUsage };
  if (sub === 'status') return gpuStatus(services);
  if (sub === 'kill') {
    const { waiting, running } = services.jobs.counts();
    if (!input.confirmed && waiting + running > 0 && services.lifecycle.managed) {
      return { ok: true, needsConfirmation: true, message: messages.gpuKillConfirm(waiting, running), status: statusView(services) };
    }
    return gpuKill(input.requester, services);
  }
  return { ok: false, message: messages.gpuUnknownSubcommand(sub.slice(0, 40)) };
}

/** The status, with a fresh check that Fair answers: a status that says "ready" should be one that was checked. */
async function gpuStatus(services: Services): Promise<GpuResult> {
  const status: GpuStatusView = { ...statusView(services), controlPlane: await services.lifecycle.checkControlPlane() };
  return { ok: true, message: formatStatus(status), status };
}

function statusView(services: Pick<Services, 'lifecycle' | 'jobs'>): GpuStatusView {
  const counts = services.jobs.counts();
  return {
    ...services.lifecycle.status(),
    jobsWaiting: counts.waiting,
    jobsRunning: counts.running,
    generationsLastHour: services.jobs.generationsLastHour(),
    medianGenerationMs: services.jobs.medianGenerationMs(),
  };
}

async function gpuKill(requester: Requester, services: Services): Promise<GpuResult> {
  if (!services.lifecycle.managed) return { ok: false, message: messages.gpuKillNotManaged };
  services.logger.info({ userId: requester.userId, platform: requester.platform }, '/gpu kill');
  // End the jobs first, so none of them asks for a fresh start while the server stops.
  const ended = services.jobs.endAll(messages.killedByAdmin, 'killed');
  let outcome: StopOutcome;
  try {
    outcome = await services.lifecycle.kill();
  } catch (error) {
    outcome = { kind: 'failed', reason: describe(error) };
  }
  const status = statusView(services);
  switch (outcome.kind) {
    case 'stopped':
      return { ok: true, message: messages.gpuKilled(ended), status };
    case 'not-running':
    case 'in-use':
      return { ok: true, message: ended > 0 ? messages.gpuKilled(ended) : messages.gpuNotRunning, status };
    case 'stopped-answer-lost':
      return { ok: true, message: messages.gpuKilledAnswerLost(ended, outcome.node), status };
    case 'external':
      return { ok: false, message: messages.gpuKillExternal(outcome.endpoint), status };
    case 'pending':
      return { ok: false, message: messages.gpuKillPending(outcome.reason, ended), status };
    case 'failed':
      return { ok: false, message: messages.gpuKillFailed(outcome.reason), status };
  }
}

function ago(date: Date | undefined, now = Date.now()): string {
  if (!date) return 'never';
  const s = Math.max(0, Math.round((now - date.getTime()) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

/** What every rendering of the status adds as lines: what is pending, who else acts, whether Fair answers. */
export function statusNotes(s: GpuStatusView): string[] {
  const notes: string[] = [];
  if (s.pendingKill) notes.push(messages.statusPending(s.pendingKill));
  if (s.busyElsewhere) notes.push(messages.statusBusyElsewhere(s.busyElsewhere));
  if (s.external) notes.push(messages.statusExternal);
  if (s.controlPlane) notes.push(messages.statusControlPlane(s.controlPlane));
  return notes;
}

/** Plain text for terminals and simple chat replies; adapters may render the view richer. */
function formatStatus(s: GpuStatusView, now = Date.now()): string {
  const lines = [`GPU server: ${s.state} (since ${ago(s.stateSince, now)})`];
  if (s.node) lines.push(`Node: ${s.node}${s.hostAddress ? ` (${s.hostAddress})` : ''}`);
  if (s.endpoint) lines.push(`Endpoint: ${s.endpoint}`);
  if (s.containerId) lines.push(`Container: ${s.containerId.slice(0, 12)}`);
  if (s.programId) lines.push(`Program: ${s.programId}`);
  if (s.startedAt) lines.push(`Started: ${s.startedAt.toISOString()} (${ago(s.startedAt, now)})`);
  if (s.coldStartMs !== undefined) lines.push(`Last cold start: ${(s.coldStartMs / 1000).toFixed(1)} s`);
  lines.push(`Jobs: ${s.jobsWaiting} waiting, ${s.jobsRunning} running`);
  lines.push(`Last generation: ${ago(s.lastGenerationAt, now)}${s.lastGenerationMs !== undefined ? ` (${(s.lastGenerationMs / 1000).toFixed(1)} s)` : ''}`);
  lines.push(`Generations in the last hour: ${s.generationsLastHour}`);
  if (s.medianGenerationMs !== undefined) lines.push(`Median generation: ${(s.medianGenerationMs / 1000).toFixed(1)} s`);
  if (s.idleShutdownAt) lines.push(`Idle shutdown in ${Math.max(0, Math.round((s.idleShutdownAt.getTime() - now) / 1000))} s`);
  if (s.nextStartAttemptAt) lines.push(`Next start attempt in ${Math.ceil((s.nextStartAttemptAt.getTime() - now) / 1000)} s`);
  if (s.lastError) lines.push(`Last error: ${s.lastError}`);
  lines.push(...statusNotes(s));
  if (!s.managed) lines.push('Not managed: no FAIR_EMAIL/FAIR_PASSWORD, using INFERENCE_URL only.');
  return lines.join('\n');
}
