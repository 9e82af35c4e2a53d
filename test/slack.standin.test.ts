// Self-test of the Slack stand-in with a bare Bolt App (the real client, real sockets):
// if these pass, the stand-in speaks what Bolt and the WebClient send.
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { App, LogLevel, SocketModeReceiver, webApi } from '@slack/bolt';
import { afterEach, describe, expect, it } from 'vitest';
import { renderSlackMessage, startSlackStandin, type SlackStandin } from './standins/slack.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function standin(opts: Parameters<typeof startSlackStandin>[0] = {}): Promise<SlackStandin> {
  const s = await startSlackStandin(opts);
  cleanups.push(() => s.close());
  return s;
}

async function httpApp(slack: SlackStandin, setup: (app: InstanceType<typeof App>) => void) {
  const app = new App({
    token: slack.botToken,
    signingSecret: slack.signingSecret,
    clientOptions: { slackApiUrl: slack.apiUrl, retryConfig: { retries: 0 } },
    logLevel: LogLevel.ERROR,
    deferInitialization: true,
  });
  setup(app);
  await app.init();
  const server = (await app.start(0)) as Server;
  cleanups.push(async () => {
    await app.stop();
  });
  return { app, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/slack/events` };
}

describe('Slack stand-in with a bare Bolt app', () => {
  it('delivers a signed slash command over HTTP and shows the ack to the user', async () => {
    const slack = await standin();
    const seen: string[] = [];
    const { url } = await httpApp(slack, (app) => {
      app.command('/ping', async ({ ack, command }) => {
        seen.push(`${command.user_id}:${command.text}`);
        await ack({ response_type: 'ephemeral', text: `pong ${command.text}` });
      });
    });
    const res = await slack.sendSlashCommand(url, { command: '/ping', text: 'a & b <!channel>', user_id: 'U1' });
    expect(res.status).toBe(200);
    expect(res.text).toBe('pong a & b <!channel>');
    expect(seen).toEqual(['U1:a & b <!channel>']);
    expect(slack.userView('U1').map((m) => m.text)).toEqual(['pong a & b <!channel>']);
    // init() verified the token once.
    expect(slack.callsTo('auth.test')).toHaveLength(1);
  });

  it('refuses a bad signature and an old timestamp (401), and never calls the listener', async () => {
    const slack = await standin();
    let called = 0;
    const { url } = await httpApp(slack, (app) => {
      app.command('/ping', async ({ ack }) => {
        called += 1;
        await ack();
      });
    });
    const bad = await slack.sendSlashCommand(url, { command: '/ping', user_id: 'U1' }, { badSignature: true });
    expect(bad.status).toBe(401);
    const old = await slack.sendSlashCommand(url, { command: '/ping', user_id: 'U1' }, { timestamp: Math.floor(Date.now() / 1000) - 6 * 60 });
    expect(old.status).toBe(401);
    expect(called).toBe(0);
  });

  it('lands the exact bytes of client.files.uploadV2 in the channel with the comment', async () => {
    const slack = await standin();
    const { app } = await httpApp(slack, () => {});
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7 + 3) & 0xff));
    await app.client.files.uploadV2({
      channel_id: slack.channelId,
      file: bytes,
      filename: 'image.png',
      title: 'image',
      initial_comment: 'hello &amp; welcome',
    });
    const shares = slack.channelFiles();
    expect(shares).toHaveLength(1);
    expect(shares[0]!.initialComment).toBe('hello &amp; welcome');
    expect(shares[0]!.files[0]!.filename).toBe('image.png');
    expect(shares[0]!.files[0]!.bytes.equals(bytes)).toBe(true);
    expect(slack.callsTo('upload')[0]!.contentType).toMatch(/^multipart\/form-data/);
  });

  it('holds files.getUploadURLExternal to its documented arguments: alt_txt is the alt text, alt_text is refused', async () => {
    const slack = await standin();
    const { app } = await httpApp(slack, () => {});
    const call = (args: Record<string, unknown>) => app.client.apiCall('files.getUploadURLExternal', { filename: 'a.png', length: 3, ...args });
    await expect(call({ alt_text: 'a fox' })).rejects.toMatchObject({
      data: { error: 'invalid_arguments', detail: 'not an argument of files.getUploadURLExternal: alt_text' },
    });
    await expect(call({ alt_txt: 'x'.repeat(1001) })).rejects.toMatchObject({ data: { error: 'alt_txt_too_large' } });
    const { upload_url: uploadUrl, file_id: fileId } = (await call({ alt_txt: 'a fox' })) as unknown as { upload_url: string; file_id: string };
    await fetch(uploadUrl, { method: 'POST', body: 'png' });
    await app.client.files.completeUploadExternal({ files: [{ id: fileId }], channel_id: slack.channelId });
    expect(slack.channelFiles()[0]!.files[0]!.altText).toBe('a fox');
  });

  it('refuses a replace_original that reuses a block_id of the message it replaces', async () => {
    const slack = await standin();
    const url = slack.newResponseUrl({ userId: 'U1' });
    const post = (blockId: string) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          text: blockId,
          replace_original: true,
          blocks: [{ type: 'section', block_id: blockId, text: { type: 'plain_text', text: blockId } }],
        }),
      });
    expect((await post('b1')).status).toBe(200);
    expect((await post('b2')).status).toBe(200);
    const reused = await post('b2');
    expect(reused.status).toBe(400);
    expect(await reused.text()).toBe('invalid_blocks: block_id b2 reused by replace_original');
    expect(slack.userView('U1').map((m) => m.text)).toEqual(['b2']);
  });

  it('checks the token, reports channel errors and injected faults', async () => {
    const slack = await standin({ channels: { C0OUTSIDE: { member: false } } });
    const { app } = await httpApp(slack, () => {});
    await expect(app.client.chat.postMessage({ channel: slack.channelId, text: 'x', token: 'xoxb-wrong' })).rejects.toMatchObject({
      data: { error: 'invalid_auth' },
    });
    await expect(app.client.chat.postMessage({ channel: 'C0OUTSIDE', text: 'x' })).rejects.toMatchObject({
      data: { error: 'not_in_channel' },
    });
    await expect(app.client.chat.postEphemeral({ channel: 'C0NOPE', user: 'U1', text: 'x' })).rejects.toMatchObject({
      data: { error: 'channel_not_found' },
    });
    slack.setFault('chat.postMessage', { ratelimited: 1, times: 1 });
    const started = Date.now();
    // A separate client that retries: the 429 is retried after Retry-After.
    const retrying = new webApi.WebClient(slack.botToken, {
      slackApiUrl: slack.apiUrl,
      retryConfig: { retries: 2, minTimeout: 10, maxTimeout: 20 },
      logLevel: LogLevel.ERROR,
    });
    const ok = await retrying.chat.postMessage({ channel: slack.channelId, text: 'after the limit' });
    expect(ok.ok).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(slack.callsTo('chat.postMessage').map((c) => c.status)).toEqual([200, 200, 429, 200]);
    expect(slack.posts.map((p) => p.text)).toEqual(['after the limit']);
  });

  it('enforces the response_url limits: 5 posts, 30 minutes', async () => {
    const slack = await standin();
    const url = slack.newResponseUrl({ userId: 'U1' });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text: `m${i}`, replace_original: true }),
      });
      statuses.push(r.status);
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 404]);
    expect(slack.responseUrlPosts.at(-1)!.error).toBe('used_url');
    expect(slack.userView('U1').map(({ text, via, replaced }) => ({ text, via, replaced }))).toEqual([{ text: 'm4', via: 'response_url', replaced: 4 }]);
    const old = slack.newResponseUrl({ userId: 'U2' });
    slack.expireResponseUrl(old);
    const r = await fetch(old, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"text":"late"}' });
    expect(r.status).toBe(404);
    expect(slack.userView('U2')).toEqual([]);
  });

  it('serves a slash command over Socket Mode', async () => {
    const slack = await standin();
    // The receiver is built here so the test can wait for the disconnect: App#stop()
    // resolves before the WebSocket is closed.
    const receiver = new SocketModeReceiver({
      appToken: slack.appToken,
      logLevel: LogLevel.ERROR,
      installerOptions: { clientOptions: { slackApiUrl: slack.apiUrl } },
    });
    const app = new App({
      token: slack.botToken,
      receiver,
      clientOptions: { slackApiUrl: slack.apiUrl },
      logLevel: LogLevel.ERROR,
      deferInitialization: true,
    });
    app.command('/ping', async ({ ack, command }) => {
      await ack({ text: `pong over socket ${command.text}` });
    });
    await app.init();
    await app.start();
    cleanups.push(() => receiver.client.disconnect());
    const res = await slack.sendSocketCommand({ command: '/ping', text: 'hi', user_id: 'U9' });
    expect(res.text).toBe('pong over socket hi');
    expect(slack.userView('U9').map((m) => m.text)).toEqual(['pong over socket hi']);
    expect(slack.callsTo('apps.connections.open')[0]!.token).toBe(slack.appToken);
  });

  it("delivers signed button clicks over HTTP; a click's response_url acts on the clicked message", async () => {
    const slack = await standin();
    const seen: string[] = [];
    const { app, url } = await httpApp(slack, (a) => {
      a.action('go', async ({ ack, body, respond, action }) => {
        await ack();
        const b = body as { user: { id: string }; container: { is_ephemeral?: boolean } };
        seen.push(`${b.user.id}:${(action as { value?: string }).value}:${b.container.is_ephemeral ? 'ephemeral' : 'channel'}`);
        if (b.container.is_ephemeral) await respond({ replace_original: true, text: 'clicked' });
        else await respond({ replace_original: false, response_type: 'ephemeral', text: 'just you' });
      });
    });
    const blocks = [{ type: 'actions', elements: [{ type: 'button', action_id: 'go', text: { type: 'plain_text', text: 'Go' }, value: 'v1' }] }];
    await app.client.chat.postEphemeral({ channel: slack.channelId, user: 'U1', text: 'press', blocks });
    const mine = slack.userView('U1')[0]!;
    expect(slack.buttons(mine)).toEqual([{ action_id: 'go', value: 'v1', text: 'Go' }]);
    const res = await slack.click(url, 'U1', mine, 'go');
    expect('status' in res && res.status).toBe(200);
    await slack.waitFor(() => slack.userView('U1')[0]?.text === 'clicked', 5_000, 'the replaced ephemeral');
    expect(slack.userView('U1')).toHaveLength(1);

    await app.client.chat.postMessage({ channel: slack.channelId, text: 'for all', blocks });
    const post = slack.posts[0]!;
    await slack.click(url, 'U2', post, 'go');
    await slack.waitFor(() => slack.userView('U2')[0]?.text === 'just you', 5_000, 'the private answer');
    expect(post.text).toBe('for all');
    expect(seen).toEqual(['U1:v1:ephemeral', 'U2:v1:channel']);
    // A forged click is refused like a forged command.
    const forged = await slack.sendBlockAction(url, { user_id: 'U3', action_id: 'go', value: 'x' }, { badSignature: true });
    expect(forged.status).toBe(401);
    expect(seen).toHaveLength(2);
    // A click on a message without that button cannot happen.
    await expect(slack.click(url, 'U1', slack.userView('U1')[0], 'go')).rejects.toThrow(/no button go/);
  });

  it('renders messages as Slack shows them: mentions notify, mrkdwn formats, rich and plain text are literal', () => {
    expect(renderSlackMessage({ text: 'hi <!channel> <@U1> *b* &lt;!here&gt;' })).toEqual({
      text: 'hi @channel @U1 *b* <!here>',
      pings: ['@channel', '@U1'],
      formatted: ['bold:b'],
    });
    const rich = renderSlackMessage({
      blocks: [
        {
          type: 'rich_text',
          elements: [
            {
              type: 'rich_text_section',
              elements: [
                { type: 'text', text: '<!channel> *b*' },
                { type: 'user', user_id: 'U2' },
              ],
            },
          ],
        },
      ],
    });
    expect(rich).toEqual({ text: '<!channel> *b*@U2', pings: ['@U2'], formatted: [] });
    const plain = renderSlackMessage({ text: 'fallback <!here>', blocks: [{ type: 'section', text: { type: 'plain_text', text: '<@U3> _i_' } }] });
    // The fallback text is not shown but still notifies.
    expect(plain).toEqual({ text: '<@U3> _i_', pings: ['@here'], formatted: [] });
  });
});
