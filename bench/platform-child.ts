// Measurement 4's platforms: the Slack and Discord stand-ins in their own process, so the CPU
// they spend sending 100 commands (HMAC signing, fetch, gateway frames) does not sit on the
// bot's event loop and inflate the acks it is measuring. Driven over IPC by scenarios/platforms.ts.
import { snowflake, startDiscordStandin } from '../test/standins/discord.js';
import { startSlackStandin } from '../test/standins/slack.js';
import { startGateProxy, type GateProxy } from './lib/gate-proxy.js';

type Request =
  | { op: 'burst'; eventsUrl: string; commands: number; tag: string }
  | { op: 'imagine-batch'; eventsUrl: string; slack: number; discord: number; tag: string }
  | { op: 'close' };

const send = (msg: unknown) => process.send?.(msg);

async function main() {
  const slack = await startSlackStandin();
  const discord = await startDiscordStandin();
  // BENCH_GATE=1: uploads (Slack's upload URLs, Discord's multipart requests) are held unanswered.
  let gates: { slack: GateProxy; discord: GateProxy } | undefined;
  if (process.env.BENCH_GATE === '1') {
    gates = {
      slack: await startGateProxy({ target: slack.url, rewriteAnswers: true, hold: (req) => req.method === 'POST' && (req.url ?? '').startsWith('/upload/') }),
      discord: await startGateProxy({ target: new URL(discord.apiUrl).origin, hold: (req) => /multipart\/form-data/.test(String(req.headers['content-type'] ?? '')) }),
    };
  }
  send({
    op: 'started',
    slack: { apiUrl: gates ? `${gates.slack.url}/api/` : slack.apiUrl, botToken: slack.botToken, signingSecret: slack.signingSecret },
    discord: { apiUrl: gates ? `${gates.discord.url}/api` : discord.apiUrl, token: discord.token, guildId: discord.guildId },
  });

  /** Sends /imagine from distinct users on both platforms, then waits until every upload is held. */
  async function imagineBatch(eventsUrl: string, nSlack: number, nDiscord: number, tag: string) {
    if (!gates) throw new Error('imagine-batch needs BENCH_GATE=1');
    for (let i = 0; i < nDiscord; i++) {
      discord.dispatchInteraction({ name: 'imagine', options: { prompt: `${tag} discord ${i}` }, userId: snowflake(Date.now() - 4e9 - i * 1e6), userName: `mem${i}` });
    }
    await Promise.all(Array.from({ length: nSlack }, (_, i) => slack.sendSlashCommand(eventsUrl, { command: '/imagine', text: `${tag} slack ${i}`, user_id: `U0MEM${i}` })));
    const deadline = Date.now() + 60_000;
    while (gates.slack.held() < nSlack || gates.discord.held() < nDiscord) {
      if (Date.now() > deadline) throw new Error(`uploads held: Slack ${gates.slack.held()}/${nSlack}, Discord ${gates.discord.held()}/${nDiscord}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return { slackHeld: gates.slack.held(), discordHeld: gates.discord.held() };
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
        discordIds.push(discord.dispatchInteraction({ name: 'imagine', options: { prompt }, userId: snowflake(Date.now() - 2e9 - i * 1e6), userName: `ack${i}` }).id);
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
        (result) => send({ op: 'held', ...result }),
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
