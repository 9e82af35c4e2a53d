import { request } from 'undici';
import { webResponseInit } from '../../webResponse.js';

/**
 * The `fetch` the Slack WebClient makes its API calls with (its `fetch` option), over the
 * project's undici `request`. The WebClient's calls are small url-encoded POSTs with small
 * JSON answers; Node's global fetch turns each body and each answer into web streams.
 * The answer is read whole (a Slack API answer is a few kB) and handed back as a standard
 * Response, which is all the WebClient reads (status, headers such as Retry-After, the body).
 * Any other kind of body goes through the global fetch unchanged.
 */
export async function slackFetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
  if (input instanceof Request || (init.body != null && typeof init.body !== 'string')) return fetch(input, init);
  const headers: Record<string, string> = {};
  new Headers(init.headers).forEach((value, key) => {
    headers[key] = value;
  });
  const res = await request(String(input), {
    method: (init.method ?? 'GET') as 'POST',
    headers,
    body: init.body ?? undefined,
    signal: init.signal ?? undefined,
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  const bodyless = res.statusCode === 204 || res.statusCode === 205 || res.statusCode === 304;
  return new Response(bodyless ? null : body, webResponseInit(res));
}
