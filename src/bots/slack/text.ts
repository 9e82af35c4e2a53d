/**
 * Slack reads message text as mrkdwn: `<!channel>`, `<@U123>` and `<https://…|label>`
 * are markup. Escaping &, < and > (Slack's documented rule) makes any user or server
 * text show literally, so a prompt like `<!channel>` never pings anyone.
 */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Cuts to at most `max` characters (code points), with an ellipsis when cut. */
export function truncate(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}
