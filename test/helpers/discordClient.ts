/**
 * A bare discord.js Client logged in to the Discord stand-in, for tests of the
 * stand-in itself. Waits on client events with a deadline, never sleeps.
 */
import { once } from 'node:events';
import { Client, Events, GatewayIntentBits, type Interaction } from 'discord.js';
import type { DiscordStandin } from '../standins/discord.js';

export async function loginBareClient(standin: DiscordStandin, timeoutMs = 10_000): Promise<Client> {
  const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: standin.apiUrl } });
  const ready = once(client, Events.ClientReady, { signal: AbortSignal.timeout(timeoutMs) });
  await client.login(standin.token);
  await ready;
  return client;
}

/** Resolves with the next interaction the client emits (within the deadline). */
export function nextInteraction(client: Client, timeoutMs = 5000): Promise<Interaction> {
  return once(client, Events.InteractionCreate, { signal: AbortSignal.timeout(timeoutMs) }).then(([interaction]) => interaction as Interaction);
}
