// The baseline for measurement 6: Fair's tutorial flow, one request at a time and no lock
// between requests. Every request on its own:
//   1. health check of the diffusion server (1 s timeout);
//   2. if it fails: a start program through the Fair API (login, PUT program, eof, poll info);
//   3. up to 10 readiness checks 1 s apart;
//   4. POST /infer.
// All waits are multiplied by `scale` (1 = real time), so a benchmark can compress a
// 45 s cold start into ~1 s and keep the proportions.
import { performance } from 'node:perf_hooks';

export interface TutorialOptions {
  /** FAIR_SERVER_URL (without /api/v0). */
  fairUrl: string;
  email: string;
  password: string;
  /** The node the tutorial hard-codes. */
  node: string;
  /** http://host:port of the diffusion server. */
  endpoint: string;
  hostPort: number;
  containerPort?: number;
  image?: string;
  /** Time scale applied to every timeout, interval and poll (1 = real time). */
  scale?: number;
}

export interface TutorialResult {
  ok: boolean;
  /** Whether this request sent a start program to Fair. */
  startedServer: boolean;
  image?: Buffer;
  error?: string;
  ms: number;
}

const HEALTH_TIMEOUT_S = 1;
const READINESS_CHECKS = 10;
const READINESS_INTERVAL_S = 1;
const INFO_POLL_S = 0.5;
const INFO_POLLS_MAX = 120;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function healthy(endpoint: string, timeoutMs: number): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/healthcheck`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

async function fairCall(opts: TutorialOptions, method: string, path: string, token?: string, body?: unknown): Promise<string> {
  const res = await fetch(`${opts.fairUrl}/api/v0${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${text.slice(0, 200)}`);
  return text;
}

/** Login, Create+Start program, close its stdin, poll until it runs. */
async function startServer(opts: TutorialOptions, scale: number): Promise<void> {
  const login = JSON.parse(await fairCall(opts, 'POST', '/auth/login', undefined, { email: opts.email, password: opts.password, version: 'V018' })) as {
    token: string;
  };
  const program = {
    version: 'V018',
    commands: [
      {
        type: 'Create',
        container_desc: {
          image: opts.image ?? 'faircompute/diffusion-octo:v1',
          runtime: 'nvidia',
          ports: [
            [
              { port: opts.hostPort, ip: 'null' },
              { port: opts.containerPort ?? 8080, protocol: 'Tcp' },
            ],
          ],
          command: [],
          host_config: { network_mode: 'bridge' },
        },
      },
      { type: 'Start', container_id: '$0' },
    ],
  };
  const created = await fairCall(opts, 'PUT', `/nodes/${opts.node}/programs`, login.token, program);
  // The ids exceed 2^53: read them as text, not through a JS number.
  const programId = /"program_id"\s*:\s*"?(\d+)/.exec(created)?.[1];
  const bucketId = /"bucket_id"\s*:\s*"?(\d+)/.exec(created)?.[1];
  if (!programId || !bucketId) throw new Error(`unexpected program answer ${created.slice(0, 200)}`);
  await fairCall(opts, 'PUT', `/buckets/${bucketId}/%23stdin/eof`, login.token);
  for (let i = 0; i < INFO_POLLS_MAX; i++) {
    const info = JSON.parse(await fairCall(opts, 'GET', `/nodes/${opts.node}/programs/${programId}/info`, login.token)) as { status?: string };
    if (info.status === 'Processing' || info.status === 'Completed') return;
    await sleep(INFO_POLL_S * 1000 * scale);
  }
  throw new Error('the start program never ran');
}

/** One request, served the tutorial's way. */
export async function tutorialRequest(prompt: string, opts: TutorialOptions): Promise<TutorialResult> {
  const scale = opts.scale ?? 1;
  const t0 = performance.now();
  let startedServer = false;
  try {
    if (!(await healthy(opts.endpoint, HEALTH_TIMEOUT_S * 1000 * scale))) {
      startedServer = true;
      await startServer(opts, scale);
      for (let i = 0; i < READINESS_CHECKS; i++) {
        if (await healthy(opts.endpoint, HEALTH_TIMEOUT_S * 1000 * scale)) break;
        await sleep(READINESS_INTERVAL_S * 1000 * scale);
      }
    }
    const res = await fetch(`${opts.endpoint}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: { text: prompt } }),
    });
    const body = (await res.json()) as { output?: { image_b64?: string } };
    if (res.status !== 200 || typeof body.output?.image_b64 !== 'string') throw new Error(`/infer answered ${res.status}`);
    const image = Buffer.from(body.output.image_b64, 'base64');
    return { ok: true, startedServer, image, ms: performance.now() - t0 };
  } catch (error) {
    return { ok: false, startedServer, error: error instanceof Error ? error.message : String(error), ms: performance.now() - t0 };
  }
}
