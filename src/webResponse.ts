import { STATUS_CODES } from 'node:http';
import type { Dispatcher } from 'undici';

/**
 * An undici `request` answer's status and headers in the form of a web Response, for the
 * platform SDKs that take a fetch-like function (the Slack WebClient, discord.js's REST):
 * the bot makes their calls with undici's request and hands back what they read.
 */
export function webResponseInit(res: Pick<Dispatcher.ResponseData, 'statusCode' | 'headers'>): { status: number; statusText: string; headers: Headers } {
  const headers = new Headers();
  for (const [key, value] of Object.entries(res.headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(key, v);
  }
  return { status: res.statusCode, statusText: STATUS_CODES[res.statusCode] ?? '', headers };
}
