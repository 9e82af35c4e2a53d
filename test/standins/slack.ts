// A Slack stand-in for tests: a real HTTP (and WebSocket) server on 127.0.0.1 that
// speaks the parts of Slack the bot uses, as the official clients send them:
//
//  - the Web API at POST /api/<method> (form-encoded or JSON bodies, the token in
//    `Authorization: Bearer ...` or in a `token` field): auth.test, chat.postMessage,
//    chat.postEphemeral, chat.update, files.getUploadURLExternal,
//    files.completeUploadExternal, apps.connections.open;
//  - the upload URL handed out by files.getUploadURLExternal (POST /upload/<file id>),
//    raw or multipart body, bytes kept exactly;
//  - Socket Mode (GET /link upgraded to a WebSocket): `hello`, envelopes, acks;
//  - response_url receivers (POST /response/<id>), with Slack's limits (30 minutes,
//    5 posts) enforced;
//  - helpers to send SIGNED slash commands and button clicks (block_actions, as a
//    `payload=<json>` form post) to an app over HTTP, or to push them over Socket Mode
//    (`slash_commands` / `interactive` envelopes), and to see what a user or a channel
//    would see (renderSlackMessage: the text Slack shows and who it notifies).
//
// Everything is recorded; faults can be injected per method. Every body the bot sends
// is handed to the suite-wide secret scan (recordOutput), and the stand-in's tokens are
// registered as secrets.
import { createHmac, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { WebSocketServer, type WebSocket } from 'ws';
import { recordOutput, registerSecret } from '../helpers/secret-scan.js';

// ----------------------------------------------------------------------------
// Types
// ----------------------------------------------------------------------------

/** A fault for one method (or `upload` for upload URLs, `response_url` for response URLs). */
export type SlackFault =
  /** HTTP 200 `{ok:false, error}`: how Slack reports API errors. */
  | { error: string; times?: number }
  /** HTTP 429 with `Retry-After: <seconds>`. */
  | { ratelimited: number; times?: number }
  /** A raw HTTP status (e.g. 500, or 413 for an upload), body optional. */
  | { status: number; body?: string; times?: number }
  /** No answer at all (the connection stays open until close()): a call cut off by a crash. */
  | { hang: true; times?: number };

export interface ApiCall {
  /** Web API method, or `upload` / `response_url`. */
  method: string;
  /** Parsed parameters (form fields or JSON), or for uploads the form field names. */
  params: Record<string, unknown>;
  contentType: string;
  /** The token the call carried (header or field), if any. */
  token?: string;
  at: number;
  status: number;
  response: unknown;
}

export interface ChannelPost {
  channel: string;
  ts: string;
  text?: string;
  blocks?: unknown;
  /** Set when the message was edited with chat.update (or replaced through a response_url). */
  edited?: boolean;
  /** Set when a response_url (replace_original) replaced it: for everyone in the channel. */
  replacedViaResponseUrl?: boolean;
  /** Set when a response_url deleted it (delete_original). */
  deleted?: boolean;
}

export interface EphemeralPost {
  channel: string;
  user: string;
  text?: string;
  blocks?: unknown;
  at: number;
}

export interface SharedFile {
  id: string;
  title?: string;
  filename: string;
  /** The screen-reader description (files.getUploadURLExternal's `alt_txt`). */
  altText?: string;
  bytes: Buffer;
}

/** One files.completeUploadExternal that succeeded: what the channel shows. */
export interface FileShare {
  channel: string;
  initialComment?: string;
  /** The `blocks` of the file message (ignored by Slack when initial_comment is set). */
  blocks?: unknown;
  threadTs?: string;
  files: SharedFile[];
  at: number;
}

export interface ResponseUrlPost {
  id: string;
  url: string;
  body: Record<string, unknown>;
  accepted: boolean;
  status: number;
  /** Why it was refused: `expired_url`, `used_url`, or an injected fault. */
  error?: string;
  at: number;
}

export interface Ack {
  via: 'http' | 'socket';
  user: string;
  channel: string;
  command: string;
  /** What the app answered (HTTP body parsed as JSON when it is, socket ack payload). */
  payload: unknown;
  at: number;
}

/** A message as the user sees it (ephemeral: only they see it). */
export interface VisibleMessage {
  /** The stand-in's id for this message (to click its buttons). */
  id: string;
  text: string;
  /** Block Kit of the message, when it has some (buttons live here). */
  blocks?: unknown;
  /** Where it came from: the command's ack, a response_url post, chat.postEphemeral. */
  via: 'ack' | 'response_url' | 'ephemeral';
  /** How many times it was replaced in place (replace_original). */
  replaced: number;
}

export interface SlashCommandFields {
  command: string;
  text?: string;
  user_id: string;
  channel_id?: string;
  user_name?: string;
  channel_name?: string;
  team_id?: string;
  team_domain?: string;
  response_url?: string;
  trigger_id?: string;
  api_app_id?: string;
  [key: string]: string | undefined;
}

export interface SlashCommandResult {
  status: number;
  /** The raw response body. */
  body: string;
  /** The body parsed as JSON when it is JSON. */
  json?: unknown;
  /** The text the user sees from the ack, if any. */
  text?: string;
  ackMs: number;
  responseUrl: string;
}

export interface SocketCommandResult {
  envelopeId: string;
  /** The ack's payload (undefined for an empty ack). */
  payload?: unknown;
  text?: string;
  ackMs: number;
  responseUrl: string;
}

/** A button as found in a message's blocks. */
export interface Button {
  action_id: string;
  block_id?: string;
  value?: string;
  text: string;
  style?: string;
}

/** A click on a button: who, which button, on which message. */
export interface BlockActionInput {
  user_id: string;
  action_id: string;
  value?: string;
  /** The message the button is on: one of the user's ephemerals or a channel post. Absent: a bare click. */
  message?: VisibleMessage | ChannelPost;
  channel_id?: string;
  /** Default: a fresh response_url tied to the clicked message, as Slack makes for every click. */
  response_url?: string;
}

export interface BlockActionResult {
  status: number;
  body: string;
  ackMs: number;
  /** The click's response_url. */
  responseUrl: string;
}

export interface SlackStandinOptions {
  botToken?: string;
  appToken?: string;
  signingSecret?: string;
  teamId?: string;
  /** The channel commands come from by default; the bot is a member. */
  channelId?: string;
  /** Further channels: `member: false` means the bot was not invited (not_in_channel). */
  channels?: Record<string, { member: boolean }>;
  /** response_url lifetime (Slack: 30 minutes). */
  responseUrlTtlMs?: number;
  /** response_url posts allowed (Slack: 5). */
  responseUrlMaxPosts?: number;
  /** How long sendSocketCommand waits for the app's ack (Slack: 3 s). */
  socketAckTimeoutMs?: number;
}

export interface SlackStandin {
  /** Base of everything served, `http://127.0.0.1:<port>`. */
  url: string;
  /** The Web API base: the value for `slackApiUrl` / `SLACK_API_URL` (ends in `/api/`). */
  apiUrl: string;
  botToken: string;
  appToken: string;
  signingSecret: string;
  teamId: string;
  botUserId: string;
  botId: string;
  channelId: string;
  calls: ApiCall[];
  /** Bytes received at upload URLs, by file id. */
  uploads: Map<string, Buffer>;
  /** Completed uploads shared in channels. */
  fileShares: FileShare[];
  /**
   * Drops the bytes of every upload so far (records and sizes stay). For long benchmark
   * runs: a stand-in holding hundreds of MB of images in the bot's process makes V8 collect
   * over and over, which a real Slack, on its own machines, does not cause.
   */
  releaseFiles(): void;
  posts: ChannelPost[];
  ephemerals: EphemeralPost[];
  responseUrlPosts: ResponseUrlPost[];
  acks: Ack[];
  /** WebSocket connections opened by Socket Mode clients so far. */
  socketConnections: number;
  /** Ephemeral messages a user sees, in order, with replace_original applied. */
  userView(userId: string): VisibleMessage[];
  /** The buttons in a message (or in raw blocks). */
  buttons(message: { blocks?: unknown } | undefined): Button[];
  /** Sends a SIGNED block_actions payload (`payload=<json>`) to the app's events URL, as Slack does for a click. */
  sendBlockAction(appUrl: string, input: BlockActionInput, opts?: { timestamp?: number; badSignature?: boolean }): Promise<BlockActionResult>;
  /** The same click as an `interactive` Socket Mode envelope; resolves on the app's ack. */
  sendSocketBlockAction(input: BlockActionInput, opts?: { ackTimeoutMs?: number }): Promise<{ envelopeId: string; ackMs: number; responseUrl: string }>;
  /**
   * Clicks the button `actionId` of `message` as `userId`: over HTTP to `target` (the
   * app's events URL) or over Socket Mode (`'socket'`). Fails when the message has no
   * such button, as a user could not click it.
   */
  click(
    target: string,
    userId: string,
    message: VisibleMessage | ChannelPost | undefined,
    actionId: string,
  ): Promise<BlockActionResult | { envelopeId: string; ackMs: number; responseUrl: string }>;
  /** Files shared in a channel (default: the default channel). */
  channelFiles(channelId?: string): FileShare[];
  /** Calls of one method. */
  callsTo(method: string): ApiCall[];
  addChannel(id: string, opts: { member: boolean }): void;
  newResponseUrl(opts?: { userId?: string; channelId?: string; ttlMs?: number; maxPosts?: number }): string;
  /** Make a response_url behave as if its 30 minutes were over. */
  expireResponseUrl(url: string): void;
  sign(body: string, timestamp: number, secret?: string): string;
  sendSlashCommand(
    appUrl: string,
    fields: SlashCommandFields,
    opts?: { timestamp?: number; badSignature?: boolean; contentType?: string },
  ): Promise<SlashCommandResult>;
  /** Socket Mode connections open now. */
  openSockets(): number;
  /** Asks connected clients to reconnect, as Slack does (`{type:'disconnect', reason}`). */
  disconnectSockets(reason?: string): void;
  /** Waits (with a deadline) for a Socket Mode client to be connected. */
  waitForSocket(timeoutMs?: number): Promise<void>;
  sendSocketCommand(fields: SlashCommandFields, opts?: { ackTimeoutMs?: number }): Promise<SocketCommandResult>;
  /** Resolves with pred's first truthy value, re-checked on every recorded change (and every 25 ms). */
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string): Promise<T>;
  setFault(method: string, fault: SlackFault | undefined): void;
  /** Answers every call of a Web API method this many ms late (a slow Slack); undefined: at once again. */
  setDelay(method: string, delayMs: number | undefined): void;
  /** Answers every request a `hang` fault holds with this HTTP status (a stalled upload that finally fails). */
  releaseHanging(status: number): void;
  close(): Promise<void>;
}

