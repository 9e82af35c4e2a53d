// `npm run demo`: the whole flow of `fairbot imagine` without a GPU or a Fair account.
// It starts the stand-ins the tests use (a fake Fair control plane that "runs" a fake
// diffusion server after a cold start), points the real CLI at them, and writes an image.
//
//   npm run demo                                   # prompt "a red fox in the snow", ./demo.png
//   npm run demo -- "a lighthouse at dusk" --out lighthouse.png
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runCli } from '../src/cli/main.js';
import type { DiffusionStandin } from '../test/standins/diffusion.js';
import { freePort, startFairStandin } from '../test/standins/fair.js';

const COLD_START_MS = 3_000; // Start program → the container's HTTP server listens
const MODEL_LOAD_MS = 2_000; // listening → /healthcheck says the model is loaded
const GENERATION_MS = 800; // one /infer
const EMAIL = 'demo@example.com';
const PASSWORD = 'demo-password';

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  allowPositionals: true,
  options: { out: { type: 'string', short: 'o' }, help: { type: 'boolean', short: 'h' } },
});
if (values.help) {
  process.stdout.write('Usage: npm run demo -- ["<prompt>"] [--out FILE]   (default prompt "a red fox in the snow", FILE ./demo.png)\n');
  process.exit(0);
}
const prompt = positionals.join(' ').trim() || 'a red fox in the snow';
const out = values.out ?? './demo.png';

const say = (text = '') => process.stderr.write(`${text}\n`);
const standin = (text: string) => say(`  [stand-in] ${text}`);
const heading = (text: string) => say(`\n=== ${text} ===`);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

say('fairbot demo: everything below the CLI is a STAND-IN.');
say('  No real GPU, no Fair account, no network: a fake Fair control plane and a fake');
say('  diffusion server run on 127.0.0.1 (the same stand-ins the tests use, test/standins/).');
say(`  Simulated cold start: ${seconds(COLD_START_MS)} until the container listens, ${seconds(MODEL_LOAD_MS)} to load the model;`);
say(`  one generation takes ${seconds(GENERATION_MS)}. The image is a deterministic test pattern, not Stable Diffusion.`);

const fair = await startFairStandin({
  email: EMAIL,
  password: PASSWORD,
  coldStartMs: COLD_START_MS,
  diffusion: { loadDelayMs: MODEL_LOAD_MS, generationMs: GENERATION_MS },
});
const hostPort = await freePort();
const dataDir = mkdtempSync(join(tmpdir(), 'fairbot-demo-'));

let cleaned = false;
async function cleanUp(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  await fair.close();
  rmSync(dataDir, { recursive: true, force: true });
}
process.once('SIGINT', () => {
  void cleanUp().finally(() => process.exit(130));
});

// Narrate what the stand-ins see, so the cold start is visible next to the CLI's progress.
const t0 = Date.now();
const at = () => `+${seconds(Date.now() - t0)}`;
fair.events.on('start', ({ node, containerId }: { node: string; containerId: string }) =>
  standin(`${at()} Fair: start program on ${node}, container ${containerId.slice(0, 12)} (cold start ${seconds(COLD_START_MS)})`),
);
fair.events.on('diffusion-listening', (d: DiffusionStandin) => {
  standin(`${at()} diffusion server listening on ${d.url}, loading the model (${seconds(MODEL_LOAD_MS)})`);
  d.events.once('loaded', () => standin(`${at()} diffusion server: model loaded, /healthcheck answers 200`));
  d.events.on('infer-end', (r: { status?: number; startedAt: number; endedAt?: number }) =>
    standin(`${at()} diffusion server: POST /infer answered ${r.status ?? 'nothing'}`),
  );
});
fair.events.on('kill', ({ containerId, ok }: { containerId: string; ok: boolean }) =>
  standin(`${at()} Fair: kill program for container ${containerId.slice(0, 12)}: ${ok ? 'stopped' : 'not running'}`),
);

// A clean environment: nothing from your shell or .env leaks in (no real Fair is touched).
const env: Record<string, string> = {
  FAIR_SERVER_URL: fair.url,
  FAIR_EMAIL: EMAIL,
  FAIR_PASSWORD: PASSWORD,
  FAIR_PORTS: `${hostPort}:8080`,
  DATA_DIR: dataDir,
  IDLE_SHUTDOWN_MIN: '0',
};
const io = { env, stdout: process.stdout, stderr: process.stderr };

let code = 1;
try {
  say(`  Fair stand-in: ${fair.url}; the diffusion server will get host port ${hostPort}; state in ${dataDir}`);

  heading(`fairbot imagine "${prompt}" --out ${out}`);
  code = await runCli(['imagine', prompt, '--out', out], io);
  say(code === 0 ? `  -> image written to ${out}` : `  -> fairbot imagine failed (exit ${code})`);

  heading('fairbot gpu status');
  const statusCode = await runCli(['gpu', 'status'], io);

  heading('fairbot gpu kill');
  const killCode = await runCli(['gpu', 'kill'], io);

  if (code === 0) code = statusCode || killCode;
  say(
    code === 0
      ? `\nDone. With a real Fair cluster, set FAIR_SERVER_URL, FAIR_EMAIL and FAIR_PASSWORD (see README.md) and run:\n  npx fairbot imagine "${prompt}" --out ${out}`
      : `\nThe demo failed (exit ${code}).`,
  );
} catch (error) {
  say(`demo: ${error instanceof Error ? error.message : String(error)}`);
  code = 1;
} finally {
  await cleanUp();
}
process.exit(code);
