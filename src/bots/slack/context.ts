import type { webApi } from '@slack/bolt';
import type { Logger } from 'pino';
import type { Services } from '../../services.js';
import type { SlackFollowers } from './follow.js';
import type { Inflight, SlackErrorReporter } from './reply.js';

/** What the listeners share: the core services and the adapter's own plumbing. */
export interface SlackContext {
  services: Services;
  log: Logger;
  /** The bot-token client (app.client): uploads and ephemerals after the command returned. */
  client: webApi.WebClient;
  inflight: Inflight;
  /** Follows each job to its outcome (fresh and recovered jobs alike). */
  followers: SlackFollowers;
  /** How long /gpu may take before the ack says "working on it" (Slack allows 3 s). */
  gpuAckBudgetMs: number;
  /** Counts an error a Slack API answered (for /metrics). */
  report: SlackErrorReporter;
}

/** The fields of a slash command the adapter relies on, checked (Slack is trusted, not infallible). */
export interface CommandFields {
  userId: string;
  userName?: string;
  channelId: string;
  text: string;
  responseUrl?: string;
}

export function commandFields(command: Record<string, unknown>): CommandFields | undefined {
  const str = (k: string) => (typeof command[k] === 'string' ? (command[k] as string) : undefined);
  const userId = str('user_id');
  const channelId = str('channel_id');
  if (!userId || !channelId) return undefined;
  return {
    userId,
    userName: str('user_name'),
    channelId,
    text: str('text') ?? '',
    responseUrl: str('response_url'),
  };
}

/** The fields of a block action (a button click) the adapter relies on, checked. */
export interface ActionFields {
  userId: string;
  userName?: string;
  channelId: string;
  responseUrl?: string;
  actionId: string;
  value?: string;
  /** The click came from an ephemeral message (one only the clicker sees). */
  fromEphemeral: boolean;
}

export function actionFields(body: unknown): ActionFields | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const b = body as Record<string, unknown>;
  const obj = (v: unknown) => (v && typeof v === 'object' ? (v as Record<string, unknown>) : {});
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const user = obj(b.user);
  const container = obj(b.container);
  const action = obj(Array.isArray(b.actions) ? b.actions[0] : undefined);
  const userId = str(user.id);
  const channelId = str(obj(b.channel).id) ?? str(container.channel_id);
  const actionId = str(action.action_id);
  if (!userId || !channelId || !actionId) return undefined;
  const responseUrl = str(b.response_url);
  return {
    userId,
    userName: str(user.username) ?? str(user.name),
    channelId,
    responseUrl: responseUrl && /^https?:\/\//.test(responseUrl) ? responseUrl : undefined,
    actionId,
    value: str(action.value),
    fromEphemeral: container.is_ephemeral === true,
  };
}
