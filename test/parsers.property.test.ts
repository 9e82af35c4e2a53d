import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FairApiError, FairClient } from '../src/fair/client.js';
import { parseFairJson } from '../src/fair/json.js';
import { InferenceClient, InferenceError } from '../src/inference/client.js';
import { parseInferAnswer, parseInferAnswerBytes } from '../src/inference/image.js';
import { createLogger } from '../src/logger.js';
import { pngForPrompt } from './standins/png.js';

const validAnswer = JSON.stringify({ output: { image_b64: pngForPrompt('seed').toString('base64') }, analytics: {} });

/** Random bodies, JSON-shaped bodies and mutations of a valid answer. */
const bodies = fc.oneof(
  fc.string(),
  fc.json(),
  fc.jsonValue().map((v) => JSON.stringify({ output: v })),
  fc.jsonValue().map((v) => JSON.stringify({ output: { image_b64: v } })),
  fc.base64String().map((b) => JSON.stringify({ output: { image_b64: b } })),
  fc.uint8Array({ maxLength: 64 }).map((a) => JSON.stringify({ output: { image_b64: Buffer.from(a).toString('base64') } })),
  fc
    .tuple(fc.nat(validAnswer.length - 1), fc.nat(validAnswer.length), fc.string({ maxLength: 8 }))
    .map(([at, cut, insert]) => validAnswer.slice(0, at) + insert + validAnswer.slice(Math.min(validAnswer.length, at + cut))),
);

describe('the diffusion answer parser, fed random and mutated bodies', () => {
  it('never throws: an image or a sentence about what the server did wrong', () => {
    fc.assert(
      fc.property(bodies, (body) => {
        const result = parseInferAnswer(body);
        if ('image' in result) {
          expect(['image/png', 'image/jpeg', 'image/webp']).toContain(result.image.mime);
        } else {
          expect(result.problem).toMatch(/^the GPU server /);
        }
      }),
      { numRuns: 3_000 },
    );
  });

  it('accepts the valid answer byte for byte', () => {
    const result = parseInferAnswer(validAnswer);
    expect('image' in result && result.image.bytes.equals(pngForPrompt('seed'))).toBe(true);
    const fromBytes = parseInferAnswerBytes(Buffer.from(validAnswer));
    expect('image' in fromBytes && fromBytes.image.bytes.equals(pngForPrompt('seed'))).toBe(true);
  });

  it('gives the same result from the raw bytes (what the client reads) as from the text', () => {
    const png = pngForPrompt('bytes path').toString('base64');
    // Answers near the fast path's edges: data: URLs, escapes, a second key, padding, spacing.
    const edgy = fc.oneof(
      fc.constantFrom(
        `{"output":{"image_b64":"data:image/png;base64,${png}"}}`,
        `{"output":{"image_b64":"data:image/png,${png}"}}`,
        `{"output" : { "image_b64" :\n "${png}" } }`,
        `{"output":{"image_b64":"${png.replace(/\//g, '\\/')}"}}`,
        `{"output":{"image_b64":"${png}","image\\u005fb64":"QUFB"}}`,
        `{"output":{"image\\u005fb64":"QUFB","image_b64":"${png}"}}`,
        `{"output":{"x":1},"other":{"image_b64":"${png}"}}`,
        `{"output":{"image_b64":"${png}"},"output":{"image_b64":"QUFB"}}`,
        `{"output":{"image_b64":"${png.slice(0, -4)}"}}`,
        `{"output":{"image_b64":"${png.replace(/.{76}/g, '$&\\n')}"}}`,
        `{"output":{"image_b64":"${png.replace(/\+/g, '-')}"}}`,
        `{"output":{"image_b64":"${png}=="}}`,
        `{"output":{"image_b64":"${png.slice(0, 40)}==${png.slice(42)}"}}`,
        `{"output":{"image_b64":"${png}"}`,
        `\ufeff{"output":{"image_b64":"${png}"}}`,
      ),
      fc
        .tuple(fc.nat(validAnswer.length - 1), fc.nat(8), fc.string({ maxLength: 8 }))
        .map(([at, cut, insert]) => validAnswer.slice(0, at) + insert + validAnswer.slice(Math.min(validAnswer.length, at + cut))),
      bodies,
    );
    fc.assert(
      fc.property(edgy, (body) => {
        const bytes = Buffer.from(body);
        expect(parseInferAnswerBytes(bytes)).toEqual(parseInferAnswer(bytes.toString('utf8')));
      }),
      // Each run parses a whole image answer twice: 3000 runs took 30 s on a busy 2-core machine.
      { numRuns: 1_000 },
    );
  }, 60_000);
});

describe('the Fair JSON parser', () => {
  it('never loses an integer id, whatever its size', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (id) => {
        const parsed = parseFairJson(`{"program_id":${id},"bucket_id":${id}}`) as Record<string, unknown>;
        expect(String(parsed.program_id)).toBe(id.toString());
      }),
      { numRuns: 2_000 },
    );
  });

  it('throws only a SyntaxError on arbitrary text', () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        try {
          parseFairJson(text);
        } catch (error) {
          expect(error).toBeInstanceOf(Error);
        }
      }),
      { numRuns: 2_000 },
    );
  });
});

/** A server answering whatever body the current property run chose, over a real socket. */
describe('the clients, against a server answering random bodies', () => {
  let server: Server;
  let url: string;
  let next: { status: number; body: string } = { status: 200, body: '{}' };
  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(next.status, { 'content-type': 'application/json' });
        res.end(next.body);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const statuses = fc.constantFrom(200, 201, 204, 400, 401, 404, 500, 502, 503);

  it('the Fair client answers every body with a value or a FairApiError, never anything else', async () => {
    const fair = new FairClient({ serverUrl: url, email: 'e', password: 'p', logger: createLogger({ level: 'silent' }) });
    await fc.assert(
      fc.asyncProperty(
        statuses,
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify({ token: 't', nodes: v, status: v, result: v, program_id: v })),
        ),
        async (status, body) => {
          next = { status, body };
          for (const call of [() => fair.login(), () => fair.listNodes(), () => fair.programStatus('n', '1'), () => fair.programResult('n', '1')]) {
            try {
              await call();
            } catch (error) {
              expect(error).toBeInstanceOf(FairApiError);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('the inference client answers every body with an image or an InferenceError', async () => {
    const inference = new InferenceClient({ inferTimeoutMs: 5_000 });
    await fc.assert(
      fc.asyncProperty(statuses, bodies, async (status, body) => {
        next = { status, body };
        try {
          await inference.infer(url, 'p');
        } catch (error) {
          expect(error).toBeInstanceOf(InferenceError);
          expect((error as InferenceError).reason).toMatch(/GPU server/);
        }
        expect(['ready', 'loading', 'down']).toContain(await inference.probe(url));
      }),
      { numRuns: 300 },
    );
    await inference.close();
  });
});
