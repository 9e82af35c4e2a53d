// Measurement 4's platforms: the Slack and Discord stand-ins in their own process, so the CPU
// they spend sending 100 commands (HMAC signing, fetch, gateway frames) does not sit on the
// bot's event loop and inflate the acks it is measuring. Driven over IPC by scenarios/platforms.ts.
import { snowflake, startDiscordStandin } from '../test/standins/discord.js';
import { startSlackStandin } from '../test/standins/slack.js';
import { startGateProxy, type GateProxy } from './lib/gate-proxy.js';

type Request =
  | { op: 'burst'; eventsUrl: string; commands: number; tag: string }
  | { op: 'imagine-batch'; eventsUrl: string; slack: number; discord: number; tag: string }
  | { op: 'gates'; open: number; timeoutMs: number }
  | { op: 'close' };

const send = (msg: unknown) => process.send?.(msg);

async function main() {
  const slack = await startSlackStandin();
  const discord = await startDiscordStandin();
  // BENCH_GATE=1: uploads (Slack's upload URLs, Discord's multipart requests) are held unanswered.
  let gates: { slack: GateProxy; discord: GateProxy } | undefined;
  if (process.env.BENCH_GATE === '1') {
    gates = {
      // One Slack upload = one upload URL (its file id).
      slack: await startGateProxy({
        target: slack.url,
        rewriteAnswers: true,
        hold: (req) => req.method === 'POST' && (req.url ?? '').startsWith('/upload/'),
        key: (req) => req.url ?? '',
      }),
      // One Discord upload = one attachment file name (`<job id>.png`): discord.js re-sends a
      // request its 15 s timeout aborted, and a failed reply edit falls back to a channel post.
      discord: await startGateProxy({
        target: new URL(discord.apiUrl).origin,
        hold: (req) => /multipart\/form-data/.test(String(req.headers['content-type'] ?? '')),
        key: (req, body) => {
          const at = body.indexOf('filename="');
          return at < 0 ? `${req.method} ${req.url}` : body.subarray(at + 10, body.indexOf('"', at + 10)).toString('utf8');
        },
      }),
    };
  }
  send({
    op: 'started',
    slack: { apiUrl: gates ? `${gates.slack.url}/api/` : slack.apiUrl, botToken: slack.botToken, signingSecret: slack.signingSecret },
    discord: { apiUrl: gates ? `${gates.discord.url}/api` : discord.apiUrl, token: discord.token, guildId: discord.guildId },
  });

  /**
   * Sends /imagine from distinct users on both platforms, alternating (so the first uploads
   * are a mix of both), and returns once every command is sent.
   */
  async function imagineBatch(eventsUrl: string, nSlack: number, nDiscord: number, tag: string) {
    if (!gates) throw new Error('imagine-batch needs BENCH_GATE=1');
    for (let i = 0; i < Math.max(nSlack, nDiscord); i++) {
      if (i < nSlack) await slack.sendSlashCommand(eventsUrl, { command: '/imagine', text: `${tag} slack ${i}`, user_id: `U0MEM${i}` });
      if (i < nDiscord)
        discord.dispatchInteraction({
          name: 'imagine',
          options: { prompt: `${tag} discord ${i}` },
          userId: snowflake(Date.now() - 4e9 - i * 1e6),
          userName: `mem${i}`,
        });
    }
    return {};
  }

  /** Waits until `open` uploads are held at once (bodies fully received, unanswered). */
  async function waitGates(open: number, timeoutMs: number) {
    if (!gates) throw new Error('gates need BENCH_GATE=1');
    const g = gates;
    const counts = () => ({ slack: g.slack.counts(), discord: g.discord.counts() });
    const deadline = Date.now() + timeoutMs;
    for (let c = counts(); c.slack.open + c.discord.open < open; c = counts()) {
      if (Date.now() > deadline) throw new Error(`uploads held at once: ${c.slack.open} Slack + ${c.discord.open} Discord, expected ${open}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return counts();
  }

  async function burst(eventsUrl: string, commands: number, tag: string) {
    // One command per platform first, so the burst meets warmed-up code paths (as a bot that
    // has been running would); the GPU stays cold.
    const warm = discord.dispatchInteraction({ name: 'imagine', options: { prompt: `${tag} warm-up` }, userId: snowflake(Date.now() - 3e9), userName: 'warm' });
    await slack.sendSlashCommand(eventsUrl, { command: '/imagine', text: `${tag} warm-up`, user_id: 'U0WARMUP' });
    await discord.waitFor(() => discord.callbacks.some((c) => c.interactionId === warm.id), 10_000, 'the warm-up callback');

    const slackAcks: Array<Promise<{ ms: number; refused: boolean }>> = [];
    const discordIds: string[] = [];
    for (let i = 0; i < commands; i++) {
      const prompt = `${tag} ack ${i}`;
      if (i % 2 === 0) {
        slackAcks.push(
          slack
            .sendSlashCommand(eventsUrl, { command: '/imagine', text: prompt, user_id: `U0ACK${i}` })
            .then((r) => ({ ms: r.ackMs, refused: r.status !== 200 || !/^(Queued|Warming)/.test(r.text ?? '') })),
        );
      } else {
        discordIds.push(
          discord.dispatchInteraction({ name: 'imagine', options: { prompt }, userId: snowflake(Date.now() - 2e9 - i * 1e6), userName: `ack${i}` }).id,
        );
      }
    }
    const slackResults = await Promise.all(slackAcks);
    await discord.waitFor(() => discordIds.every((id) => discord.callbacks.some((c) => c.interactionId === id)), 30_000, 'the Discord callbacks');
    const callbacks = discordIds.map((id) => discord.callbacks.find((c) => c.interactionId === id)!);
    return {
      slack: slackResults.map((r) => r.ms),
      // Date.now() based in the stand-in: dispatch → callback request received.
      discord: callbacks.map((c) => c.latencyMs),
      refused: slackResults.filter((r) => r.refused).length + callbacks.filter((c) => c.status >= 300).length,
    };
  }

  process.on('message', (msg: Request) => {
    if (msg.op === 'burst') {
      burst(msg.eventsUrl, msg.commands, msg.tag).then(
        (result) => send({ op: 'burst-done', ...result }),
        (error: unknown) => send({ op: 'error', message: error instanceof Error ? error.message : String(error) }),
      );
    } else if (msg.op === 'imagine-batch') {
      imagineBatch(msg.eventsUrl, msg.slack, msg.discord, msg.tag).then(
        (result) => send({ op: 'sent', ...result }),
        (error: unknown) => send({ op: 'error', message: error instanceof Error ? error.message : String(error) }),
      );
    } else if (msg.op === 'gates') {
      waitGates(msg.open, msg.timeoutMs).then(
        (result) => send({ op: 'gates', ...result }),
        (error: unknown) => send({ op: 'error', message: error instanceof Error ? error.message : String(error) }),
      );
    } else if (msg.op === 'close') {
      void Promise.allSettled([gates?.slack.close(), gates?.discord.close(), slack.close(), discord.close()]).then(() => process.exit(0));
    }
  });
  process.on('disconnect', () => process.exit(0));
}

main().catch((error: unknown) => {
  send({ op: 'error', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
});
