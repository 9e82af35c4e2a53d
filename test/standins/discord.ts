/**
 * A Discord stand-in: a real HTTP server (REST API v10) and a real WebSocket
 * gateway on 127.0.0.1, enough for the real discord.js client to log in, become
 * ready, receive interactions and answer them.
 *
 * Point discord.js at it with `new Client({ rest: { api: standin.apiUrl } })`
 * (or `DISCORD_API_URL=standin.apiUrl`): discord.js discovers the gateway via
 * `GET /v10/gateway/bot` on that REST base, exactly as it does with Discord.
 *
 * It records what a user would see (interaction callbacks, webhook edits and
 * follow-ups, channel messages, with attachment bytes kept exactly) and
 * enforces the platform rules that shape the bot's design:
 *   - the first callback must arrive within `ackDeadlineMs` (3 s) of dispatch,
 *     else 404 10062 "Unknown interaction";
 *   - a second callback is 400 40060 "Interaction has already been acknowledged.";
 *   - webhook calls with an interaction token older than `tokenLifetimeMs`
 *     (15 min), or for an interaction never acknowledged, are 401 50027
 *     "Invalid Webhook Token";
 *   - an attachment over `uploadLimitBytes` (10 MiB) is 413 40005
 *     "Request entity too large";
 *   - bot-auth routes need `Authorization: Bot <token>` (else 401);
 *   - message content over 2000 characters is 400 50035, an empty message 400 50006;
 *   - components (action rows of buttons) and embeds are checked against Discord's
 *     limits (400 50035), kept on the message and sent back with it; a click
 *     (component interaction, type 3) can only be dispatched on a button the
 *     message carries, by a user who can see the message (ephemeral: its owner);
 *     after a type 6/7 callback, `@original` of the click is the clicked message.
 *
 * Every JSON body the bot sends is recorded for the suite-wide secret scan, and
 * the bot and interaction tokens are registered as secrets.
 */
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import busboy from 'busboy';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import { recordOutput, registerSecret } from '../helpers/secret-scan.js';

// ---------------------------------------------------------------------------
// Public types

export interface DiscordStandinOptions {
  /** Bot token the stand-in accepts (REST `Authorization: Bot …` and gateway IDENTIFY). */
  token?: string;
  applicationId?: string;
  guildId?: string;
  channelId?: string;
  botUsername?: string;
  /** The first interaction callback must arrive within this long of dispatch. Default 3000. */
  ackDeadlineMs?: number;
  /** Interaction tokens (webhook edits, follow-ups) work for this long after dispatch. Default 15 min. */
  tokenLifetimeMs?: number;
  /** Largest attachment accepted (and `attachment_size_limit` in interactions). Default 10 MiB. */
  uploadLimitBytes?: number;
  /** `attachment_size_limit` sent in interactions, when it should differ from what is enforced. */
  advertisedUploadLimitBytes?: number;
  /** HELLO heartbeat_interval. Default 41250 (Discord's). */
  heartbeatIntervalMs?: number;
}

export interface UploadedFile {
  /** Form field name, e.g. `files[0]`. */
  field: string;
  filename: string;
  contentType: string;
  /** The bytes exactly as received. */
  bytes: Buffer;
}

export interface Mentions {
  users: string[];
  roles: string[];
  everyone: boolean;
}

export interface StandinAttachment {
  id: string;
  filename: string;
  contentType: string;
  size: number;
  bytes: Buffer;
}

/** One message as a Discord user would see it (latest state). */
export interface StandinMessage {
  id: string;
  channelId: string;
  content: string;
  attachments: StandinAttachment[];
  flags: number;
  ephemeral: boolean;
  /** The interaction this message answers, if any. */
  interactionId?: string;
  /** How it was created: an interaction response, a webhook follow-up, or a channel message (bot token). */
  source: 'interaction' | 'followup' | 'channel';
  /** Who is actually pinged, after applying allowed_mentions to the content. */
  mentions: Mentions;
  /** Message components (action rows), as last sent. */
  components: Record<string, unknown>[];
  /** Embeds, as last sent. */
  embeds: Record<string, unknown>[];
  allowedMentions: unknown;
  /** True while it is a deferred "thinking…" placeholder. */
  loading: boolean;
  deleted: boolean;
  edits: number;
  createdAt: number;
  updatedAt: number;
}

export interface RestCall {
  method: string;
  path: string;
  query: URLSearchParams;
  at: number;
  /** Parsed JSON body (or payload_json of a multipart body). */
  body: unknown;
  files: UploadedFile[];
  status: number;
  /** Discord error code when the stand-in refused the call. */
  errorCode?: number;
  errorMessage?: string;
}

export interface CallbackRecord extends RestCall {
  interactionId: string;
  token: string;
  /** Callback type (4 reply, 5 deferred, 6 deferred update, 7 update, …). */
  type: number | undefined;
  /** Milliseconds between dispatch and the callback's arrival. */
  latencyMs: number;
}

export interface WebhookRecord extends RestCall {
  applicationId: string;
  token: string;
  /** `@original`, a message id, or undefined for a follow-up POST. */
  messageId?: string;
  interactionId?: string;
}

export interface ChannelMessageRecord extends RestCall {
  channelId: string;
  authorization: string | undefined;
}

export interface CommandRegistration {
  scope: 'global' | 'guild';
  guildId?: string;
  at: number;
  body: unknown;
}

export interface GatewayRecord {
  at: number;
  kind: 'connect' | 'identify' | 'resume' | 'resume-failed' | 'close' | 'refused';
  code?: number;
  sessionId?: string;
}

export type InteractionOptionValue = string | number | boolean;

export interface CommandInteractionInput {
  type?: 'command';
  name: string;
  /** Options of the command (or of the subcommand when `subcommand` is set). */
  options?: Record<string, InteractionOptionValue>;
  subcommand?: string;
  /** Raw `data.options`, used instead of `options`/`subcommand` when given. */
  rawOptions?: unknown[];
  userId?: string;
  userName?: string;
  globalName?: string;
  channelId?: string;
  /** Member permissions bitfield (string). Default: Send Messages etc., not Administrator. */
  permissions?: string;
  locale?: string;
}

export interface ComponentInteractionInput {
  type: 'component';
  customId: string;
  /**
   * Click a custom_id the message does not carry (e.g. a button an older bot version
   * sent). Without it, the stand-in refuses to dispatch a click on a button that is
   * not on the message, or is disabled, as Discord's client would never send one.
   */
  unlisted?: boolean;
  /** Component type, default 2 (button). */
  componentType?: number;
  values?: string[];
  /** The message the component is on (id of a recorded message). */
  messageId: string;
  userId?: string;
  userName?: string;
  channelId?: string;
  permissions?: string;
}

export type InteractionInput = CommandInteractionInput | ComponentInteractionInput;

export interface DispatchedInteraction {
  id: string;
  token: string;
  payload: Record<string, unknown>;
}

