import { slackMessages } from '../../messages.js';

export interface SlackFailure {
  /** Short machine-ish code for logs: `not_in_channel`, `http_413`, `request_error`, ... */
  code: string;
  /** A clause the user can read (completes messages.deliveryFailed). */
  reason: string;
}

/**
 * What went wrong in a Web API call, in words. The WebClient throws coded errors:
 * platform errors (`{ok:false, error}`), HTTP errors (a non-200 answer, e.g. the upload
 * URL refusing the bytes), request errors (no answer) and rate-limit exhaustion.
 */
export function describeSlackError(error: unknown): SlackFailure {
  const e = (error ?? {}) as { code?: unknown; data?: { error?: unknown }; statusCode?: unknown; message?: unknown };
  const message = typeof e.message === 'string' ? e.message : String(error);
  switch (e.code) {
    case 'slack_webapi_platform_error': {
      const code = typeof e.data?.error === 'string' ? e.data.error : 'unknown_error';
      return { code, reason: platformReason(code) };
    }
    case 'slack_webapi_http_error': {
      const status = typeof e.statusCode === 'number' ? e.statusCode : 0;
      return { code: `http_${status}`, reason: slackMessages.uploadRefused(`HTTP ${status}`) };
    }
    case 'slack_webapi_rate_limited_error':
      return { code: 'ratelimited', reason: slackMessages.rateLimited };
    case 'slack_webapi_request_error': {
      // The WebClient wraps its last 429 (retries used up) as a request error.
      const original = (e as { original?: { message?: unknown } }).original?.message;
      if (/rate limit/i.test(`${message} ${typeof original === 'string' ? original : ''}`)) {
        return { code: 'ratelimited', reason: slackMessages.rateLimited };
      }
      return { code: 'request_error', reason: slackMessages.unreachable };
    }
    default:
      // The WebClient gives up on repeated 429s with a plain Error.
      if (/rate limit/i.test(message)) return { code: 'ratelimited', reason: slackMessages.rateLimited };
      return { code: 'unexpected', reason: slackMessages.slackError(message.slice(0, 120)) };
  }
}

function platformReason(code: string): string {
  switch (code) {
    case 'not_in_channel':
      return slackMessages.notInChannel;
    case 'channel_not_found':
      return slackMessages.channelNotFound;
    case 'is_archived':
      return slackMessages.archived;
    case 'ratelimited':
    case 'rate_limited':
      return slackMessages.rateLimited;
    default:
      return slackMessages.slackError(code);
  }
}
