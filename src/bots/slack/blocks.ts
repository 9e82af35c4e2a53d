import { randomBytes } from 'node:crypto';
import type { types } from '@slack/bolt';
import { statusNotes, type GpuStatusView } from '../../commands/gpu.js';
import type { Requester } from '../../jobs/types.js';
import { messages, slackMessages } from '../../messages.js';
import { escapeMrkdwn, truncate } from './text.js';

/**
 * Block Kit for the Slack adapter. Every button carries what it acts on in its `value`
 * (a job id), never in memory: a click after a restart still works.
 */
export const ACTIONS = {
  reroll: 'fairbot_reroll',
  cancel: 'fairbot_cancel',
  killConfirm: 'fairbot_gpu_kill_confirm',
  killKeep: 'fairbot_gpu_kill_keep',
} as const;

export type Block = Record<string, unknown>;

/** `{ blocks }` for a Web API call or an ack (nothing when there are none). */
export function withBlocks(blocks: Block[] | undefined): { blocks?: types.KnownBlock[] } {
  return blocks ? { blocks: blocks as unknown as types.KnownBlock[] } : {};
}

const plain = (text: string) => ({ type: 'plain_text', text, emoji: false });
const mrkdwn = (text: string) => ({ type: 'mrkdwn', text, verbatim: true });

function button(actionId: string, label: string, value: string, style?: 'primary' | 'danger'): Block {
  return { type: 'button', action_id: actionId, text: plain(label), value, ...(style ? { style } : {}) };
}

/** What newJobId() makes (base36 time + hex); anything else in a button value is refused. */
export function readJobId(value: unknown): string | undefined {
  return typeof value === 'string' && /^[a-z0-9]{4,40}$/.test(value) ? value : undefined;
}

/**
 * A block_id new on every rendering: Slack wants a new one each time a message is updated
 * (replace_original), and nothing reads them back (buttons carry their job id in `value`).
 */
const freshBlockId = (name: string) => `${name}_${randomBytes(4).toString('hex')}`;

/** A job's status message while it waits or runs: the text and a Cancel button. */
export function progressBlocks(text: string, jobId: string): Block[] {
  return [
    { type: 'section', text: mrkdwn(escapeMrkdwn(text)) },
    { type: 'actions', block_id: freshBlockId(`fairbot_job_${jobId}`), elements: [button(ACTIONS.cancel, slackMessages.cancelButton, jobId)] },
  ];
}

/**
 * The caption of an image, as rich text: the prompt is a plain `text` element, shown
 * literally by Slack (no `<!channel>` or `<@U…>` mention, no *bold* or _italics_: rich
 * text only formats what its `style` says), and who asked is a `user` element.
 * The wording is messages.imageCaption's, filled with placeholders and split on them.
 */
export function captionBlocks(prompt: string, requester: Requester): Block[] {
  const P = '\uE000';
  const U = '\uE001';
  const template = messages.imageCaption(P, { ...requester, userName: U });
  const elements: Block[] = [];
  for (const piece of template.split(new RegExp(`(${P}|${U})`))) {
    if (piece === '') continue;
    if (piece === P) elements.push({ type: 'text', text: prompt });
    else if (piece === U) {
      if (/^[UW][A-Z0-9]{2,}$/.test(requester.userId)) elements.push({ type: 'user', user_id: requester.userId });
      else elements.push({ type: 'text', text: requester.userName ?? requester.userId });
    } else elements.push({ type: 'text', text: piece });
  }
  return [{ type: 'rich_text', elements: [{ type: 'rich_text_section', elements }] }];
}

/** Under an image: the prompt (plain text) and the Re-roll button. */
export function rerollBlocks(jobId: string, prompt: string): Block[] {
  return [
    {
      type: 'section',
      block_id: freshBlockId(`fairbot_reroll_${jobId}`),
      text: plain(slackMessages.rerollPrompt(truncate(prompt, 200))),
      accessory: button(ACTIONS.reroll, slackMessages.rerollButton, jobId, 'primary'),
    },
  ];
}

/** /gpu kill while jobs wait: the question and Confirm / Keep. */
export function killConfirmBlocks(question: string): Block[] {
  return [
    { type: 'section', text: mrkdwn(escapeMrkdwn(question)) },
    {
      type: 'actions',
      block_id: freshBlockId('fairbot_gpu_kill'),
      elements: [
        button(ACTIONS.killConfirm, slackMessages.killConfirmButton, 'kill', 'danger'),
        button(ACTIONS.killKeep, slackMessages.killKeepButton, 'keep'),
      ],
    },
  ];
}

/** /gpu status as Block Kit: a header, the figures as fields, the rest as context. */
export function statusBlocks(s: GpuStatusView, now = Date.now()): Block[] {
  const m = slackMessages;
  const none = m.statusNone;
  const field = (label: string, value: string) => mrkdwn(`*${escapeMrkdwn(label)}*\n${escapeMrkdwn(value)}`);
  const since = (d: Date | undefined) => (d ? m.duration(now - d.getTime()) : undefined);
  const fields = [
    field(m.statusFieldState, m.statusStateFor(s.state, since(s.stateSince) ?? none)),
    field(m.statusFieldNode, s.node ? `${s.node}${s.hostAddress ? ` (${s.hostAddress})` : ''}` : none),
    field(m.statusFieldContainer, s.containerId ? s.containerId.slice(0, 12) : none),
    field(m.statusFieldUptime, since(s.startedAt) ?? none),
    field(m.statusFieldColdStart, s.coldStartMs !== undefined ? m.statusSeconds(s.coldStartMs) : none),
    field(m.statusFieldJobs, m.statusJobs(s.jobsWaiting, s.jobsRunning)),
    field(m.statusFieldGenerations, String(s.generationsLastHour)),
    field(m.statusFieldMedian, s.medianGenerationMs !== undefined ? m.statusSeconds(s.medianGenerationMs) : none),
    field(
      m.statusFieldLastGeneration,
      s.lastGenerationAt
        ? `${m.statusAgo(since(s.lastGenerationAt)!)}${s.lastGenerationMs !== undefined ? ` (${m.statusSeconds(s.lastGenerationMs)})` : ''}`
        : none,
    ),
    field(m.statusFieldIdle, s.idleShutdownAt ? m.statusIdleIn(m.duration(s.idleShutdownAt.getTime() - now)) : m.statusIdleOff),
  ];
  const notes: string[] = [];
  if (s.endpoint) notes.push(m.statusEndpoint(s.endpoint));
  if (s.programId) notes.push(m.statusProgram(s.programId));
  if (s.nextStartAttemptAt) notes.push(m.statusNextStart(m.duration(s.nextStartAttemptAt.getTime() - now)));
  if (s.lastError) notes.push(m.statusLastError(truncate(s.lastError, 500)));
  notes.push(...statusNotes(s).map((n) => truncate(n, 500)));
  if (!s.managed) notes.push(m.statusNotManaged);
  const blocks: Block[] = [
    { type: 'header', text: plain(truncate(m.statusTitle(s.state), 150)) },
    // A section holds at most 10 fields.
    { type: 'section', fields: fields.slice(0, 10) },
  ];
  if (notes.length > 0) blocks.push({ type: 'context', elements: notes.slice(0, 10).map((n) => mrkdwn(escapeMrkdwn(n))) });
  return blocks;
}
