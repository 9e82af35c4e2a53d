/**
 * A Discord command whose acknowledgement never reached Discord (issue 17, item 7). The user
 * saw "The application did not respond"; whether the bot kept running or crashed in between,
 * the outcome is the same: the job is cancelled and no image turns up in the channel later.
 */
import { describe, expect, it } from 'vitest';
import type { IncomingMessage } from 'node:http';
import { cleanupAfterEach } from './helpers/cleanup.js';
import { eventually, fairEnv, FAIR_EMAIL, FAIR_PASSWORD, tempDir } from './helpers/app.js';
import { scanDiscord, users } from './helpers/discordApp.js';
import { recordedJobs, startFaultProxy, startProxiedDiscordRig } from './helpers/faults.js';
import { spawnBot } from './helpers/faults-process.js';
import { startDiscordStandin } from './standins/discord.js';
import { freePort, startFairStandin } from './standins/fair.js';
import { pngForPrompt } from './standins/png.js';

const cleanup = cleanupAfterEach();
const isCallback = (req: IncomingMessage) => req.method === 'POST' && /\/interactions\/\d+\/[^/]+\/callback/.test(req.url ?? '');
const { alice } = users;

describe('a /imagine Discord never saw acknowledged', () => {
  it('without a crash: the acknowledgement is refused as too late (10062), the job is cancelled, nothing is posted', async () => {
    const r = await cleanup.closing(startProxiedDiscordRig({ fair: { coldStartMs: 50 } }));
    r.proxy.inject(isCallback, { status: 404, body: { message: 'Unknown interaction', code: 10062 } });
    r.discord.dispatchInteraction({ name: 'imagine', options: { prompt: 'too late to acknowledge' }, ...alice });
    await eventually(() => recordedJobs(r.app.services.config.dataDir).some((j) => j.state === 'cancelled'), 10_000, 'the job to be cancelled');
    expect(r.discord.channelPosts()).toHaveLength(0);
    expect([...r.discord.messages.values()].filter((m) => m.attachments.length > 0)).toHaveLength(0);
  });

  it('with a crash between recording the job and the acknowledgement: the next start cancels it, nothing is posted', async () => {
    const { discord, second, dir } = await crashDuringAcknowledgement({ reachesDiscord: false });
    await second.waitForLog((e) => e.msg === 'job dropped: Discord never showed its acknowledgement (the user saw the command fail)', 15_000, 'the drop');
    await eventually(() => recordedJobs(dir).every((j) => j.state === 'cancelled'), 10_000, 'the job to be cancelled');
    second.child.kill('SIGTERM');
    expect(await second.exit(10_000)).toEqual({ code: 0, signal: null });
    expect(discord.channelPosts()).toHaveLength(0);
    expect([...discord.messages.values()].filter((m) => m.attachments.length > 0)).toHaveLength(0);
  }, 90_000);

  it('but an acknowledgement Discord did get (the crash came before its answer) is honoured: the image goes to the reply', async () => {
    const { discord, second, dir, interactionId } = await crashDuringAcknowledgement({ reachesDiscord: true });
    const reply = await discord.waitFor(
      () => {
        const m = discord.originalMessage(interactionId);
        return m && m.attachments.length > 0 ? m : undefined;
      },
      20_000,
      'the image in the reply',
    );
    expect(reply.attachments[0]!.bytes.equals(pngForPrompt(PROMPT))).toBe(true);
    await eventually(() => recordedJobs(dir).every((j) => j.state === 'delivered'), 10_000, 'the delivery to be recorded');
    second.child.kill('SIGTERM');
    expect(await second.exit(10_000)).toEqual({ code: 0, signal: null });
    expect(discord.channelPosts()).toHaveLength(0);
  }, 90_000);
});

const PROMPT = 'recorded, acknowledgement cut off';

/**
 * The real bot process records a /imagine and sends its acknowledgement, which Discord
 * either never gets or gets without the bot hearing back; the bot is killed (-9) then and
 * started again on the same DATA_DIR.
 */
async function crashDuringAcknowledgement(opts: { reachesDiscord: boolean }) {
  const discord = await startDiscordStandin();
  cleanup.defer(async () => {
    scanDiscord(discord);
    await discord.close();
  });
  const proxy = await startFaultProxy(discord.apiUrl.replace(/\/api$/, ''));
  cleanup.defer(() => proxy.close());
  const fair = await startFairStandin({ email: FAIR_EMAIL, password: FAIR_PASSWORD, coldStartMs: 50 });
  cleanup.defer(() => fair.close());
  const dir = tempDir('fairbot-unacked-');
  cleanup.defer(() => dir.remove());
  const env = fairEnv(fair, await freePort(), dir.path, {
    DISCORD_TOKEN: discord.token,
    DISCORD_API_URL: `${proxy.url}/api`,
    DISCORD_GUILD_ID: discord.guildId,
    LOG_LEVEL: 'info',
  });

  const first = spawnBot(env);
  cleanup.defer(() => first.kill());
  await first.waitForLog((e) => e.msg === 'fairbot started', 30_000, 'that it started');
  proxy.hold(isCallback, 1, { forward: opts.reachesDiscord });
  const { id: interactionId } = discord.dispatchInteraction({ name: 'imagine', options: { prompt: PROMPT }, ...alice });
  await eventually(() => proxy.requests.some((q) => q.injected && q.path.includes('/callback')), 10_000, 'the acknowledgement to be sent');
  if (opts.reachesDiscord) await discord.waitFor(() => discord.callbacks.find((c) => c.interactionId === interactionId), 5_000, 'Discord to get it');
  expect(recordedJobs(dir.path)).toHaveLength(1);
  first.child.kill('SIGKILL');
  await first.exit(10_000);

  const second = spawnBot(env);
  cleanup.defer(() => second.kill());
  await second.waitForLog((e) => e.msg === 'fairbot started', 30_000, 'that it started again');
  return { discord, second, dir: dir.path, interactionId };
}
