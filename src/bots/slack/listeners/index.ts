import type { App } from '@slack/bolt';
import type { SlackContext } from '../context.js';
import { registerActions } from './actions/index.js';
import { registerCommands } from './commands/index.js';

/** All listeners, grouped by kind as in Slack's bolt-ts-starter-template. */
export function registerListeners(app: App, ctx: SlackContext): void {
  registerCommands(app, ctx);
  registerActions(app, ctx);
}
