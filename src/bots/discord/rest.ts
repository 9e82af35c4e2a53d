import { DefaultRestOptions, REST, type RESTOptions } from 'discord.js';

type MakeRequest = RESTOptions['makeRequest'];

/**
 * discord.js's REST (undici 6) sends uploads as a FormData body through undici's
 * process-wide dispatcher. Once undici 7 (which this project uses for Fair and the
 * diffusion server) has installed that dispatcher, such bodies fail ("action is not a
 * function"), so every attachment would be lost, depending on which client spoke first
 * (discord.js issues #10946, #11525). Encoding the multipart body to bytes here, with
 * Node's own encoder, makes uploads independent of that order.
 */
export const makeRequest: MakeRequest = async (url, init) => {
  const body: unknown = init.body;
  if (body instanceof FormData) {
    const encoded = new Response(body);
    const bytes = Buffer.from(await encoded.arrayBuffer());
    const headers = { ...(init.headers as Record<string, string> | undefined), 'Content-Type': encoded.headers.get('content-type')! };
    return DefaultRestOptions.makeRequest(url, { ...init, body: bytes, headers });
  }
  return DefaultRestOptions.makeRequest(url, init);
};

/** REST options for every discord.js client and REST instance of the bot. */
export function restOptions(api: string): Partial<RESTOptions> {
  return { api, makeRequest };
}

export function createRest(api: string, token: string): REST {
  return new REST(restOptions(api)).setToken(token);
}