export interface DiscordStandin {
  /** Value for discord.js `rest.api` / `DISCORD_API_URL`. */
  apiUrl: string;
  gatewayUrl: string;
  token: string;
  applicationId: string;
  guildId: string;
  channelId: string;
  uploadLimitBytes: number;
  dispatchInteraction(input: InteractionInput): DispatchedInteraction;
  /** Every REST call, in order. */
  requests: RestCall[];
  callbacks: CallbackRecord[];
  webhookMessages: WebhookRecord[];
  channelMessages: ChannelMessageRecord[];
  commandRegistrations: CommandRegistration[];
  gatewayLog: GatewayRecord[];
  /** Messages by id, latest state. */
  messages: Map<string, StandinMessage>;
  /**
   * Drops the bytes of every file received so far (records and sizes stay). For long
   * benchmark runs: a stand-in holding hundreds of MB of images in the bot's process makes
   * V8 collect over and over, which a real Discord, on its own machines, does not cause.
   */
  releaseFiles(): void;
  /** The interaction's original response message (latest state), if any. */
  originalMessage(interactionId: string): StandinMessage | undefined;
  /** Messages posted with the bot token in a channel. */
  channelPosts(channelId?: string): StandinMessage[];
  /** Registered commands, as `GET` would return them. */
  commands(scope: 'global' | 'guild'): Record<string, unknown>[];
  /** Number of live gateway connections that completed IDENTIFY or RESUME. */
  liveSessions(): number;
  /**
   * Resolves with the first truthy value of `pred`, re-checked whenever the
   * stand-in records something; rejects after `timeoutMs` with `what` in the error.
   */
  waitFor<T>(pred: () => T | undefined | null | false, timeoutMs?: number, what?: string | (() => string)): Promise<T>;
  /**
   * Make an interaction `ms` older, as if that much time had passed since its
   * dispatch: past 3 s its callback is refused, past 15 min its token is.
   */
  ageInteraction(interactionId: string, ms: number): void;
  /** Close the live gateway connection(s) with a resumable close code (default 4000). */
  dropGateway(code?: number): void;
  /** While down, gateway connections are refused (HTTP 503 on upgrade) and live ones are cut. */
  setGatewayDown(down: boolean): void;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Helpers

const DISCORD_EPOCH = 1420070400000n;
let snowflakeIncrement = 0n;
/** A real-looking 64-bit snowflake (discord.js's REST bucket logic expects 17–19 digits). */
export function snowflake(at: number = Date.now()): string {
  snowflakeIncrement = (snowflakeIncrement + 1n) & 0xfffn;
  return (((BigInt(at) - DISCORD_EPOCH) << 22n) | (1n << 17n) | snowflakeIncrement).toString();
}

function randomToken(bytes = 48): string {
  return randomBytes(bytes).toString('base64url');
}

class DiscordError extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
    readonly errors?: unknown,
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 64 * 1024 * 1024;
const MESSAGE_CONTENT_MAX = 2000;
const EPHEMERAL = 1 << 6;
const LOADING = 1 << 7;

/** Permissions of an ordinary member: view, send, embed, attach, read history, use commands. */
const MEMBER_PERMISSIONS = ((1n << 10n) | (1n << 11n) | (1n << 14n) | (1n << 15n) | (1n << 16n) | (1n << 31n)).toString();
export const ADMINISTRATOR_PERMISSIONS = ((1n << 3n) | BigInt(MEMBER_PERMISSIONS)).toString();

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new DiscordError(413, 40005, 'Request entity too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

interface ParsedBody {
  json: unknown;
  files: UploadedFile[];
}

/**
 * The request body: JSON, or multipart/form-data (payload_json and files, as discord.js
 * sends uploads) parsed by busboy as the bytes arrive, so a stand-in sharing the event loop
 * with the bot spends little of it on an upload. File bytes are exactly what was sent.
 */
function readParsedBody(req: IncomingMessage): Promise<ParsedBody> {
  const type = req.headers['content-type'] ?? '';
  if (!type.startsWith('multipart/form-data')) {
    return readBody(req).then((raw) => {
      if (raw.length === 0) return { json: undefined, files: [] };
      if (type.startsWith('application/json')) return { json: parseJson(raw.toString('utf8')), files: [] };
      throw new DiscordError(400, 50109, 'The request body contains invalid JSON.');
    });
  }
  return new Promise((resolve, reject) => {
    let json: unknown;
    const files: UploadedFile[] = [];
    let openFiles = 0;
    let parsed = false;
    const settle = () => {
      if (parsed && openFiles === 0) resolve({ json, files });
    };
    const fail = (error: unknown) => {
      reject(error instanceof DiscordError ? error : new DiscordError(400, 50109, `The request body is not valid multipart: ${String(error)}`));
      req.unpipe();
      req.resume();
    };
    let form: busboy.Busboy;
    try {
      form = busboy({ headers: req.headers, defParamCharset: 'utf8', limits: { fieldSize: MAX_BODY_BYTES, fileSize: MAX_BODY_BYTES } });
    } catch (error) {
      return fail(error);
    }
    form.on('field', (field, value) => {
      if (field !== 'payload_json') return;
      try {
        json = parseJson(value);
      } catch (error) {
        fail(error);
      }
    });
    form.on('file', (field, stream, info) => {
      // Kept in the order the parts came (files[0] is the first file part).
      const file: UploadedFile = { field, filename: info.filename, contentType: info.mimeType, bytes: Buffer.alloc(0) };
      files.push(file);
      openFiles++;
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        file.bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        openFiles--;
        settle();
      });
    });
    form.on('close', () => {
      parsed = true;
      settle();
    });
    form.on('error', fail);
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        fail(new DiscordError(413, 40005, 'Request entity too large'));
        req.destroy();
      }
    });
    req.on('error', fail);
    req.pipe(form);
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new DiscordError(400, 50109, 'The request body contains invalid JSON.');
  }
}

