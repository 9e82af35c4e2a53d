import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { DefaultRestOptions, REST, type RESTOptions } from 'discord.js';
import { request } from 'undici';
import { webResponseInit } from '../../webResponse.js';

type MakeRequest = RESTOptions['makeRequest'];
type ResponseLike = Awaited<ReturnType<MakeRequest>>;

/**
 * discord.js's REST (undici 6) sends uploads as a FormData body through undici's
 * process-wide dispatcher. Once undici 7 (which this project uses for Fair and the
 * diffusion server) has installed that dispatcher, such bodies fail ("action is not a
 * function"), so every attachment would be lost, depending on which client spoke first
 * (discord.js issues #10946, #11525). Uploads therefore never reach undici 6: the bot hands
 * discord.js a `MultipartUpload` as a pass-through body (no FormData, no Blob copy of the
 * image), and `makeRequest` streams it, with its Content-Length computed up front, through
 * the project's own undici (7). discord.js still does the rest (routes, rate limits,
 * retries). Every other request goes through discord.js's default path.
 */
const makeRequest: MakeRequest = async (url, init) => {
  const body: unknown = init.body;
  if (body instanceof MultipartUpload) return sendMultipart(url, init, body);
  // A FormData only if some discord.js path builds one itself (the bot's uploads do not).
  if (body instanceof FormData) return sendMultipart(url, init, await MultipartUpload.fromFormData(body));
  return DefaultRestOptions.makeRequest(url, init);
};

export interface UploadPart {
  name: string;
  data: Buffer;
  contentType: string;
}

/**
 * A message with files as multipart/form-data (RFC 7578, as Discord takes uploads:
 * `payload_json`, then `files[n]`), encoded from the image's own bytes: the parts are the
 * Buffers themselves, written one after another; no copy of the whole body is built.
 */
class MultipartUpload {
  readonly contentType: string;
  readonly length: number;
  private readonly parts: Buffer[] = [];

  constructor(fields: Array<[name: string, value: string | UploadPart]>) {
    const boundary = `----fairbot-formdata-${randomBytes(16).toString('hex')}`;
    // As undici (and browsers) write them: names escaped, string values with CRLF line ends.
    const escapeField = (s: string) => s.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
    for (const [name, value] of fields) {
      if (typeof value === 'string') {
        this.parts.push(
          Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${escapeField(name)}"\r\n\r\n${value.replace(/\r?\n|\r/g, '\r\n')}\r\n`),
        );
      } else {
        this.parts.push(
          Buffer.from(
            `--${boundary}\r\nContent-Disposition: form-data; name="${escapeField(name)}"; filename="${escapeField(value.name)}"\r\n` +
              `Content-Type: ${value.contentType || 'application/octet-stream'}\r\n\r\n`,
          ),
          value.data,
          Buffer.from('\r\n'),
        );
      }
    }
    this.parts.push(Buffer.from(`--${boundary}--\r\n`));
    this.contentType = `multipart/form-data; boundary=${boundary}`;
    this.length = this.parts.reduce((n, p) => n + p.length, 0);
  }

  /** A message body (sent as payload_json) with its files. */
  static message(payload: unknown, files: UploadPart[]): MultipartUpload {
    return new MultipartUpload([['payload_json', JSON.stringify(payload)], ...files.map((f, i): [string, UploadPart] => [`files[${i}]`, f])]);
  }

  static async fromFormData(form: FormData): Promise<MultipartUpload> {
    const fields: Array<[string, string | UploadPart]> = [];
    for (const [name, value] of form) {
      if (typeof value === 'string') fields.push([name, value]);
      else fields.push([name, { name: (value as File).name, data: Buffer.from(await value.arrayBuffer()), contentType: value.type }]);
    }
    return new MultipartUpload(fields);
  }

  /** A fresh body stream (discord.js may send a request again). */
  stream(): Readable {
    return Readable.from(this.parts, { objectMode: false });
  }
}

/** discord.js request options for a message body with optional files. */
export function messageRequest(payload: Record<string, unknown>, files: UploadPart[] | undefined): { body: unknown; passThroughBody?: true } {
  return files?.length ? { body: MultipartUpload.message(payload, files), passThroughBody: true } : { body: payload };
}

async function sendMultipart(url: string, init: Parameters<MakeRequest>[1], encoded: MultipartUpload): Promise<ResponseLike> {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries((init.headers as Record<string, string> | undefined) ?? {})) {
    if (!/^content-(type|length)$/i.test(key)) headers[key] = value;
  }
  headers['content-type'] = encoded.contentType;
  headers['content-length'] = String(encoded.length);
  const res = await request(url, {
    method: (init.method ?? 'POST') as 'POST',
    headers,
    body: encoded.stream(),
    signal: init.signal ?? undefined,
    // No per-request dispatcher: the bot gives discord.js no agent, so this is the global one.
  });
  // What discord.js's own makeRequest (strategies/undiciRequest) returns, from undici 7's answer.
  const { status, statusText, headers: responseHeaders } = webResponseInit(res);
  return {
    body: res.body as unknown as ResponseLike['body'],
    arrayBuffer: () => res.body.arrayBuffer(),
    json: () => res.body.json(),
    text: () => res.body.text(),
    get bodyUsed() {
      return res.body.bodyUsed;
    },
    headers: responseHeaders,
    status,
    statusText,
    ok: status >= 200 && status < 300,
  } as ResponseLike;
}

/** REST options for every discord.js client and REST instance of the bot. */
export function restOptions(api: string): Partial<RESTOptions> {
  return { api, makeRequest };
}

export function createRest(api: string, token: string): REST {
  return new REST(restOptions(api)).setToken(token);
}
