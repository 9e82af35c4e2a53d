import type { DiscordCommand } from '../context.js';
import { gpuCommand } from './gpu.js';
import { imagineCommand } from './imagine.js';

/** The command registry, by name (one file per command). */
export const commands = new Map<string, DiscordCommand>([imagineCommand, gpuCommand].map((c) => [c.data.name, c]));