function asRecord(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

/** Who a message pings, per Discord's allowed_mentions rules (absent = parse everything). */
function computeMentions(content: string, allowed: unknown): Mentions {
  const userIds = [...content.matchAll(/<@!?(\d{15,21})>/g)].map((m) => m[1]!);
  const roleIds = [...content.matchAll(/<@&(\d{15,21})>/g)].map((m) => m[1]!);
  const everyoneInText = /@(everyone|here)\b/.test(content);
  if (allowed === undefined || allowed === null) {
    return { users: [...new Set(userIds)], roles: [...new Set(roleIds)], everyone: everyoneInText };
  }
  const am = asRecord(allowed);
  const parse = Array.isArray(am.parse) ? (am.parse as unknown[]) : [];
  const users = Array.isArray(am.users) ? (am.users as unknown[]).map(String) : [];
  const roles = Array.isArray(am.roles) ? (am.roles as unknown[]).map(String) : [];
  if ((parse.includes('users') && users.length) || (parse.includes('roles') && roles.length)) {
    throw new DiscordError(400, 50035, 'Invalid Form Body', {
      allowed_mentions: { _errors: [{ code: 'MUTUALLY_EXCLUSIVE', message: 'parse and users/roles are mutually exclusive' }] },
    });
  }
  return {
    users: [...new Set(userIds.filter((id) => parse.includes('users') || users.includes(id)))],
    roles: [...new Set(roleIds.filter((id) => parse.includes('roles') || roles.includes(id)))],
    everyone: everyoneInText && parse.includes('everyone'),
  };
}

/** A button as a user sees it under a message. */
export interface StandinButton {
  customId?: string;
  label?: string;
  style: number;
  disabled: boolean;
  url?: string;
}

/** The buttons of a message, row by row flattened, in order. */
export function buttonsOf(message: Pick<StandinMessage, 'components'> | undefined): StandinButton[] {
  if (!message) return [];
  return message.components.flatMap((row) =>
    (Array.isArray(row.components) ? (row.components as Record<string, unknown>[]) : [])
      .filter((c) => c.type === 2)
      .map((c) => ({
        customId: typeof c.custom_id === 'string' ? c.custom_id : undefined,
        label: typeof c.label === 'string' ? c.label : undefined,
        style: Number(c.style),
        disabled: c.disabled === true,
        url: typeof c.url === 'string' ? c.url : undefined,
      })),
  );
}

function formError(path: string, code: string, message: string): DiscordError {
  return new DiscordError(400, 50035, 'Invalid Form Body', { [path]: { _errors: [{ code, message }] } });
}

/** Discord's rules for message components (action rows of buttons and select menus). */
function checkComponents(value: unknown): Record<string, unknown>[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw formError('components', 'LIST_TYPE_CONVERT', 'Must be an array.');
  if (value.length > 5) throw formError('components', 'BASE_TYPE_MAX_LENGTH', 'Must be 5 or fewer in length.');
  const ids = new Set<string>();
  value.forEach((r, i) => {
    const row = asRecord(r);
    if (row.type !== 1) throw formError(`components.${i}.type`, 'COMPONENT_TYPE_INVALID', 'Top-level components must be action rows.');
    const children = row.components;
    if (!Array.isArray(children) || children.length < 1 || children.length > 5) {
      throw formError(`components.${i}.components`, 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 5 in length.');
    }
    children.forEach((c, j) => {
      const child = asRecord(c);
      const at = `components.${i}.components.${j}`;
      if (child.type === 2) {
        const style = child.style;
        if (typeof style !== 'number' || style < 1 || style > 6)
          throw formError(`${at}.style`, 'BASE_TYPE_CHOICES', 'Value must be one of (1, 2, 3, 4, 5, 6).');
        if (typeof child.label === 'string' && child.label.length > 80)
          throw formError(`${at}.label`, 'BASE_TYPE_MAX_LENGTH', 'Must be 80 or fewer in length.');
        if (child.label === undefined && child.emoji === undefined && style !== 6)
          throw formError(`${at}`, 'BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED', 'A label or an emoji is required.');
        if (style === 5) {
          if (typeof child.url !== 'string' || child.custom_id !== undefined)
            throw formError(`${at}.url`, 'BUTTON_COMPONENT_URL_REQUIRED', 'Link buttons need a url and no custom_id.');
          return;
        }
        if (style === 6) return;
      } else if (![3, 5, 6, 7, 8].includes(Number(child.type))) {
        throw formError(`${at}.type`, 'COMPONENT_TYPE_INVALID', 'Action rows hold buttons or select menus.');
      }
      const id = child.custom_id;
      if (typeof id !== 'string' || id.length < 1 || id.length > 100)
        throw formError(`${at}.custom_id`, 'BASE_TYPE_BAD_LENGTH', 'Must be between 1 and 100 in length.');
      if (ids.has(id)) throw formError(`${at}.custom_id`, 'COMPONENT_CUSTOM_ID_DUPLICATED', 'Component custom id cannot be duplicated');
      ids.add(id);
    });
  });
  return value as Record<string, unknown>[];
}

/** Discord's limits on embeds (sizes, a value for every field, 6000 characters in all). */
function checkEmbeds(value: unknown): Record<string, unknown>[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw formError('embeds', 'LIST_TYPE_CONVERT', 'Must be an array.');
  if (value.length > 10) throw formError('embeds', 'BASE_TYPE_MAX_LENGTH', 'Must be 10 or fewer in length.');
  let total = 0;
  const text = (v: unknown, at: string, max: number, required = false): void => {
    if (v === undefined || v === null) {
      if (required) throw formError(at, 'BASE_TYPE_REQUIRED', 'This field is required');
      return;
    }
    if (typeof v !== 'string') throw formError(at, 'STRING_TYPE_CONVERT', 'Could not interpret as string.');
    if (required && v.trim().length === 0) throw formError(at, 'BASE_TYPE_REQUIRED', 'This field is required');
    if (v.length > max) throw formError(at, 'BASE_TYPE_MAX_LENGTH', `Must be ${max} or fewer in length.`);
    total += v.length;
  };
  value.forEach((e, i) => {
    const embed = asRecord(e);
    text(embed.title, `embeds.${i}.title`, 256);
    text(embed.description, `embeds.${i}.description`, 4096);
    text(asRecord(embed.footer).text, `embeds.${i}.footer.text`, 2048);
    text(asRecord(embed.author).name, `embeds.${i}.author.name`, 256);
    if (embed.color !== undefined && (!Number.isInteger(embed.color) || Number(embed.color) < 0 || Number(embed.color) > 0xffffff)) {
      throw formError(`embeds.${i}.color`, 'NUMBER_TYPE_MAX', 'int value should be less than or equal to 16777215.');
    }
    if (embed.timestamp !== undefined && Number.isNaN(Date.parse(String(embed.timestamp)))) {
      throw formError(`embeds.${i}.timestamp`, 'DATE_TIME_TYPE_PARSE', 'Could not parse the timestamp.');
    }
    const fields = embed.fields ?? [];
    if (!Array.isArray(fields) || fields.length > 25) throw formError(`embeds.${i}.fields`, 'BASE_TYPE_MAX_LENGTH', 'Must be 25 or fewer in length.');
    fields.forEach((f, j) => {
      const field = asRecord(f);
      text(field.name, `embeds.${i}.fields.${j}.name`, 256, true);
      text(field.value, `embeds.${i}.fields.${j}.value`, 1024, true);
    });
  });
  if (total > 6000) throw formError('embeds', 'MAX_EMBED_SIZE_EXCEEDED', 'Embed size exceeds maximum size of 6000');
  return value as Record<string, unknown>[];
}

// ---------------------------------------------------------------------------
// The stand-in

interface InteractionState {
  id: string;
  token: string;
  dispatchedAt: number;
  payload: Record<string, unknown>;
  acknowledged: boolean;
  originalMessageId?: string;
  channelId: string;
}

interface Session {
  id: string;
  seq: number;
  /** Every dispatch of this session (for RESUME replay). */
  sent: { s: number; t: string; d: unknown }[];
  conn: WebSocket | null;
  invalid: boolean;
}

interface Conn {
  ws: WebSocket;
  session: Session | null;
}

export async function startDiscordStandin(opts: DiscordStandinOptions = {}): Promise<DiscordStandin> {
  const token = opts.token ?? `standin.${randomToken(24)}`;
  const applicationId = opts.applicationId ?? snowflake(Date.now() - 86_400_000 * 400);
  const guildId = opts.guildId ?? snowflake(Date.now() - 86_400_000 * 300);
  const channelId = opts.channelId ?? snowflake(Date.now() - 86_400_000 * 200);
  const ownerId = snowflake(Date.now() - 86_400_000 * 500);
  const botUsername = opts.botUsername ?? 'fairbot';
  const ackDeadlineMs = opts.ackDeadlineMs ?? 3000;
  const tokenLifetimeMs = opts.tokenLifetimeMs ?? 15 * 60_000;
  const uploadLimitBytes = opts.uploadLimitBytes ?? 10 * 1024 * 1024;
  const heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 41_250;
  registerSecret(token);

  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  const changed = () => changes.emit('change');

  const requests: RestCall[] = [];
  const callbacks: CallbackRecord[] = [];
  const webhookMessages: WebhookRecord[] = [];
  const channelMessages: ChannelMessageRecord[] = [];
  const commandRegistrations: CommandRegistration[] = [];
  const gatewayLog: GatewayRecord[] = [];
  const messages = new Map<string, StandinMessage>();
  const interactions = new Map<string, InteractionState>();
  const interactionsByToken = new Map<string, InteractionState>();
  const registered = { global: [] as Record<string, unknown>[], guild: [] as Record<string, unknown>[] };
  const sessions = new Map<string, Session>();
  const conns = new Set<Conn>();
  const rawSockets = new Set<Socket>();
  let gatewayDown = false;

  const botUser = {
    id: applicationId,
    username: botUsername,
    global_name: null,
    discriminator: '0',
    avatar: null,
    bot: true,
    system: false,
    mfa_enabled: true,
    verified: true,
    flags: 0,
    public_flags: 0,
  };

  /** A guild text channel as Discord describes it (every channel of the stand-in is "general"). */
  const channelObject = (id: string) => ({
    id,
    type: 0,
    guild_id: guildId,
    name: 'general',
    position: 0,
    parent_id: null,
    topic: null,
    nsfw: false,
    last_message_id: null,
    rate_limit_per_user: 0,
    flags: 0,
  });
  const channelPayload = () => ({ ...channelObject(channelId), permission_overwrites: [] });

  const guildPayload = () => ({
    id: guildId,
    name: 'Stand-in Guild',
    icon: null,
    splash: null,
    discovery_splash: null,
    owner_id: ownerId,
    afk_channel_id: null,
    afk_timeout: 300,
    verification_level: 0,
    default_message_notifications: 1,
    explicit_content_filter: 0,
    roles: [
      {
        id: guildId,
        name: '@everyone',
        color: 0,
        colors: { primary_color: 0, secondary_color: null, tertiary_color: null },
        hoist: false,
        icon: null,
        unicode_emoji: null,
        position: 0,
        permissions: MEMBER_PERMISSIONS,
        managed: false,
        mentionable: false,
        flags: 0,
      },
    ],
    emojis: [],
    stickers: [],
    features: [],
    mfa_level: 0,
    application_id: null,
    system_channel_id: channelId,
    system_channel_flags: 0,
    rules_channel_id: null,
    max_members: 500000,
    vanity_url_code: null,
    description: null,
    banner: null,
    premium_tier: 0,
    premium_subscription_count: 0,
    preferred_locale: 'en-US',
    public_updates_channel_id: null,
    max_video_channel_users: 25,
    max_stage_video_channel_users: 50,
    nsfw_level: 0,
    premium_progress_bar_enabled: false,
    safety_alerts_channel_id: null,
    // GUILD_CREATE extras
    joined_at: new Date(Date.now() - 86_400_000).toISOString(),
    large: false,
    unavailable: false,
    member_count: 3,
    voice_states: [],
    members: [],
    channels: [channelPayload()],
    threads: [],
    presences: [],
    stage_instances: [],
    guild_scheduled_events: [],
    soundboard_sounds: [],
  });

  // -------------------------------------------------------------------------
  // HTTP (REST)

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      // Never let a handler bug kill the test process; answer 500 like an outage would.
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ message: `stand-in error: ${String(error)}`, code: 0 }));
      }
    });
  });
  server.on('connection', (socket) => {
    rawSockets.add(socket);
    socket.on('close', () => rawSockets.delete(socket));
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 4096 * 1024 });
  server.on('upgrade', (req, socket, head) => {
    if (gatewayDown) {
      gatewayLog.push({ at: Date.now(), kind: 'refused' });
      changed();
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => onGatewayConnection(ws, req));
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;
  const apiUrl = `${base}/api`;
  const gatewayUrl = `ws://127.0.0.1:${port}`;
  const resumeGatewayUrl = `ws://127.0.0.1:${port}/resume`;

  function send(res: ServerResponse, status: number, body?: unknown): void {
    if (body === undefined) {
      res.writeHead(status);
      res.end();
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  function requireBot(req: IncomingMessage): void {
    if (req.headers.authorization !== `Bot ${token}`) throw new DiscordError(401, 0, '401: Unauthorized');
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', base);
    const method = (req.method ?? 'GET').toUpperCase();
    const call: RestCall = {
      method,
      path: url.pathname,
      query: url.searchParams,
      at: Date.now(),
      body: undefined,
      files: [],
      status: 0,
    };
    requests.push(call);
    let status = 200;
    let answer: unknown;
    let record: (() => void) | undefined;
    try {
      const parsed = await readParsedBody(req);
      call.body = parsed.json;
      call.files = parsed.files;
      if (parsed.json !== undefined) {
        // The route without the interaction token (it is a secret; the body must not hold it either).
        const where = url.pathname.replace(/\/(webhooks\/\d+|interactions\/\d+)\/[^/]+/, '/$1/:token');
        recordOutput(`discord ${method} ${where}`, JSON.stringify(parsed.json));
      }
      const m = /^\/api\/v10(\/.*)$/.exec(url.pathname);
      if (!m) throw new DiscordError(404, 0, '404: Not Found');
      const route = m[1]!;
      const r = await route_(method, route, req, call, (fn) => (record = fn));
      status = r.status;
      answer = r.body;
    } catch (error) {
      if (!(error instanceof DiscordError)) throw error;
      status = error.status;
      call.errorCode = error.code;
      call.errorMessage = error.message;
      answer = error.errors ? { message: error.message, code: error.code, errors: error.errors } : { message: error.message, code: error.code };
    }
    call.status = status;
    record?.();
    changed();
    send(res, status, answer);
  }

  type Recorder = (fn: () => void) => void;

  async function route_(method: string, route: string, req: IncomingMessage, call: RestCall, onRecord: Recorder): Promise<{ status: number; body?: unknown }> {
    let m: RegExpExecArray | null;

    if (method === 'GET' && route === '/gateway') return { status: 200, body: { url: gatewayUrl } };
    if (method === 'GET' && route === '/gateway/bot') {
      requireBot(req);
      return {
        status: 200,
        body: {
          url: gatewayUrl,
          shards: 1,
          session_start_limit: { total: 1000, remaining: 999, reset_after: 14_400_000, max_concurrency: 1 },
        },
      };
    }
    if (method === 'GET' && route === '/users/@me') {
      requireBot(req);
      return { status: 200, body: botUser };
    }
    if (method === 'GET' && (route === '/applications/@me' || route === '/oauth2/applications/@me')) {
      requireBot(req);
      return {
        status: 200,
        body: {
          id: applicationId,
          name: botUsername,
          icon: null,
          description: '',
          bot_public: true,
          bot_require_code_grant: false,
          flags: 0,
          bot: botUser,
          verify_key: '0'.repeat(64),
          team: null,
        },
      };
    }

    // Application commands
    m = /^\/applications\/(\d+)\/commands$/.exec(route) ?? /^\/applications\/(\d+)\/guilds\/(\d+)\/commands$/.exec(route);
    if (m) {
      requireBot(req);
      const [, app, guild] = m;
      if (app !== applicationId) throw new DiscordError(403, 50001, 'Missing Access');
      if (guild !== undefined && guild !== guildId) throw new DiscordError(403, 50001, 'Missing Access');
      const scope = guild === undefined ? 'global' : 'guild';
      if (method === 'GET') return { status: 200, body: registered[scope] };
      if (method === 'PUT') {
        const stored = storeCommands(scope, call.body);
        onRecord(() => commandRegistrations.push({ scope, guildId: guild, at: call.at, body: call.body }));
        return { status: 200, body: stored };
      }
    }

    // Interaction callback (no bot auth)
    m = /^\/interactions\/(\d+)\/([^/]+)\/callback$/.exec(route);
    if (method === 'POST' && m) {
      return interactionCallback(m[1]!, decodeURIComponent(m[2]!), call, onRecord);
    }

    // Interaction webhooks (no bot auth)
    m = /^\/webhooks\/(\d+)\/([^/]+)(?:\/messages\/([^/]+))?$/.exec(route);
    if (m) {
      return webhook(method, m[1]!, decodeURIComponent(m[2]!), m[3] === undefined ? undefined : decodeURIComponent(m[3]), call, onRecord);
    }

    // Channels (bot auth)
    m = /^\/channels\/(\d+)$/.exec(route);
    if (m && method === 'GET') {
      requireBot(req);
      if (m[1] !== channelId) throw new DiscordError(404, 10003, 'Unknown Channel');
      return { status: 200, body: channelPayload() };
    }
    m = /^\/channels\/(\d+)\/messages$/.exec(route);
    if (m && method === 'POST') {
      requireBot(req);
      const target = m[1]!;
      const rec: ChannelMessageRecord = { ...call, channelId: target, authorization: req.headers.authorization };
      onRecord(() => {
        Object.assign(rec, { status: call.status, errorCode: call.errorCode, errorMessage: call.errorMessage });
        channelMessages.push(rec);
      });
      if (target !== channelId) throw new DiscordError(404, 10003, 'Unknown Channel');
      const msg = createMessage({ channelId: target, source: 'channel', body: call.body, files: call.files, requireContent: true });
      return { status: 200, body: messageJson(msg) };
    }
    m = /^\/guilds\/(\d+)$/.exec(route);
    if (m && method === 'GET') {
      requireBot(req);
      if (m[1] !== guildId) throw new DiscordError(404, 10004, 'Unknown Guild');
      return { status: 200, body: guildPayload() };
    }

    throw new DiscordError(404, 0, '404: Not Found');
  }

  function storeCommands(scope: 'global' | 'guild', body: unknown): Record<string, unknown>[] {
    if (!Array.isArray(body))
      throw new DiscordError(400, 50035, 'Invalid Form Body', { _errors: [{ code: 'LIST_TYPE_CONVERT', message: 'Must be an array' }] });
    const errors: Record<string, unknown> = {};
    body.forEach((c, i) => {
      const cmd = asRecord(c);
      const name = cmd.name;
      const type = cmd.type ?? 1;
      if (typeof name !== 'string' || !/^[-_\p{Ll}\p{Lo}\p{N}]{1,32}$/u.test(name)) errors[`${i}.name`] = 'invalid';
      if (type === 1 && (typeof cmd.description !== 'string' || cmd.description.length < 1 || cmd.description.length > 100)) {
        errors[`${i}.description`] = 'must be 1-100 characters';
      }
      if (cmd.options !== undefined && (!Array.isArray(cmd.options) || cmd.options.length > 25)) errors[`${i}.options`] = 'invalid';
    });
    if (Object.keys(errors).length) throw new DiscordError(400, 50035, 'Invalid Form Body', errors);
    const previous = new Map(registered[scope].map((c) => [c.name, c]));
    registered[scope] = body.map((c) => {
      const cmd = asRecord(c);
      const old = previous.get(cmd.name);
      // What Discord echoes back: the definition plus its defaults.
      return {
        id: (old?.id as string | undefined) ?? snowflake(),
        application_id: applicationId,
        version: snowflake(),
        type: 1,
        default_member_permissions: null,
        nsfw: false,
        integration_types: [0],
        contexts: null,
        ...(scope === 'guild' ? { guild_id: guildId } : { dm_permission: true }),
        ...cmd,
      };
    });
    return registered[scope];
  }

  function interactionCallback(id: string, itoken: string, call: RestCall, onRecord: Recorder): { status: number; body?: unknown } {
    const state = interactions.get(id);
    const body = asRecord(call.body);
    const rec: CallbackRecord = {
      ...call,
      interactionId: id,
      token: itoken,
      type: typeof body.type === 'number' ? body.type : undefined,
      latencyMs: state ? call.at - state.dispatchedAt : -1,
    };
    onRecord(() => {
      Object.assign(rec, { status: call.status, errorCode: call.errorCode, errorMessage: call.errorMessage });
      callbacks.push(rec);
    });
    if (!state || state.token !== itoken) throw new DiscordError(404, 10062, 'Unknown interaction');
    if (state.acknowledged) throw new DiscordError(400, 40060, 'Interaction has already been acknowledged.');
    if (call.at - state.dispatchedAt > ackDeadlineMs) throw new DiscordError(404, 10062, 'Unknown interaction');
    const type = body.type;
    const data = asRecord(body.data);
    let msg: StandinMessage | undefined;
    const isComponent = state.payload.type === 3;
    switch (type) {
      case 4: // CHANNEL_MESSAGE_WITH_SOURCE
        msg = createMessage({ channelId: state.channelId, source: 'interaction', body: data, files: call.files, requireContent: true, interactionId: id });
        state.originalMessageId = msg.id;
        break;
      case 5: // DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
        msg = createMessage({
          channelId: state.channelId,
          source: 'interaction',
          body: { flags: Number(data.flags ?? 0) | LOADING },
          files: [],
          requireContent: false,
          interactionId: id,
        });
        msg.loading = true;
        state.originalMessageId = msg.id;
        break;
      case 6: // DEFERRED_UPDATE_MESSAGE
      case 7: // UPDATE_MESSAGE
        if (!isComponent)
          throw new DiscordError(400, 50035, 'Invalid Form Body', {
            type: { _errors: [{ code: 'INTERACTION_RESPONSE_TYPE_INVALID', message: 'Interaction response type is invalid for this interaction' }] },
          });
        {
          const target = messages.get(String(asRecord(state.payload.message).id));
          if (target && type === 7) applyEdit(target, data, call.files);
          state.originalMessageId = target?.id;
        }
        break;
      default:
        throw new DiscordError(400, 50035, 'Invalid Form Body', {
          type: { _errors: [{ code: 'BASE_TYPE_CHOICES', message: `Value must be one of (1, 4, 5, 6, 7, 8, 9, 10, 12).` }] },
        });
    }
    state.acknowledged = true;
    if (call.query.get('with_response') === 'true') {
      return {
        status: 200,
        body: {
          interaction: {
            id,
            type: state.payload.type,
            response_message_id: msg?.id ?? state.originalMessageId,
            response_message_loading: type === 5,
            response_message_ephemeral: msg?.ephemeral ?? false,
          },
          resource: { type, ...(msg ? { message: messageJson(msg) } : {}) },
        },
      };
    }
    return { status: 204 };
  }

  function webhook(
    method: string,
    app: string,
    wtoken: string,
    messageId: string | undefined,
    call: RestCall,
    onRecord: Recorder,
  ): { status: number; body?: unknown } {
    const state = interactionsByToken.get(wtoken);
    const rec: WebhookRecord = { ...call, applicationId: app, token: wtoken, messageId, interactionId: state?.id };
    onRecord(() => {
      Object.assign(rec, { status: call.status, errorCode: call.errorCode, errorMessage: call.errorMessage });
      webhookMessages.push(rec);
    });
    if (app !== applicationId) throw new DiscordError(404, 10015, 'Unknown Webhook');
    if (!state?.acknowledged || call.at - state.dispatchedAt > tokenLifetimeMs) {
      throw new DiscordError(401, 50027, 'Invalid Webhook Token');
    }
    if (messageId === undefined) {
      if (method !== 'POST') throw new DiscordError(405, 0, '405: Method Not Allowed');
      const msg = createMessage({
        channelId: state.channelId,
        source: 'followup',
        body: call.body,
        files: call.files,
        requireContent: true,
        interactionId: state.id,
      });
      return call.query.get('wait') === 'true' ? { status: 200, body: messageJson(msg) } : { status: 204 };
    }
    const id = messageId === '@original' ? state.originalMessageId : messageId;
    const msg = id ? messages.get(id) : undefined;
    // A click answered with type 6/7 owns the clicked message as its @original.
    if (!msg || msg.deleted || (msg.interactionId !== state.id && msg.id !== state.originalMessageId)) {
      throw new DiscordError(404, 10008, 'Unknown Message');
    }
    if (method === 'GET') return { status: 200, body: messageJson(msg) };
    if (method === 'DELETE') {
      msg.deleted = true;
      return { status: 204 };
    }
    if (method === 'PATCH') {
      applyEdit(msg, asRecord(call.body), call.files);
      return { status: 200, body: messageJson(msg) };
    }
    throw new DiscordError(405, 0, '405: Method Not Allowed');
  }

  function checkFiles(files: UploadedFile[]): void {
    for (const f of files) {
      if (f.bytes.length > uploadLimitBytes) throw new DiscordError(413, 40005, 'Request entity too large');
    }
  }

  function checkContent(content: unknown): string {
    if (content === undefined || content === null) return '';
    if (typeof content !== 'string')
      throw new DiscordError(400, 50035, 'Invalid Form Body', {
        content: { _errors: [{ code: 'STRING_TYPE_CONVERT', message: 'Could not interpret as string.' }] },
      });
    if (content.length > MESSAGE_CONTENT_MAX) {
      throw new DiscordError(400, 50035, 'Invalid Form Body', {
        content: { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: `Must be ${MESSAGE_CONTENT_MAX} or fewer in length.` }] },
      });
    }
    return content;
  }

  function newAttachments(body: Record<string, unknown>, files: UploadedFile[], existing: StandinAttachment[]): StandinAttachment[] {
    const fromFile = (f: UploadedFile): StandinAttachment => ({
      id: snowflake(),
      filename: f.filename,
      contentType: f.contentType,
      size: f.bytes.length,
      bytes: f.bytes,
    });
    const byIndex = new Map<string, UploadedFile>();
    for (const f of files) {
      const idx = /^files\[(\d+)\]$/.exec(f.field)?.[1];
      if (idx !== undefined) byIndex.set(idx, f);
    }
    if (!Array.isArray(body.attachments)) return [...existing, ...files.map(fromFile)];
    // `attachments` lists what the message keeps: existing ids, or indexes of new files[n].
    const out: StandinAttachment[] = [];
    for (const a of body.attachments) {
      const aid = String(asRecord(a).id);
      const kept = existing.find((e) => e.id === aid);
      if (kept) out.push(kept);
      else if (byIndex.has(aid)) out.push(fromFile(byIndex.get(aid)!));
    }
    return out;
  }

  function createMessage(args: {
    channelId: string;
    source: StandinMessage['source'];
    body: unknown;
    files: UploadedFile[];
    requireContent: boolean;
    interactionId?: string;
  }): StandinMessage {
    const body = asRecord(args.body);
    const content = checkContent(body.content);
    checkFiles(args.files);
    const mentions = computeMentions(content, body.allowed_mentions);
    const attachments = newAttachments(body, args.files, []);
    const components = checkComponents(body.components);
    const embeds = checkEmbeds(body.embeds);
    const hasEmbeds = embeds.length > 0;
    const hasComponents = components.length > 0;
    if (args.requireContent && !content && !attachments.length && !hasEmbeds && !hasComponents) {
      throw new DiscordError(400, 50006, 'Cannot send an empty message');
    }
    const flags = Number(body.flags ?? 0);
    const now = Date.now();
    const msg: StandinMessage = {
      id: snowflake(now),
      channelId: args.channelId,
      content,
      attachments,
      flags,
      ephemeral: (flags & EPHEMERAL) !== 0,
      interactionId: args.interactionId,
      source: args.source,
      mentions,
      components,
      embeds,
      allowedMentions: body.allowed_mentions,
      loading: false,
      deleted: false,
      edits: 0,
      createdAt: now,
      updatedAt: now,
    };
    messages.set(msg.id, msg);
    return msg;
  }

  function applyEdit(msg: StandinMessage, body: Record<string, unknown>, files: UploadedFile[]): void {
    checkFiles(files);
    const content = 'content' in body ? checkContent(body.content) : msg.content;
    const mentions = computeMentions(content, 'allowed_mentions' in body ? body.allowed_mentions : msg.allowedMentions);
    const attachments = newAttachments(body, files, msg.attachments);
    const components = 'components' in body ? checkComponents(body.components) : msg.components;
    const embeds = 'embeds' in body ? checkEmbeds(body.embeds) : msg.embeds;
    if (!content && !attachments.length && !embeds.length && !components.length && !msg.loading) {
      throw new DiscordError(400, 50006, 'Cannot send an empty message');
    }
    msg.content = content;
    msg.attachments = attachments;
    msg.components = components;
    msg.embeds = embeds;
    msg.mentions = mentions;
    if ('allowed_mentions' in body) msg.allowedMentions = body.allowed_mentions;
    msg.loading = false;
    msg.flags &= ~LOADING;
    msg.edits += 1;
    msg.updatedAt = Date.now();
  }

  function messageJson(msg: StandinMessage): Record<string, unknown> {
    const interaction = msg.interactionId ? interactions.get(msg.interactionId) : undefined;
    const user = interaction ? asRecord(asRecord(interaction.payload.member).user) : undefined;
    return {
      id: msg.id,
      type: msg.source === 'interaction' && interaction?.payload.type === 2 ? 20 : msg.source === 'followup' ? 19 : 0,
      channel_id: msg.channelId,
      guild_id: guildId,
      author: botUser,
      content: msg.content,
      timestamp: new Date(msg.createdAt).toISOString(),
      edited_timestamp: msg.edits ? new Date(msg.updatedAt).toISOString() : null,
      tts: false,
      mention_everyone: msg.mentions.everyone,
      mentions: msg.mentions.users.map((id) => ({ id, username: `user${id.slice(-4)}`, discriminator: '0', avatar: null, global_name: null })),
      mention_roles: msg.mentions.roles,
      attachments: msg.attachments.map((a) => ({
        id: a.id,
        filename: a.filename,
        size: a.size,
        url: `${base}/attachments/${msg.channelId}/${a.id}/${encodeURIComponent(a.filename)}`,
        proxy_url: `${base}/attachments/${msg.channelId}/${a.id}/${encodeURIComponent(a.filename)}`,
        content_type: a.contentType || undefined,
      })),
      embeds: msg.embeds,
      reactions: [],
      pinned: false,
      flags: msg.flags,
      components: msg.components,
      ...(msg.source !== 'channel' ? { webhook_id: applicationId, application_id: applicationId } : {}),
      ...(interaction && user
        ? {
            interaction_metadata: {
              id: interaction.id,
              type: interaction.payload.type,
              user,
              authorizing_integration_owners: interaction.payload.authorizing_integration_owners,
            },
          }
        : {}),
    };
  }

  // -------------------------------------------------------------------------
  // Gateway

  function gatewaySend(ws: WebSocket, payload: unknown): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(payload));
  }

  function sessionDispatch(session: Session, t: string, d: unknown): void {
    session.seq += 1;
    const entry = { s: session.seq, t, d };
    session.sent.push(entry);
    if (session.conn) gatewaySend(session.conn, { op: 0, ...entry });
  }

  function onGatewayConnection(ws: WebSocket, req: IncomingMessage): void {
    const conn: Conn = { ws, session: null };
    conns.add(conn);
    gatewayLog.push({ at: Date.now(), kind: 'connect' });
    changed();
    const query = new URL(req.url ?? '/', base).searchParams;
    if (query.get('v') !== null && query.get('v') !== '10') {
      ws.close(4012, 'Invalid API version');
      return;
    }
    if (query.get('encoding') !== null && query.get('encoding') !== 'json') {
      ws.close(4002, 'Decode error');
      return;
    }
    ws.on('close', (code) => {
      conns.delete(conn);
      if (conn.session && conn.session.conn === ws) conn.session.conn = null;
      gatewayLog.push({ at: Date.now(), kind: 'close', code, sessionId: conn.session?.id });
      changed();
    });
    ws.on('error', () => {});
    ws.on('message', (data: RawData, isBinary: boolean) => onGatewayMessage(conn, data, isBinary));
    gatewaySend(ws, { op: 10, d: { heartbeat_interval: heartbeatIntervalMs }, s: null, t: null });
  }

  function onGatewayMessage(conn: Conn, data: RawData, isBinary: boolean): void {
    const { ws } = conn;
    let payload: { op?: unknown; d?: unknown };
    try {
      if (isBinary) throw new Error('binary');
      payload = JSON.parse(data.toString()) as { op?: unknown; d?: unknown };
    } catch {
      ws.close(4002, 'Error while decoding payload.');
      return;
    }
    const d = asRecord(payload.d);
    switch (payload.op) {
      case 1: // Heartbeat
        gatewaySend(ws, { op: 11, d: null, s: null, t: null });
        return;
      case 2: {
        // Identify
        if (conn.session) {
          ws.close(4005, 'Already authenticated.');
          return;
        }
        if (d.token !== token) {
          ws.close(4004, 'Authentication failed.');
          return;
        }
        if (typeof d.intents !== 'number') {
          ws.close(4013, 'Invalid intent(s).');
          return;
        }
        // A single-shard bot that identifies again has abandoned its older sessions.
        for (const s of sessions.values()) s.invalid = true;
        const session: Session = { id: randomBytes(16).toString('hex'), seq: 0, sent: [], conn: ws, invalid: false };
        sessions.set(session.id, session);
        conn.session = session;
        gatewayLog.push({ at: Date.now(), kind: 'identify', sessionId: session.id });
        sessionDispatch(session, 'READY', {
          v: 10,
          user: botUser,
          guilds: [{ id: guildId, unavailable: true }],
          session_id: session.id,
          session_type: 'normal',
          resume_gateway_url: resumeGatewayUrl,
          shard: [0, 1],
          application: { id: applicationId, flags: 0 },
          private_channels: [],
          presences: [],
          relationships: [],
          guild_join_requests: [],
          geo_ordered_rtc_regions: ['local'],
          user_settings: {},
          auth_session_id_hash: randomBytes(8).toString('hex'),
        });
        sessionDispatch(session, 'GUILD_CREATE', guildPayload());
        changed();
        return;
      }
      case 6: {
        // Resume
        const session = typeof d.session_id === 'string' ? sessions.get(d.session_id) : undefined;
        if (d.token !== token) {
          ws.close(4004, 'Authentication failed.');
          return;
        }
        if (!session || session.invalid || typeof d.seq !== 'number' || d.seq > session.seq) {
          gatewayLog.push({ at: Date.now(), kind: 'resume-failed', sessionId: typeof d.session_id === 'string' ? d.session_id : undefined });
          changed();
          gatewaySend(ws, { op: 9, d: false, s: null, t: null });
          return;
        }
        if (session.conn && session.conn !== ws) session.conn.close(4000, 'Session resumed elsewhere');
        session.conn = ws;
        conn.session = session;
        const seq = d.seq;
        for (const entry of session.sent) if (entry.s > seq) gatewaySend(ws, { op: 0, ...entry });
        sessionDispatch(session, 'RESUMED', null);
        gatewayLog.push({ at: Date.now(), kind: 'resume', sessionId: session.id });
        changed();
        return;
      }
      case 3: // Presence update
      case 4: // Voice state update
      case 8: // Request guild members
        if (!conn.session) ws.close(4003, 'Not authenticated.');
        return;
      default:
        ws.close(4001, 'Unknown opcode.');
    }
  }

  function activeSessions(): Session[] {
    return [...sessions.values()].filter((s) => !s.invalid);
  }

  // -------------------------------------------------------------------------
  // Interactions

  function userObject(id: string, name: string, globalName?: string) {
    return {
      id,
      username: name,
      global_name: globalName ?? name,
      discriminator: '0',
      avatar: null,
      public_flags: 0,
      flags: 0,
      primary_guild: null,
      avatar_decoration_data: null,
      collectibles: null,
      clan: null,
    };
  }

  function optionsFor(input: CommandInteractionInput): unknown[] | undefined {
    if (input.rawOptions) return input.rawOptions;
    const opts = Object.entries(input.options ?? {}).map(([name, value]) => ({
      name,
      type: typeof value === 'string' ? 3 : typeof value === 'boolean' ? 5 : Number.isInteger(value) ? 4 : 10,
      value,
    }));
    if (input.subcommand !== undefined) return [{ type: 1, name: input.subcommand, options: opts }];
    return opts.length ? opts : undefined;
  }

  function dispatchInteraction(input: InteractionInput): DispatchedInteraction {
    const now = Date.now();
    const id = snowflake(now);
    const itoken = Buffer.from(`interaction:${id}:${randomToken(48)}`).toString('base64url');
    const userId = input.userId ?? snowflake(now - 86_400_000 * 100);
    const userName = input.userName ?? `user${userId.slice(-4)}`;
    const targetChannel = input.channelId ?? channelId;
    const member = {
      user: userObject(userId, userName, 'globalName' in input ? input.globalName : undefined),
      roles: [],
      premium_since: null,
      permissions: input.permissions ?? MEMBER_PERMISSIONS,
      pending: false,
      nick: null,
      mute: false,
      joined_at: new Date(now - 86_400_000 * 30).toISOString(),
      flags: 0,
      deaf: false,
      communication_disabled_until: null,
      banner: null,
      avatar: null,
      unusual_dm_activity_until: null,
    };
    let data: Record<string, unknown>;
    let type: number;
    let message: Record<string, unknown> | undefined;
    if (input.type === 'component') {
      type = 3;
      const target = messages.get(input.messageId);
      if (!target || target.deleted) throw new Error(`stand-in: no message ${input.messageId} to click on`);
      if (!input.unlisted) {
        const button = buttonsOf(target).find((b) => b.customId === input.customId);
        if (!button) {
          const present =
            buttonsOf(target)
              .map((b) => b.customId ?? b.url)
              .join(', ') || 'none';
          throw new Error(`stand-in: message ${input.messageId} has no component "${input.customId}" to click (it has: ${present})`);
        }
        if (button.disabled) throw new Error(`stand-in: the button "${input.customId}" is disabled`);
      }
      if (target.ephemeral) {
        // Only the user an ephemeral message was sent to sees it (and its buttons).
        const owner = target.interactionId ? interactions.get(target.interactionId) : undefined;
        const ownerId = owner ? String(asRecord(asRecord(owner.payload.member).user).id) : undefined;
        if (ownerId !== userId) throw new Error(`stand-in: user ${userId} cannot see the ephemeral message ${input.messageId}`);
      }
      message = messageJson(target);
      data = {
        custom_id: input.customId,
        component_type: input.componentType ?? 2,
        ...(input.values ? { values: input.values } : {}),
      };
    } else {
      type = 2;
      const cmd = registered.guild.find((c) => c.name === input.name) ?? registered.global.find((c) => c.name === input.name);
      const options = optionsFor(input);
      data = {
        id: (cmd?.id as string | undefined) ?? snowflake(now - 86_400_000),
        name: input.name,
        type: 1,
        ...(options ? { options } : {}),
        ...(cmd && registered.guild.includes(cmd) ? { guild_id: guildId } : {}),
      };
    }
    const payload: Record<string, unknown> = {
      id,
      application_id: applicationId,
      type,
      data,
      guild: { id: guildId, locale: 'en-US', features: [] },
      guild_id: guildId,
      channel: { ...channelObject(targetChannel), permissions: input.permissions ?? MEMBER_PERMISSIONS },
      channel_id: targetChannel,
      member,
      token: itoken,
      version: 1,
      app_permissions: ADMINISTRATOR_PERMISSIONS,
      locale: ('locale' in input && input.locale) || 'en-US',
      guild_locale: 'en-US',
      entitlements: [],
      authorizing_integration_owners: { '0': guildId },
      context: 0,
      attachment_size_limit: opts.advertisedUploadLimitBytes ?? uploadLimitBytes,
      ...(message ? { message } : {}),
    };
    const state: InteractionState = {
      id,
      token: itoken,
      dispatchedAt: now,
      payload,
      acknowledged: false,
      channelId: targetChannel,
    };
    interactions.set(id, state);
    interactionsByToken.set(itoken, state);
    registerSecret(itoken);
    const targets = activeSessions();
    if (!targets.length) throw new Error('stand-in: no gateway session to dispatch the interaction to (is the bot logged in?)');
    // Sessions that are disconnected buffer the event and replay it on RESUME, like Discord.
    for (const s of targets) sessionDispatch(s, 'INTERACTION_CREATE', payload);
    changed();
    return { id, token: itoken, payload };
  }

  // -------------------------------------------------------------------------
  // Test controls

  function waitFor<T>(pred: () => T | undefined | null | false, timeoutMs = 5000, what: string | (() => string) = 'condition'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = (): boolean => {
        let value: T | undefined | null | false;
        try {
          value = pred();
        } catch (error) {
          cleanup();
          reject(error as Error);
          return true;
        }
        if (value) {
          cleanup();
          resolve(value);
          return true;
        }
        return false;
      };
      const onChange = () => void check();
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`discord stand-in: timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        changes.off('change', onChange);
      };
      if (!check()) changes.on('change', onChange);
    });
  }

  function dropGateway(code = 4000): void {
    for (const c of conns) c.ws.close(code, 'stand-in: dropped');
  }

  function setGatewayDown(down: boolean): void {
    gatewayDown = down;
    if (down) for (const c of conns) c.ws.terminate();
  }

  async function close(): Promise<void> {
    for (const c of conns) c.ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
      for (const s of rawSockets) s.destroy();
    });
  }

  return {
    apiUrl,
    gatewayUrl,
    token,
    applicationId,
    guildId,
    channelId,
    uploadLimitBytes,
    dispatchInteraction,
    releaseFiles() {
      const none = Buffer.alloc(0);
      for (const call of requests) for (const f of call.files ?? []) f.bytes = none;
      for (const m of messages.values()) for (const a of m.attachments) a.bytes = none;
    },
    requests,
    callbacks,
    webhookMessages,
    channelMessages,
    commandRegistrations,
    gatewayLog,
    messages,
    originalMessage(interactionId) {
      const state = interactions.get(interactionId);
      return state?.originalMessageId ? messages.get(state.originalMessageId) : undefined;
    },
    channelPosts(cid) {
      return [...messages.values()].filter((m) => m.source === 'channel' && (cid === undefined || m.channelId === cid));
    },
    commands(scope) {
      return registered[scope];
    },
    liveSessions() {
      return [...conns].filter((c) => c.session && c.session.conn === c.ws && c.ws.readyState === WebSocket.OPEN).length;
    },
    waitFor,
    ageInteraction(interactionId, ms) {
      const state = interactions.get(interactionId);
      if (!state) throw new Error(`stand-in: no interaction ${interactionId}`);
      state.dispatchedAt -= ms;
    },
    dropGateway,
    setGatewayDown,
    close,
  };
}
