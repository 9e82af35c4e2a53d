import type { webApi } from '@slack/bolt';
import type { Logger } from 'pino';
import type { Services } from '../../services.js';
import type { SlackFollowers } from './follow.js';
import type { Inflight } from './reply.js';

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
