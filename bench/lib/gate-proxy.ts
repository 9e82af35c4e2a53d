// A loopback HTTP proxy in front of a platform stand-in that can hold uploads: a held request
// is read in full (the bot has sent it) and then left unanswered, as an upload still in the
// platform's hands. Used to measure the bot's memory with images "in the platform upload".
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface GateCounts {
  /** Distinct uploads held so far (by key: one image, however often the client re-sent it). */
  uploads: number;
  /** Held requests whose client is still waiting for the answer now (uploads in flight). */
  open: number;
  /** Held requests in all, re-sends included (a client's timeout-and-retry shows up here). */
  attempts: number;
}

export interface GateProxy {
  url: string;
  counts(): GateCounts;
  close(): Promise<void>;
}

export async function startGateProxy(opts: {
  /** The stand-in's base, e.g. http://127.0.0.1:1234 */
  target: string;
  /** Which requests to hold. */
  hold: (req: IncomingMessage) => boolean;
  /** Which upload a held request is (e.g. Slack's file id, Discord's attachment file name), to count re-sends once. */
  key: (req: IncomingMessage, body: Buffer) => string;
  /** Rewrites the stand-in's own address in answers (e.g. Slack's upload_url), so follow-ups come back here. */
  rewriteAnswers?: boolean;
}): Promise<GateProxy> {
  const target = new URL(opts.target);
  const keys = new Set<string>();
  let open = 0;
  let attempts = 0;
  const sockets = new Set<Socket>();
  let self = '';

  const forward = (req: IncomingMessage, body: Buffer, res: ServerResponse) => {
    const headers = { ...req.headers, host: target.host, 'content-length': String(body.length) };
    delete headers['transfer-encoding'];
    const upstream = request({ protocol: target.protocol, hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (up) => {
      const chunks: Buffer[] = [];
      up.on('data', (c: Buffer) => chunks.push(c));
      up.on('end', () => {
        let out = Buffer.concat(chunks);
        if (opts.rewriteAnswers && /json/.test(String(up.headers['content-type'] ?? ''))) {
          out = Buffer.from(out.toString('utf8').split(target.origin).join(self));
        }
        const h = { ...up.headers, 'content-length': String(out.length) };
        delete h['transfer-encoding'];
        res.writeHead(up.statusCode ?? 502, h);
        res.end(out);
      });
    });
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
    });
    upstream.end(body);
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (opts.hold(req)) {
        keys.add(opts.key(req, body));
        attempts++;
        open++;
        // Never answered: the upload is "still going" until the client gives up or the proxy closes.
        res.on('close', () => open--);
        return;
      }
      forward(req, body, res);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  self = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url: self,
    counts: () => ({ uploads: keys.size, open, attempts }),
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}
