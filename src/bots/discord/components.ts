import { ButtonStyle, ComponentType } from 'discord.js';
import { discordMessages } from '../../messages.js';
import type { Rows } from './reply.js';

/**
 * Buttons and their custom ids. A button carries everything its click needs
 * (`fairbot:<action>:<argument>`, the job id for Re-roll and Cancel), so a click
 * works after a restart too: nothing about it is kept in memory.
 */

const PREFIX = 'fairbot';
/** Job ids are base36 time + hex (src/jobs/job.ts); anything else in a custom id is not ours. */
const JOB_ID = /^[0-9a-z]{4,40}$/;

export type ButtonAction = { action: 'reroll'; jobId: string } | { action: 'cancel'; jobId: string } | { action: 'gpu-kill'; choice: 'confirm' | 'keep' };

const customIds = {
  reroll: (jobId: string) => `${PREFIX}:reroll:${jobId}`,
  cancel: (jobId: string) => `${PREFIX}:cancel:${jobId}`,
  killConfirm: `${PREFIX}:gpu-kill:confirm`,
  killKeep: `${PREFIX}:gpu-kill:keep`,
} as const;

/** What a clicked button asks for, or undefined for a custom id this version does not know. */
export function parseCustomId(customId: string): ButtonAction | undefined {
  const [prefix, action, arg, ...rest] = customId.split(':');
  if (prefix !== PREFIX || arg === undefined || rest.length > 0) return undefined;
  if ((action === 'reroll' || action === 'cancel') && JOB_ID.test(arg)) return { action, jobId: arg };
  if (action === 'gpu-kill' && (arg === 'confirm' || arg === 'keep')) return { action, choice: arg };
  return undefined;
}

function row(...buttons: { customId: string; label: string; style: ButtonStyle }[]): Rows {
  return [
    {
      type: ComponentType.ActionRow,
      components: buttons.map((b) => ({ type: ComponentType.Button, custom_id: b.customId, label: b.label, style: b.style })),
    },
  ] as Rows;
}

/** Under a delivered image. */
export const rerollRow = (jobId: string): Rows => row({ customId: customIds.reroll(jobId), label: discordMessages.rerollLabel, style: ButtonStyle.Secondary });

/** On the progress message while the job waits or runs. */
export const cancelRow = (jobId: string): Rows => row({ customId: customIds.cancel(jobId), label: discordMessages.cancelLabel, style: ButtonStyle.Secondary });

/** The /gpu kill question when jobs would be ended. */
export const killConfirmRow = (): Rows =>
  row(
    { customId: customIds.killConfirm, label: discordMessages.killConfirmLabel, style: ButtonStyle.Danger },
    { customId: customIds.killKeep, label: discordMessages.killKeepLabel, style: ButtonStyle.Secondary },
  );
