import type { App } from '@slack/bolt';
import { ACTIONS } from '../../blocks.js';
import type { SlackContext } from '../../context.js';
import { cancelAction } from './cancel.js';
import { killConfirmAction, killKeepAction } from './gpu-kill.js';
import { rerollAction } from './reroll.js';

/** Button clicks (block actions), over HTTP (`payload=` form posts) or Socket Mode (`interactive`). */
export function registerActions(app: App, ctx: SlackContext): void {
  app.action(ACTIONS.reroll, rerollAction(ctx));
  app.action(ACTIONS.cancel, cancelAction(ctx));
  app.action(ACTIONS.killConfirm, killConfirmAction(ctx));
  app.action(ACTIONS.killKeep, killKeepAction(ctx));
  // Any other action (a button of another version of the bot): acknowledged, nothing done.
  const known = new Set<string>(Object.values(ACTIONS));
  app.action(/.*/, async ({ ack, action }) => {
    const id = (action as { action_id?: unknown }).action_id;
    if (typeof id === 'string' && known.has(id)) return;
    await ack();
    ctx.log.warn({ actionId: typeof id === 'string' ? id.slice(0, 60) : undefined }, 'unknown Slack action');
  });
}
