import type { DiscordButton } from '../context.js';
import { cancelButton } from './cancel.js';
import { gpuKillButton } from './gpuKill.js';
import { rerollButton } from './reroll.js';

/** The button registry, by action (`fairbot:<action>:…`; one file per button). */
export const buttons = new Map<string, DiscordButton>(([rerollButton, cancelButton, gpuKillButton] as DiscordButton[]).map((b) => [b.action, b]));
