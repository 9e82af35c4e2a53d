import { randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { Readable } from 'node:stream';
import { DefaultRestOptions, REST, type RESTOptions } from 'discord.js';
import { request } from 'undici';

type MakeRequest = RESTOptions['makeRequest'];
type ResponseLike = Awaited<ReturnType<MakeRequest>>;

/**
 * discord.js's REST (undici 6) sends uploads as a FormData body through undici's
 * process-wide dispatcher. Once undici 7 (which this project uses for Fair and the
 * diffusion server) has installed that dispatcher, such bodies fail ("action is not a
 * function"), so every attachment would be lost, depending on which client spoke first
 * (discord.js issues #10946, #11525). Uploads therefore never reach undici 6 as FormData:
 * the multipart body is encoded here and streamed, with its Content-Length computed up
 * front, by the project's own undici (7). The image goes out as the very Buffer the
 * adapter gave discord.js (registered by `withUploadBytes` under its file name), not read
 * back from the Blob discord.js made of it; no encoded copy of the whole body is built.
 * Every other request goes through discord.js's default path.
 */
export const makeRequest: MakeRequest = async (url, init) => {
  const body: unknown = init.body;
  if (body instanceof FormData) return sendMultipart(url, init, body);
  return DefaultRestOptions.makeRequest(url, init);
};

/** Bytes of files being uploaded, by file name (image names carry the job id). */
const uploadBytes = new Map<string, Buffer>();

/**
 * Runs a discord.js call that uploads `files`, with their bytes registered so the multipart
 * body is written from them directly (through discord.js's retries too): no read back from
 * a Blob, chunk by chunk through a web stream, which cost ~1 ms per MB.
 */
export async function withUploadBytes<T>(files: Array<{ name: string; data: Buffer }> | undefined, send: () => Promise<T>): Promise<T> {
  for (const f of files ?? []) uploadBytes.set(f.name, f.data);
  try {
    return await send();
  } finally {
    for (const f of files ?? []) if (uploadBytes.get(f.name) === f.data) uploadBytes.delete(f.name);
  }
}

/** multipart/form-data as the fetch spec encodes FormData (RFC 7578), parts in order. */
export function encodeMultipart(form: FormData): { contentType: string; length: number; stream(): Readable } {
  const boundary = `----fairbot-formdata-${randomBytes(16).toString('hex')}`;
  // As undici (and browsers) write them: names escaped, string values with CRLF line ends.
  const escape = (s: string) => s.replace(/\n/g, '%0A').replace(/\r/g, '%0D').replace(/"/g, '%22');
  const parts: Array<Buffer | Blob> = [];
  for (const [name, value] of form) {
    if (typeof value === 'string') {
      parts.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${escape(name)}"\r\n\r\n${value.replace(/\r?\n|\r/g, '\r\n')}\r\n`,
        ),
      );
    } else {
      const file = value as File;
      const original = uploadBytes.get(file.name);
      const filename = typeof file.name === 'string' ? `; filename="${escape(file.name)}"` : '';
      parts.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${escape(name)}"${filename}\r\n` +
            `Content-Type: ${file.type || 'application/octet-stream'}\r\n\r\n`,
        ),
        original?.length === file.size ? original : file,
        Buffer.from('\r\n'),
      );
    }
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  const length = parts.reduce((n, p) => n + (Buffer.isBuffer(p) ? p.length : p.size), 0);
  return {
    contentType: `multipart/form-data; boundary=${boundary}`,
    length,
    stream: () =>
      // Every part in memory (the usual case): written as they are, a Buffer at a time.
      parts.every((p) => Buffer.isBuffer(p))
        ? Readable.from(parts as Buffer[], { objectMode: false })
        : Readable.from(
        (async function* () {
          for (const part of parts) {
            if (Buffer.isBuffer(part)) yield part;
            else for await (const chunk of part.stream()) yield chunk as Uint8Array;
          }
        })(),
        { objectMode: false },
      ),
  };
}

async function sendMultipart(url: string, init: Parameters<MakeRequest>[1], form: FormData): Promise<ResponseLike> {
  const encoded = encodeMultipart(form);
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
  const responseHeaders = new Headers();
  for (const [key, value] of Object.entries(res.headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) responseHeaders.append(key, v);
  }
  return {
    body: res.body as unknown as ResponseLike['body'],
    arrayBuffer: () => res.body.arrayBuffer(),
    json: () => res.body.json(),
    text: () => res.body.text(),
    get bodyUsed() {
      return res.body.bodyUsed;
    },
    headers: responseHeaders,
    status: res.statusCode,
    statusText: STATUS_CODES[res.statusCode] ?? '',
    ok: res.statusCode >= 200 && res.statusCode < 300,
  } as ResponseLike;
}

/** REST options for every discord.js client and REST instance of the bot. */
export function restOptions(api: string): Partial<RESTOptions> {
  return { api, makeRequest };
}

export function createRest(api: string, token: string): REST {
  return new REST(restOptions(api)).setToken(token);
}
