import type { Config } from '../config.js';
import type { Requester } from '../jobs/types.js';

/**
 * ADMIN_IDS holds `discord:<id>` and `slack:<id>`: an id is an admin only on its own
 * platform. The terminal (CLI) is trusted: whoever runs it already holds the credentials.
 */
export function isAdmin(requester: Requester, config: Pick<Config, 'adminIds'>): boolean {
  if (requester.platform === 'cli') return true;
  return config.adminIds.includes(`${requester.platform}:${requester.userId}`);
}