// ----------------------------------------------------------------------------
// Implementation
// ----------------------------------------------------------------------------

const BODY_LIMIT = 64 * 1024 * 1024;

/** files.getUploadURLExternal's documented arguments (docs.slack.dev/reference/methods). */
const UPLOAD_URL_ARGUMENTS = new Set(['token', 'filename', 'length', 'alt_txt', 'snippet_type']);

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > BODY_LIMIT) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Slack's answer for the text of a message payload. */
function textOf(payload: unknown): string | undefined {
  if (typeof payload === 'string') return payload;
  if (payload && typeof payload === 'object' && typeof (payload as { text?: unknown }).text === 'string') {
    return (payload as { text: string }).text;
  }
  return undefined;
}

function parseJsonField(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

interface ResponseUrlState {
  id: string;
  url: string;
  userId?: string;
  channelId?: string;
  createdAt: number;
  ttlMs: number;
  maxPosts: number;
  posts: number;
  expired: boolean;
  /**
   * A click's response_url: replace_original / delete_original act on the clicked
   * message (for a channel post: for everyone). A command's has none: they act on the
   * command's own answer.
   */
  source?: { kind: 'user'; user: string; messageId: string } | { kind: 'channel'; channel: string; ts: string };
}

interface UserMessage extends VisibleMessage {
  /** The response_url this message belongs to (replace_original targets it). */
  responseId?: string;
  channel: string;
  ts: string;
}

/** Buttons in Block Kit blocks (actions elements and section accessories). */
function buttonsIn(blocks: unknown): Button[] {
  if (!Array.isArray(blocks)) return [];
  const out: Button[] = [];
  const add = (el: unknown, blockId: unknown) => {
    const e = (el ?? {}) as Record<string, unknown>;
    if (e.type !== 'button' || typeof e.action_id !== 'string') return;
    const text = ((e.text ?? {}) as { text?: unknown }).text;
    out.push({
      action_id: e.action_id,
      block_id: typeof blockId === 'string' ? blockId : undefined,
      value: typeof e.value === 'string' ? e.value : undefined,
      text: typeof text === 'string' ? text : '',
      style: typeof e.style === 'string' ? e.style : undefined,
    });
  };
  for (const b of blocks as Array<Record<string, unknown>>) {
    if (!b || typeof b !== 'object') continue;
    if (b.type === 'actions' && Array.isArray(b.elements)) for (const el of b.elements) add(el, b.block_id);
    if (b.type === 'section' && b.accessory) add(b.accessory, b.block_id);
  }
  return out;
}

/** What a message looks like in Slack: the text a reader sees, who it notifies, what is formatted. */
export interface RenderedMessage {
  /** The visible text (blocks when there are some, else `text`), markup resolved. */
  text: string;
  /** Who gets notified: `@U…` for users, `@channel` / `@here` / `@everyone`, `@subteam^…`. */
  pings: string[];
  /** Formatting Slack applies, e.g. `bold:word` (mrkdwn `*word*`, or a rich text style). */
  formatted: string[];
}

/**
 * A model of how Slack renders a message, for asserting what users see: mrkdwn
 * (`<@U…>`, `<!channel>`, `*bold*`, `&lt;` …), plain_text (literal) and rich_text
 * (literal text elements, `user` / `broadcast` elements). The fallback `text` of a
 * message with blocks is not shown but still counts for notifications.
 */
export function renderSlackMessage(msg: { text?: string; blocks?: unknown }): RenderedMessage {
  const pings: string[] = [];
  const formatted: string[] = [];
  const mrkdwn = (src: string): string => {
    const fmt = /(^|[\s(["'])([*_~`])(?=\S)([^\n]*?\S)\2(?=$|[\s)\].,!?:;"'])/g;
    for (const m of src.matchAll(fmt)) {
      const kind = { '*': 'bold', _: 'italic', '~': 'strike', '`': 'code' }[m[2]!]!;
      formatted.push(`${kind}:${m[3]}`);
    }
    const shown = src.replace(/<([^<>]*)>/g, (_all, inner: string) => {
      const [target, label] = inner.split('|', 2) as [string, string | undefined];
      if (/^@[UW][A-Z0-9]+$/.test(target)) {
        pings.push(target);
        return label ? `@${label}` : target;
      }
      const special = /^!(channel|here|everyone|subteam\^[A-Z0-9]+)/.exec(target);
      if (special) {
        pings.push(`@${special[1]}`);
        return label ?? `@${special[1]}`;
      }
      if (target.startsWith('#')) return label ? `#${label}` : target;
      return label ?? target;
    });
    return shown.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  };
  const textObject = (t: unknown): string => {
    const o = (t ?? {}) as { type?: unknown; text?: unknown };
    if (typeof o.text !== 'string') return '';
    return o.type === 'mrkdwn' ? mrkdwn(o.text) : o.text;
  };
  const richElement = (e: Record<string, unknown>): string => {
    switch (e.type) {
      case 'text': {
        const style = (e.style ?? {}) as Record<string, unknown>;
        for (const k of ['bold', 'italic', 'strike', 'code']) if (style[k]) formatted.push(`${k}:${String(e.text)}`);
        return typeof e.text === 'string' ? e.text : '';
      }
      case 'user':
        pings.push(`@${String(e.user_id)}`);
        return `@${String(e.user_id)}`;
      case 'usergroup':
        pings.push(`@subteam^${String(e.usergroup_id)}`);
        return `@subteam^${String(e.usergroup_id)}`;
      case 'broadcast':
        pings.push(`@${String(e.range)}`);
        return `@${String(e.range)}`;
      case 'channel':
        return `#${String(e.channel_id)}`;
      case 'link':
        return typeof e.text === 'string' ? e.text : String(e.url);
      case 'emoji':
        return `:${String(e.name)}:`;
      default:
        return Array.isArray(e.elements) ? (e.elements as Array<Record<string, unknown>>).map(richElement).join('') : '';
    }
  };
  const lines: string[] = [];
  if (Array.isArray(msg.blocks) && msg.blocks.length > 0) {
    for (const b of msg.blocks as Array<Record<string, unknown>>) {
      switch (b.type) {
        case 'section':
          if (b.text) lines.push(textObject(b.text));
          if (Array.isArray(b.fields)) lines.push(...b.fields.map(textObject));
          break;
        case 'header':
          lines.push(textObject(b.text));
          break;
        case 'context':
          if (Array.isArray(b.elements)) lines.push(...b.elements.map(textObject).filter(Boolean));
          break;
        case 'rich_text':
          if (Array.isArray(b.elements)) lines.push(...(b.elements as Array<Record<string, unknown>>).map(richElement));
          break;
        default:
          break;
      }
    }
    // The fallback text is not shown, but Slack notifies from it too.
    if (msg.text) {
      const seen = formatted.length;
      mrkdwn(msg.text);
      formatted.splice(seen);
    }
  } else if (msg.text) {
    lines.push(mrkdwn(msg.text));
  }
  return { text: lines.join('\n'), pings: [...new Set(pings)], formatted };
}

export async function startSlackStandin(opts: SlackStandinOptions = {}): Promise<SlackStandin> {
  const botToken = opts.botToken ?? `xoxb-standin-${randomBytes(6).toString('hex')}`;
  const appToken = opts.appToken ?? `xapp-1-standin-${randomBytes(6).toString('hex')}`;
  const signingSecret = opts.signingSecret ?? randomBytes(16).toString('hex');
  const teamId = opts.teamId ?? 'T0STANDIN';
  const channelId = opts.channelId ?? 'C0GENERAL';
  const botUserId = 'U0FAIRBOT';
  const botId = 'B0FAIRBOT';
  const appId = 'A0FAIRBOT';
  const ttlDefault = opts.responseUrlTtlMs ?? 30 * 60_000;
  const maxPostsDefault = opts.responseUrlMaxPosts ?? 5;
  const socketAckTimeout = opts.socketAckTimeoutMs ?? 3000;
  // None of these may ever appear in a log line or a message the bot sends.
  registerSecret(botToken);
  registerSecret(appToken);
  registerSecret(signingSecret);

  const channels = new Map<string, { member: boolean }>([[channelId, { member: true }]]);
  for (const [id, c] of Object.entries(opts.channels ?? {})) channels.set(id, c);

  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const changed = () => changes.emit('change');

  const calls: ApiCall[] = [];
  const uploads = new Map<string, Buffer>();
  const pendingUploads = new Map<string, { filename: string; length: number; altText?: string; uploaded: boolean }>();
  const fileShares: FileShare[] = [];
  const posts: ChannelPost[] = [];
  const ephemerals: EphemeralPost[] = [];
  const responseUrlPosts: ResponseUrlPost[] = [];
  const acks: Ack[] = [];
  const responseUrls = new Map<string, ResponseUrlState>();
  const userMessages = new Map<string, UserMessage[]>();
  const faults = new Map<string, SlackFault & { remaining: number }>();
  let seq = 0;
  const nextTs = () => `${Math.floor(Date.now() / 1000)}.${String(++seq).padStart(6, '0')}`;

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`stand-in error: ${String(err)}`);
      } else res.destroy();
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  const sockets = new Set<WebSocket>();
  const ackWaiters = new Map<string, (payload: unknown) => void>();
  let socketConnections = 0;

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const apiUrl = `${url}/api/`;

  // ---- user view ------------------------------------------------------------
  let messageSeq = 0;
  function pushUserMessage(user: string, msg: Omit<UserMessage, 'id' | 'ts'>) {
    const list = userMessages.get(user) ?? [];
    list.push({ ...msg, id: `m${++messageSeq}`, ts: nextTs() });
    userMessages.set(user, list);
  }

  const truthy = (v: unknown) => v === true || v === 'true';

  /**
   * The block_ids a replace_original through this response_url would carry over from the
   * message it replaces. Slack: "block_id should be unique for each message and each
   * iteration of a message. If a message is updated, use a new block_id."
   */
  function reusedBlockIds(user: string, body: Record<string, unknown>, responseId: string): string[] {
    if (!truthy(body.replace_original) || body.blocks === undefined) return [];
    const source = responseUrls.get(responseId)?.source;
    const replaced =
      source?.kind === 'channel'
        ? posts.find((p) => p.channel === source.channel && p.ts === source.ts)?.blocks
        : source
          ? (userMessages.get(source.user) ?? []).find((m) => m.id === source.messageId)?.blocks
          : (userMessages.get(user) ?? []).find((m) => m.responseId === responseId)?.blocks;
    const ids = (blocks: unknown) =>
      (Array.isArray(blocks) ? (blocks as Array<{ block_id?: unknown }>) : []).flatMap((b) => (typeof b.block_id === 'string' ? [b.block_id] : []));
    const before = new Set(ids(replaced));
    return ids(parseJsonField(body.blocks)).filter((id) => before.has(id));
  }

  /** A message body sent as a command's or a click's answer (ack body or response_url post). */
  function showAnswer(user: string, channel: string, payload: unknown, via: 'ack' | 'response_url', responseId?: string) {
    const body = (typeof payload === 'object' && payload !== null ? payload : {}) as Record<string, unknown>;
    const text = textOf(payload);
    const blocks = body.blocks === undefined ? undefined : parseJsonField(body.blocks);
    const source = via === 'response_url' && responseId ? responseUrls.get(responseId)?.source : undefined;
    if (via === 'response_url' && truthy(body.delete_original)) {
      if (source?.kind === 'channel') {
        const post = posts.find((p) => p.channel === source.channel && p.ts === source.ts);
        if (post) post.deleted = true;
        return;
      }
      const list = userMessages.get(source?.user ?? user) ?? [];
      const i = list.findIndex((m) => (source ? m.id === source.messageId : m.responseId === responseId));
      if (i >= 0) list.splice(i, 1);
      return;
    }
    if (text === undefined && blocks === undefined) return;
    // A click's response_url replaces the clicked message: a channel post for everyone.
    if (source && truthy(body.replace_original)) {
      if (source.kind === 'channel') {
        const post = posts.find((p) => p.channel === source.channel && p.ts === source.ts);
        if (post) {
          post.text = text;
          post.blocks = blocks;
          post.edited = true;
          post.replacedViaResponseUrl = true;
        }
        return;
      }
      const existing = (userMessages.get(source.user) ?? []).find((m) => m.id === source.messageId);
      if (existing) {
        existing.text = text ?? '';
        existing.blocks = blocks;
        existing.via = 'response_url';
        existing.replaced += 1;
      }
      return;
    }
    if (body.response_type === 'in_channel') {
      posts.push({ channel, ts: nextTs(), text, blocks });
      return;
    }
    if (!source && via === 'response_url' && truthy(body.replace_original)) {
      const list = userMessages.get(user) ?? [];
      const existing = list.find((m) => m.responseId === responseId);
      if (existing) {
        existing.text = text ?? '';
        existing.blocks = blocks;
        existing.via = 'response_url';
        existing.replaced += 1;
        return;
      }
    }
    pushUserMessage(user, { text: text ?? '', blocks, via, replaced: 0, responseId, channel });
  }

  // ---- faults ---------------------------------------------------------------
  function takeFault(method: string): SlackFault | undefined {
    const f = faults.get(method);
    if (!f) return undefined;
    f.remaining -= 1;
    if (f.remaining <= 0) faults.delete(method);
    return f;
  }

  function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
    const isText = typeof body === 'string';
    res.writeHead(status, {
      'content-type': isText ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8',
      ...headers,
    });
    res.end(isText ? body : JSON.stringify(body));
  }

  /** Web API methods answered this many ms late (set by setDelay). */
  const delays = new Map<string, number>();

  /** Requests held by a `hang` fault, until releaseHanging() or close(). */
  const hanging = new Set<{ res: ServerResponse; record: (status: number, response: unknown) => void }>();

  /** Applies a fault: returns true when the response was sent. */
  function applyFault(method: string, res: ServerResponse, record: (status: number, response: unknown) => void): boolean {
    const fault = takeFault(method);
    if (!fault) return false;
    if ('error' in fault) {
      const body = { ok: false, error: fault.error };
      record(200, body);
      send(res, 200, body);
    } else if ('ratelimited' in fault) {
      const body = { ok: false, error: 'ratelimited' };
      record(429, body);
      send(res, 429, body, { 'retry-after': String(fault.ratelimited) });
    } else if ('hang' in fault) {
      record(0, 'hanging');
      hanging.add({ res, record });
    } else {
      record(fault.status, fault.body ?? '');
      send(res, fault.status, fault.body ?? '');
    }
    return true;
  }

  // ---- routing --------------------------------------------------------------
  async function handle(req: IncomingMessage, res: ServerResponse) {
    const path = new URL(req.url ?? '/', url).pathname;
    if (req.method === 'POST' && path.startsWith('/api/')) return handleApi(path.slice(5), req, res);
    if (req.method === 'POST' && path.startsWith('/upload/')) return handleUpload(path.slice(8), req, res);
    if (req.method === 'POST' && path.startsWith('/response/')) return handleResponseUrl(path.slice(10), req, res);
    send(res, 404, 'not found');
  }

  async function parseParams(req: IncomingMessage, raw: Buffer): Promise<Record<string, unknown>> {
    const type = mediaType(req.headers['content-type']);
    if (type === 'application/json') {
      const parsed: unknown = raw.length ? JSON.parse(raw.toString('utf8')) : {};
      return parsed && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : {};
    }
    if (type === 'application/x-www-form-urlencoded' || type === '') {
      return Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
    }
    if (type === 'multipart/form-data') {
      const form = await new Request('http://standin/', {
        method: 'POST',
        headers: { 'content-type': req.headers['content-type']! },
        body: raw,
      }).formData();
      const out: Record<string, unknown> = {};
      for (const [k, v] of form.entries()) out[k] = typeof v === 'string' ? v : Buffer.from(await v.arrayBuffer());
      return out;
    }
    throw new Error(`unsupported content type ${type}`);
  }

  function tokenOf(req: IncomingMessage, params: Record<string, unknown>): string | undefined {
    const auth = req.headers.authorization;
    if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice(7);
    return typeof params.token === 'string' ? params.token : undefined;
  }

  async function handleApi(method: string, req: IncomingMessage, res: ServerResponse) {
    const raw = await readBody(req);
    let params: Record<string, unknown>;
    try {
      params = await parseParams(req, raw);
    } catch (err) {
      send(res, 200, { ok: false, error: 'invalid_form_data', detail: String(err) });
      return;
    }
    const token = tokenOf(req, params);
    // Everything the bot says to Slack goes through the suite-wide secret scan (the
    // credential field itself excepted: Slack is where the token belongs).
    const { token: _credential, ...said } = params;
    recordOutput(
      `slack ${method}`,
      JSON.stringify(said, (_k, v: unknown) => (Buffer.isBuffer(v) ? `<${v.length} bytes>` : v)),
    );
    const { record } = logCall(method, params, req, token);
    const reply = (body: Record<string, unknown>) => {
      record(200, body);
      send(res, 200, body);
    };

    // Authentication first, as Slack does.
    if (token === undefined || token === '') return reply({ ok: false, error: 'not_authed' });
    if (method === 'apps.connections.open') {
      if (token !== appToken) return reply({ ok: false, error: token.startsWith('xapp-') ? 'invalid_auth' : 'not_allowed_token_type' });
    } else if (token !== botToken) {
      return reply({ ok: false, error: 'invalid_auth' });
    }
    const delayMs = delays.get(method);
    if (delayMs) await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (applyFault(method, res, record)) return;

    const str = (k: string) => (typeof params[k] === 'string' ? (params[k] as string) : undefined);
    const channelCheck = (ch: string | undefined): string | undefined => {
      if (!ch) return 'channel_not_found';
      const c = channels.get(ch);
      if (!c) return 'channel_not_found';
      if (!c.member) return 'not_in_channel';
      return undefined;
    };

    switch (method) {
      case 'auth.test':
        return reply({
          ok: true,
          url: 'https://standin.slack.test/',
          team: 'Stand-in',
          user: 'fairbot',
          team_id: teamId,
          user_id: botUserId,
          bot_id: botId,
          is_enterprise_install: false,
        });
      case 'chat.postMessage': {
        const channel = str('channel');
        const err = channelCheck(channel);
        if (err) return reply({ ok: false, error: err });
        if (!str('text') && !params.blocks) return reply({ ok: false, error: 'no_text' });
        const post: ChannelPost = { channel: channel!, ts: nextTs(), text: str('text'), blocks: parseJsonField(params.blocks) };
        posts.push(post);
        return reply({ ok: true, channel, ts: post.ts, message: { type: 'message', text: post.text, bot_id: botId, ts: post.ts } });
      }
      case 'chat.update': {
        const channel = str('channel');
        const err = channelCheck(channel);
        if (err) return reply({ ok: false, error: err });
        const post = posts.find((p) => p.channel === channel && p.ts === str('ts'));
        if (!post) return reply({ ok: false, error: 'message_not_found' });
        post.text = str('text') ?? post.text;
        if (params.blocks !== undefined) post.blocks = parseJsonField(params.blocks);
        post.edited = true;
        return reply({ ok: true, channel, ts: post.ts, text: post.text });
      }
      case 'chat.postEphemeral': {
        const channel = str('channel');
        const user = str('user');
        const err = channelCheck(channel);
        if (err) return reply({ ok: false, error: err });
        if (!user) return reply({ ok: false, error: 'user_not_found' });
        if (!str('text') && !params.blocks) return reply({ ok: false, error: 'no_text' });
        const blocks = params.blocks === undefined ? undefined : parseJsonField(params.blocks);
        ephemerals.push({ channel: channel!, user, text: str('text'), blocks, at: Date.now() });
        pushUserMessage(user, { text: str('text') ?? '', blocks, via: 'ephemeral', replaced: 0, channel: channel! });
        return reply({ ok: true, message_ts: nextTs() });
      }
      case 'files.getUploadURLExternal': {
        const filename = str('filename');
        const length = Number(params.length);
        if (!filename) return reply({ ok: false, error: 'invalid_arguments', detail: 'filename is required' });
        if (!Number.isInteger(length) || length <= 0) return reply({ ok: false, error: 'invalid_arguments', detail: 'length is required' });
        // Stricter than Slack, which ignores what it does not know: an argument outside the
        // documented ones (a misspelt `alt_text` for `alt_txt`) would be silently lost there.
        const unknown = Object.keys(params).filter((k) => !UPLOAD_URL_ARGUMENTS.has(k));
        if (unknown.length > 0)
          return reply({ ok: false, error: 'invalid_arguments', detail: `not an argument of files.getUploadURLExternal: ${unknown.join(', ')}` });
        const altText = str('alt_txt');
        if (altText !== undefined && [...altText].length > 1000) return reply({ ok: false, error: 'alt_txt_too_large' });
        const fileId = `F${randomBytes(5).toString('hex').toUpperCase()}`;
        pendingUploads.set(fileId, { filename, length, altText, uploaded: false });
        return reply({ ok: true, upload_url: `${url}/upload/${fileId}`, file_id: fileId });
      }
      case 'files.completeUploadExternal': {
        const files = parseJsonField(params.files);
        if (!Array.isArray(files) || files.length === 0) return reply({ ok: false, error: 'invalid_arguments', detail: 'files is required' });
        const channel = str('channel_id') ?? str('channels');
        if (channel !== undefined) {
          const err = channelCheck(channel);
          if (err) return reply({ ok: false, error: err });
        }
        const shared: SharedFile[] = [];
        for (const f of files as Array<{ id?: string; title?: string }>) {
          const pending = f.id ? pendingUploads.get(f.id) : undefined;
          const bytes = f.id ? uploads.get(f.id) : undefined;
          if (!pending || !bytes) return reply({ ok: false, error: 'file_not_found', detail: `no upload for ${f.id}` });
          shared.push({ id: f.id!, title: f.title, filename: pending.filename, altText: pending.altText, bytes });
        }
        if (channel !== undefined) {
          fileShares.push({
            channel,
            initialComment: str('initial_comment'),
            blocks: params.blocks === undefined ? undefined : parseJsonField(params.blocks),
            threadTs: str('thread_ts'),
            files: shared,
            at: Date.now(),
          });
        }
        return reply({ ok: true, files: shared.map((f) => ({ id: f.id, title: f.title, name: f.filename, size: f.bytes.length })) });
      }
      case 'apps.connections.open':
        return reply({ ok: true, url: `ws://127.0.0.1:${port}/link/?ticket=${randomBytes(8).toString('hex')}&app_id=${appId}` });
      default:
        return reply({ ok: false, error: 'unknown_method' });
    }
  }

  /** Records a call as it arrives; `record` fills in the answer once there is one. */
  function logCall(method: string, params: ApiCall['params'], req: IncomingMessage, token: ApiCall['token']) {
    const call: ApiCall = { method, params, contentType: String(req.headers['content-type'] ?? ''), token, at: Date.now(), status: 0, response: undefined };
    calls.push(call);
    const record = (status: number, response: unknown) => {
      call.status = status;
      call.response = response;
      changed();
    };
    return { call, record };
  }

  async function handleUpload(fileId: string, req: IncomingMessage, res: ServerResponse) {
    const raw = await readBody(req);
    const { call, record } = logCall('upload', { file_id: fileId }, req, tokenOf(req, {}));
    const pending = pendingUploads.get(fileId);
    if (!pending) {
      record(404, 'unknown upload');
      return send(res, 404, 'unknown upload');
    }
    if (applyFault('upload', res, record)) return;
    // The SDK sends multipart/form-data with one file part; a raw body is accepted too.
    let bytes: Buffer = raw;
    if (mediaType(req.headers['content-type']) === 'multipart/form-data') {
      const params = await parseParams(req, raw);
      call.params = { file_id: fileId, fields: Object.keys(params) };
      const file = Object.values(params).find((v): v is Buffer => Buffer.isBuffer(v));
      if (!file) {
        record(400, 'no file part');
        return send(res, 400, 'no file part');
      }
      bytes = file;
    }
    if (bytes.length !== pending.length) {
      const msg = `length mismatch: declared ${pending.length}, received ${bytes.length}`;
      record(400, msg);
      return send(res, 400, msg);
    }
    pending.uploaded = true;
    uploads.set(fileId, bytes);
    record(200, `OK - ${bytes.length}`);
    send(res, 200, `OK - ${bytes.length}`);
  }

  async function handleResponseUrl(id: string, req: IncomingMessage, res: ServerResponse) {
    const raw = await readBody(req);
    const state = responseUrls.get(id);
    let body: Record<string, unknown> = {};
    try {
      body = await parseParams(req, raw);
    } catch {
      body = { raw: raw.toString('utf8') };
    }
    recordOutput('slack response_url', raw.toString('utf8'));
    const post: ResponseUrlPost = { id, url: `${url}/response/${id}`, body, accepted: false, status: 0, at: Date.now() };
    responseUrlPosts.push(post);
    const calls0: ApiCall = {
      method: 'response_url',
      params: body,
      contentType: String(req.headers['content-type'] ?? ''),
      at: post.at,
      status: 0,
      response: undefined,
    };
    calls.push(calls0);
    const refuse = (status: number, error: string) => {
      post.status = status;
      post.error = error;
      calls0.status = status;
      calls0.response = error;
      changed();
      send(res, status, error);
    };
    if (!state) return refuse(404, 'no_such_url');
    if (state.expired || Date.now() - state.createdAt > state.ttlMs) return refuse(404, 'expired_url');
    if (state.posts >= state.maxPosts) return refuse(404, 'used_url');
    const fault = takeFault('response_url');
    if (fault) {
      state.posts += 1;
      if ('error' in fault) return refuse(404, fault.error);
      if ('ratelimited' in fault) return refuse(429, 'rate_limited');
      if ('hang' in fault) return;
      return refuse(fault.status, fault.body ?? 'fault');
    }
    const reused = state.userId ? reusedBlockIds(state.userId, body, id) : [];
    if (reused.length > 0) return refuse(400, `invalid_blocks: block_id ${reused.join(', ')} reused by replace_original`);
    state.posts += 1;
    post.accepted = true;
    post.status = 200;
    calls0.status = 200;
    calls0.response = 'ok';
    if (state.userId) showAnswer(state.userId, state.channelId ?? channelId, body, 'response_url', id);
    changed();
    send(res, 200, 'ok');
  }

  // ---- Socket Mode ------------------------------------------------------------
  server.on('upgrade', (req, socket, head) => {
    const path = new URL(req.url ?? '/', url).pathname;
    if (!path.startsWith('/link')) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      socketConnections += 1;
      ws.on('close', () => {
        sockets.delete(ws);
        changed();
      });
      ws.on('error', () => sockets.delete(ws));
      ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        let msg: { envelope_id?: string; payload?: unknown };
        try {
          msg = JSON.parse(data.toString()) as typeof msg;
        } catch {
          return;
        }
        if (msg.envelope_id) ackWaiters.get(msg.envelope_id)?.(msg.payload);
      });
      ws.send(
        JSON.stringify({
          type: 'hello',
          num_connections: sockets.size,
          debug_info: { host: 'slack-standin', build_number: 1, approximate_connection_time: 3600 },
          connection_info: { app_id: appId },
        }),
      );
      changed();
    });
  });

  // ---- helpers ------------------------------------------------------------------
  function waitFor<T>(pred: () => T | undefined | null | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = (): boolean => {
        let v: T | undefined | null | false;
        try {
          v = pred();
        } catch (err) {
          cleanup();
          reject(err as Error);
          return true;
        }
        if (v) {
          cleanup();
          resolve(v);
          return true;
        }
        return false;
      };
      const onChange = () => void check();
      // Predicates may also read state outside the stand-in (the app's logs, the Fair
      // stand-in): re-check now and then too, still bounded by the deadline.
      const poll = setInterval(onChange, 25);
      const timer = setTimeout(() => {
        cleanup();
        const recent = calls
          .slice(-15)
          .map((c) => `${c.method} -> ${c.status} ${typeof c.response === 'string' ? c.response : JSON.stringify(c.response)}`)
          .join('\n  ');
        reject(new Error(`slack stand-in: timed out after ${timeoutMs} ms waiting for ${what}; recent calls:\n  ${recent}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        clearInterval(poll);
        changes.off('change', onChange);
      };
      changes.on('change', onChange);
      check();
    });
  }

  function newResponseUrl(o: { userId?: string; channelId?: string; ttlMs?: number; maxPosts?: number; source?: ResponseUrlState['source'] } = {}): string {
    const id = randomBytes(8).toString('hex');
    const u = `${url}/response/${id}`;
    responseUrls.set(id, {
      id,
      url: u,
      userId: o.userId,
      channelId: o.channelId,
      createdAt: Date.now(),
      ttlMs: o.ttlMs ?? ttlDefault,
      maxPosts: o.maxPosts ?? maxPostsDefault,
      posts: 0,
      expired: false,
      source: o.source,
    });
    return u;
  }

  function commandFields(fields: SlashCommandFields): Record<string, string> {
    const channel = fields.channel_id ?? channelId;
    const responseUrl = fields.response_url ?? newResponseUrl({ userId: fields.user_id, channelId: channel });
    const all: Record<string, string | undefined> = {
      token: 'deprecated-verification-token',
      team_id: teamId,
      team_domain: 'standin',
      channel_id: channel,
      channel_name: 'general',
      user_name: fields.user_id.toLowerCase(),
      api_app_id: appId,
      is_enterprise_install: 'false',
      response_url: responseUrl,
      trigger_id: `${Date.now()}.${randomBytes(4).toString('hex')}`,
      ...fields,
      text: fields.text ?? '',
    };
    all.channel_id = channel;
    all.response_url = responseUrl;
    return Object.fromEntries(Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined));
  }

  function sign(body: string, timestamp: number, secret = signingSecret): string {
    return `v0=${createHmac('sha256', secret).update(`v0:${timestamp}:${body}`).digest('hex')}`;
  }

  /**
   * POSTs a signed request to the app as Slack does. undici's request rather than fetch: in
   * the bench this runs on the event loop the bot shares, and fetch's web streams would put
   * ~0.2 ms of the stand-in's own work into each job's time.
   */
  async function postSigned(target: URL, body: string, timestamp: number, signature: string, contentType?: string): Promise<{ status: number; text: string }> {
    const res = await request(target, {
      method: 'POST',
      headers: {
        // Exactly this: Bolt does not parse the body with a charset suffix.
        'content-type': contentType ?? 'application/x-www-form-urlencoded',
        'x-slack-request-timestamp': String(timestamp),
        'x-slack-signature': signature,
        'user-agent': 'Slackbot 1.0 (+https://api.slack.com/robots)',
      },
      body,
    });
    return { status: res.statusCode, text: await res.body.text() };
  }

  async function sendSlashCommand(
    appUrl: string,
    fields: SlashCommandFields,
    o: { timestamp?: number; badSignature?: boolean; contentType?: string } = {},
  ): Promise<SlashCommandResult> {
    const target = new URL(appUrl);
    if (target.pathname === '/' || target.pathname === '') target.pathname = '/slack/events';
    const form = commandFields(fields);
    const body = new URLSearchParams(form).toString();
    const timestamp = o.timestamp ?? Math.floor(Date.now() / 1000);
    const signature = o.badSignature ? sign(body, timestamp, `${signingSecret}-wrong`) : sign(body, timestamp);
    const started = performance.now();
    const { status, text } = await postSigned(target, body, timestamp, signature, o.contentType);
    const ackMs = performance.now() - started;
    recordOutput('slack command ack', text);
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    const payload = json ?? (text || undefined);
    if (status === 200) {
      acks.push({ via: 'http', user: form.user_id!, channel: form.channel_id!, command: form.command!, payload, at: Date.now() });
      if (payload !== undefined) showAnswer(form.user_id!, form.channel_id!, payload, 'ack', idOf(form.response_url!));
      changed();
    }
    return { status, body: text, json, text: textOf(payload), ackMs, responseUrl: form.response_url! };
  }

  const idOf = (responseUrl: string) => responseUrl.slice(responseUrl.lastIndexOf('/') + 1);

  async function waitForSocket(timeoutMs = 10_000): Promise<void> {
    await waitFor(() => sockets.size > 0, timeoutMs, 'a Socket Mode connection');
  }

  /** Sends one Socket Mode envelope and waits (with a deadline) for the app's ack. */
  async function sendEnvelope(
    type: string,
    payload: unknown,
    acceptsResponsePayload: boolean,
    ackTimeoutMs = socketAckTimeout,
  ): Promise<{ envelopeId: string; payload: unknown; ackMs: number }> {
    await waitForSocket();
    const ws = [...sockets][0]!;
    const envelopeId = `${randomBytes(4).toString('hex')}-${randomBytes(2).toString('hex')}-${randomBytes(6).toString('hex')}`;
    const started = performance.now();
    const acked = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        ackWaiters.delete(envelopeId);
        reject(new Error(`slack stand-in: no ack for envelope ${envelopeId} within ${ackTimeoutMs} ms`));
      }, ackTimeoutMs);
      ackWaiters.set(envelopeId, (p) => {
        clearTimeout(timer);
        ackWaiters.delete(envelopeId);
        resolve(p);
      });
      ws.send(JSON.stringify({ envelope_id: envelopeId, type, payload, accepts_response_payload: acceptsResponsePayload }));
    });
    return { envelopeId, payload: acked, ackMs: performance.now() - started };
  }

  // ---- button clicks (block_actions) ----------------------------------------------
  const isChannelPost = (m: VisibleMessage | ChannelPost): m is ChannelPost => 'ts' in m && !('via' in m);

  function blockActionPayload(i: BlockActionInput): { payload: Record<string, unknown>; responseUrl: string } {
    const m = i.message;
    let channel = i.channel_id ?? channelId;
    let container: Record<string, unknown> = { type: 'message', channel_id: channel, is_ephemeral: false };
    let message: Record<string, unknown> | undefined;
    let source: ResponseUrlState['source'];
    if (m && isChannelPost(m)) {
      channel = m.channel;
      container = { type: 'message', message_ts: m.ts, channel_id: channel, is_ephemeral: false };
      // Slack sends the clicked message along, except for ephemeral ones.
      message = { type: 'message', ts: m.ts, text: m.text, blocks: m.blocks, user: botUserId, bot_id: botId };
      source = { kind: 'channel', channel, ts: m.ts };
    } else if (m) {
      const owner = [...userMessages.entries()].find(([, list]) => list.some((x) => x.id === m.id));
      const stored = owner?.[1].find((x) => x.id === m.id);
      if (stored) {
        channel = stored.channel;
        container = { type: 'message', message_ts: stored.ts, channel_id: channel, is_ephemeral: true };
        source = { kind: 'user', user: owner![0], messageId: stored.id };
      }
    }
    const button = buttonsIn(m?.blocks).find((b) => b.action_id === i.action_id);
    const responseUrl = i.response_url ?? newResponseUrl({ userId: i.user_id, channelId: channel, source });
    const payload: Record<string, unknown> = {
      type: 'block_actions',
      user: { id: i.user_id, username: i.user_id.toLowerCase(), name: i.user_id.toLowerCase(), team_id: teamId },
      api_app_id: appId,
      token: 'deprecated-verification-token',
      container,
      trigger_id: `${Date.now()}.${randomBytes(4).toString('hex')}`,
      team: { id: teamId, domain: 'standin' },
      enterprise: null,
      is_enterprise_install: false,
      channel: { id: channel, name: 'general' },
      ...(message ? { message } : {}),
      state: { values: {} },
      response_url: responseUrl,
      actions: [
        {
          type: 'button',
          action_id: i.action_id,
          block_id: button?.block_id ?? randomBytes(3).toString('hex'),
          text: { type: 'plain_text', text: button?.text ?? i.action_id, emoji: true },
          value: i.value ?? button?.value,
          ...(button?.style ? { style: button.style } : {}),
          action_ts: `${Date.now() / 1000}`,
        },
      ],
    };
    return { payload, responseUrl };
  }

  async function sendBlockAction(appUrl: string, input: BlockActionInput, o: { timestamp?: number; badSignature?: boolean } = {}): Promise<BlockActionResult> {
    const target = new URL(appUrl);
    if (target.pathname === '/' || target.pathname === '') target.pathname = '/slack/events';
    const { payload, responseUrl } = blockActionPayload(input);
    const body = new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
    const timestamp = o.timestamp ?? Math.floor(Date.now() / 1000);
    const signature = o.badSignature ? sign(body, timestamp, `${signingSecret}-wrong`) : sign(body, timestamp);
    const started = performance.now();
    const { status, text } = await postSigned(target, body, timestamp, signature);
    recordOutput('slack action ack', text);
    changed();
    return { status, body: text, ackMs: performance.now() - started, responseUrl };
  }

  async function sendSocketBlockAction(
    input: BlockActionInput,
    o: { ackTimeoutMs?: number } = {},
  ): Promise<{ envelopeId: string; ackMs: number; responseUrl: string }> {
    const { payload, responseUrl } = blockActionPayload(input);
    const sent = await sendEnvelope('interactive', payload, false, o.ackTimeoutMs);
    recordOutput('slack socket ack', JSON.stringify(sent.payload ?? null));
    changed();
    return { envelopeId: sent.envelopeId, ackMs: sent.ackMs, responseUrl };
  }

  async function click(target: string, userId: string, message: VisibleMessage | ChannelPost | undefined, actionId: string) {
    const button = buttonsIn(message?.blocks).find((b) => b.action_id === actionId);
    if (!message || !button) {
      throw new Error(`slack stand-in: no button ${actionId} to click in ${JSON.stringify(message?.blocks ?? message?.text ?? null)}`);
    }
    const input: BlockActionInput = { user_id: userId, action_id: actionId, value: button.value, message };
    return target === 'socket' ? sendSocketBlockAction(input) : sendBlockAction(target, input);
  }

  async function sendSocketCommand(fields: SlashCommandFields, o: { ackTimeoutMs?: number } = {}): Promise<SocketCommandResult> {
    const form = commandFields(fields);
    const sent = await sendEnvelope('slash_commands', form, true, o.ackTimeoutMs);
    const { envelopeId, payload, ackMs } = sent;
    recordOutput('slack socket ack', JSON.stringify(payload ?? null));
    const shown = payload && typeof payload === 'object' && Object.keys(payload).length === 0 ? undefined : payload;
    acks.push({ via: 'socket', user: form.user_id!, channel: form.channel_id!, command: form.command!, payload: shown, at: Date.now() });
    if (shown !== undefined) showAnswer(form.user_id!, form.channel_id!, shown, 'ack', idOf(form.response_url!));
    changed();
    return { envelopeId, payload: shown, text: textOf(shown), ackMs, responseUrl: form.response_url! };
  }

  return {
    url,
    apiUrl,
    botToken,
    appToken,
    signingSecret,
    teamId,
    botUserId,
    botId,
    channelId,
    calls,
    uploads,
    fileShares,
    setDelay(method, delayMs) {
      if (delayMs === undefined) delays.delete(method);
      else delays.set(method, delayMs);
    },
    releaseHanging(status) {
      for (const held of hanging) {
        held.record(status, 'released');
        if (!held.res.destroyed) send(held.res, status, 'released');
      }
      hanging.clear();
      changed();
    },
    releaseFiles() {
      const none = Buffer.alloc(0);
      for (const id of uploads.keys()) uploads.set(id, none);
      for (const share of fileShares) for (const f of share.files) f.bytes = none;
    },
    posts,
    ephemerals,
    responseUrlPosts,
    acks,
    get socketConnections() {
      return socketConnections;
    },
    userView: (userId) =>
      (userMessages.get(userId) ?? []).map(({ id, text, blocks, via, replaced }) => ({ id, text, via, replaced, ...(blocks === undefined ? {} : { blocks }) })),
    buttons: (message) => buttonsIn(message?.blocks),
    sendBlockAction,
    sendSocketBlockAction,
    click,
    channelFiles: (ch = channelId) => fileShares.filter((s) => s.channel === ch),
    callsTo: (method) => calls.filter((c) => c.method === method),
    addChannel: (id, o) => void channels.set(id, o),
    newResponseUrl,
    openSockets: () => sockets.size,
    disconnectSockets: (reason = 'refresh_requested') => {
      for (const ws of sockets) ws.send(JSON.stringify({ type: 'disconnect', reason, debug_info: { host: 'slack-standin' } }));
    },
    expireResponseUrl: (u) => {
      const s = responseUrls.get(idOf(u));
      if (s) s.expired = true;
    },
    sign,
    sendSlashCommand,
    waitForSocket,
    sendSocketCommand,
    waitFor,
    setFault: (method, fault) => {
      if (fault === undefined) faults.delete(method);
      else faults.set(method, { ...fault, remaining: fault.times ?? Number.POSITIVE_INFINITY });
    },
    close: async () => {
      for (const ws of sockets) ws.terminate();
      wss.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
