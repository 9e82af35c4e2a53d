import { escapeMarkdown, time, TimestampStyles, type APIEmbed, type APIEmbedField } from 'discord.js';
import { statusNotes, type GpuStatusView } from '../../commands/gpu.js';
import type { Config } from '../../config.js';
import { discordMessages } from '../../messages.js';

const COLORS: Record<GpuStatusView['state'], number> = {
  ready: 0x2ecc71,
  starting: 0xf1c40f,
  stopping: 0xe67e22,
  stopped: 0x95a5a6,
};

const FIELD_MAX = 1024;
const clipField = (text: string) => (text.length <= FIELD_MAX ? text : `${text.slice(0, FIELD_MAX - 1)}…`);

/**
 * /gpu status as a Discord embed: state and for how long, node and its address,
 * container, uptime, last cold start, jobs, generations in the last hour, median
 * generation time and the idle-shutdown countdown (a Discord timestamp, so it
 * counts down live in the client).
 */
export function statusEmbed(view: GpuStatusView, config: Pick<Config, 'idleShutdownMs'>, now = Date.now()): APIEmbed {
  const t = discordMessages.status;
  const running = view.state !== 'stopped';
  const fields: APIEmbedField[] = [
    { name: t.state, value: t.stateValue(view.state, t.duration(now - view.stateSince.getTime())), inline: true },
    { name: t.node, value: view.node ? t.nodeValue(view.node, view.hostAddress) : t.none, inline: true },
    { name: t.container, value: view.containerId ? `\`${view.containerId.slice(0, 12)}\`` : t.none, inline: true },
    { name: t.uptime, value: uptimeText(view, running, now), inline: true },
    { name: t.coldStart, value: view.coldStartMs !== undefined ? t.seconds(view.coldStartMs) : t.noneYet, inline: true },
    { name: t.jobs, value: t.jobsValue(view.jobsWaiting, view.jobsRunning), inline: true },
    { name: t.generations, value: String(view.generationsLastHour), inline: true },
    { name: t.median, value: view.medianGenerationMs !== undefined ? t.seconds(view.medianGenerationMs) : t.noneYet, inline: true },
    { name: t.idle, value: idleText(view, config, now), inline: true },
  ];
  if (view.endpoint) fields.push({ name: t.endpoint, value: clipField(escapeMarkdown(view.endpoint)), inline: false });
  if (view.programId) fields.push({ name: t.program, value: `\`${view.programId}\``, inline: true });
  if (view.nextStartAttemptAt) {
    fields.push({
      name: t.nextStart,
      value: t.idleIn(t.duration(view.nextStartAttemptAt.getTime() - now), time(view.nextStartAttemptAt, TimestampStyles.RelativeTime)),
      inline: true,
    });
  }
  if (view.lastError) fields.push({ name: t.lastError, value: clipField(escapeMarkdown(view.lastError)), inline: false });
  const notes = [...(view.managed ? [] : [t.notManaged]), ...statusNotes(view).map((n) => escapeMarkdown(n))];
  return {
    title: t.title,
    color: COLORS[view.state] ?? COLORS.stopped,
    ...(notes.length > 0 ? { description: clipField(notes.join('\n')) } : {}),
    fields,
    timestamp: new Date(now).toISOString(),
  };
}

/** Never "not running" beside a running state: a server the bot did not start has no known start. */
function uptimeText(view: GpuStatusView, running: boolean, now: number): string {
  const t = discordMessages.status;
  if (!running) return t.notRunning;
  return view.startedAt ? t.duration(now - view.startedAt.getTime()) : t.uptimeUnknown;
}

function idleText(view: GpuStatusView, config: Pick<Config, 'idleShutdownMs'>, now: number): string {
  const t = discordMessages.status;
  if (view.idleShutdownAt) {
    return t.idleIn(t.duration(view.idleShutdownAt.getTime() - now), time(view.idleShutdownAt, TimestampStyles.RelativeTime));
  }
  if (view.state === 'stopped') return t.notRunning;
  if (config.idleShutdownMs <= 0) return t.idleOff;
  if (view.jobsWaiting + view.jobsRunning > 0 || view.state === 'starting') return t.idleWhenQueueEmpty;
  return t.idleNotScheduled;
}
