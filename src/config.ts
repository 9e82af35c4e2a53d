import { z } from 'zod';

/** A bad value stops the process with one line naming the variable; several bad values, one line each. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const optionalString = z
  .string()
  .trim()
  .optional()
  .transform((v) => (v === '' ? undefined : v));

/** An empty value (`VAR=` in .env or --env-file) counts as unset, as for the numbers below. */
const orDefault = <T extends z.ZodType>(fallback: string, schema: T) =>
  z.preprocess((v) => (v === undefined || (typeof v === 'string' && v.trim() === '') ? fallback : v), schema);

const text = (fallback: string) => orDefault(fallback, z.string().trim());

const url = (fallback: string) =>
  orDefault(
    fallback,
    z
      .string()
      .trim()
      .refine((v) => /^https?:\/\/[^\s/]+/.test(v), { message: 'must be an http(s) URL' }),
  );

const number = (fallback: number, min: number, max: number, int = true) => {
  const base = z.coerce.number({ message: 'must be a number' });
  const bounded = (int ? base.int({ message: 'must be a whole number' }) : base)
    .min(min, { message: `must be at least ${min}` })
    .max(max, { message: `must be at most ${max}` });
  return z.preprocess((v) => (v === undefined || (typeof v === 'string' && v.trim() === '') ? fallback : v), bounded);
};

const portMapping = orDefault(
  '5000:8080',
  z
    .string()
    .trim()
    .transform((value, ctx) => {
      const match = /^(\d{1,5}):(\d{1,5})$/.exec(value);
      const host = Number(match?.[1]);
      const container = Number(match?.[2]);
      if (!match || host < 1 || host > 65535 || container < 1 || container > 65535) {
        ctx.addIssue({ code: 'custom', message: `must look like 5000:8080, got "${value}"` });
        return z.NEVER;
      }
      return { host, container };
    }),
);

const adminIds = z
  .string()
  .optional()
  .transform((value, ctx) => {
    const ids = (value ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    for (const id of ids) {
      if (!/^(discord|slack):\S+$/.test(id)) {
        ctx.addIssue({ code: 'custom', message: `entries must look like discord:<user id> or slack:<user id>, got "${id}"` });
        return z.NEVER;
      }
    }
    return ids;
  });

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
  message: 'must be one of fatal, error, warn, info, debug, trace, silent',
});

/** Every configuration variable (the README's configuration reference, .env.example). Keys are the environment names. */
const envSchema = z.object({
  FAIR_SERVER_URL: url('https://faircompute.com:8000'),
  FAIR_EMAIL: optionalString,
  FAIR_PASSWORD: optionalString,
  FAIR_NODE: text('any'),
  FAIR_IMAGE: text('faircompute/diffusion-octo:v1'),
  FAIR_RUNTIME: text('nvidia'),
  FAIR_PORTS: portMapping,
  INFERENCE_URL: optionalString.refine((v) => v === undefined || /^https?:\/\/[^\s/]+/.test(v), {
    message: 'must be an http(s) URL',
  }),
  STARTUP_TIMEOUT_S: number(600, 1, 86_400, false),
  INFER_TIMEOUT_S: number(120, 1, 3_600, false),
  IDLE_SHUTDOWN_MIN: number(20, 0, 10_080, false),
  QUEUE_CONCURRENCY: number(1, 1, 64),
  QUEUE_MAX: number(100, 1, 100_000),
  USER_MAX_PENDING: number(3, 1, 1_000),
  ADMIN_IDS: adminIds,
  DISCORD_TOKEN: optionalString,
  DISCORD_APP_ID: optionalString,
  DISCORD_GUILD_ID: optionalString,
  DISCORD_API_URL: url('https://discord.com/api'),
  SLACK_BOT_TOKEN: optionalString,
  SLACK_SIGNING_SECRET: optionalString,
  SLACK_APP_TOKEN: optionalString,
  SLACK_PORT: number(3000, 0, 65_535),
  SLACK_API_URL: url('https://slack.com/api/'),
  METRICS_PORT: z.preprocess(
    (v) => (v === undefined || v === '' ? undefined : v),
    z.coerce
      .number({ message: 'must be a number' })
      .int({ message: 'must be a whole number' })
      .min(0, { message: 'must be at least 0' })
      .max(65_535, { message: 'must be at most 65535' })
      .optional(),
  ),
  DATA_DIR: text('./data'),
  INSTANCE_LEASE_S: number(15, 1, 3_600, false),
  LOG_LEVEL: z.preprocess((v) => (v === undefined || v === '' ? 'info' : v), logLevel),
});

export type Env = Record<string, string | undefined>;

export interface Config {
  fairServerUrl: string;
  fairEmail?: string;
  fairPassword?: string;
  fairNode: string;
  fairImage: string;
  fairRuntime: string;
  fairPorts: { host: number; container: number };
  inferenceUrl?: string;
  startupTimeoutMs: number;
  inferTimeoutMs: number;
  /** 0 means never. */
  idleShutdownMs: number;
  queueConcurrency: number;
  queueMax: number;
  userMaxPending: number;
  adminIds: string[];
  discordToken?: string;
  discordAppId?: string;
  discordGuildId?: string;
  discordApiUrl: string;
  slackBotToken?: string;
  slackSigningSecret?: string;
  slackAppToken?: string;
  slackPort: number;
  slackApiUrl: string;
  /** Off when unset. */
  metricsPort?: number;
  dataDir: string;
  /** How long a crashed bot's claim on DATA_DIR outlives it (renewed every third of it). */
  instanceLeaseMs: number;
  logLevel: z.infer<typeof logLevel>;
  /** Values that must never reach a log line or a message. */
  secrets: string[];
}

/** Parses the environment once. Throws ConfigError with one line per bad variable, each naming it. */
export function loadConfig(env: Env): Config {
  const parsed = envSchema.safeParse(env);
  const problems: string[] = [];
  if (!parsed.success) {
    // One line per variable: its first problem is the one to fix first.
    const seen = new Set<string>();
    for (const issue of parsed.error.issues) {
      const variable = String(issue.path[0] ?? 'configuration');
      if (seen.has(variable)) continue;
      seen.add(variable);
      problems.push(`${variable} ${issue.message}`);
    }
  }
  // The checks across variables read the raw values, so they are reported with the others.
  const set = (name: string) => typeof env[name] === 'string' && env[name]!.trim() !== '';
  if (set('FAIR_EMAIL') !== set('FAIR_PASSWORD')) {
    const [missing, present] = set('FAIR_EMAIL') ? ['FAIR_PASSWORD', 'FAIR_EMAIL'] : ['FAIR_EMAIL', 'FAIR_PASSWORD'];
    problems.push(`${missing} must be set together with ${present}`);
  }
  if (set('SLACK_BOT_TOKEN') && !set('SLACK_APP_TOKEN') && !set('SLACK_SIGNING_SECRET')) {
    problems.push('SLACK_SIGNING_SECRET must be set for Slack HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)');
  }
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems.join('\n'));
  const e = parsed.data;
  const secrets = [e.FAIR_PASSWORD, e.DISCORD_TOKEN, e.SLACK_BOT_TOKEN, e.SLACK_SIGNING_SECRET, e.SLACK_APP_TOKEN].filter(
    (s): s is string => typeof s === 'string' && s.length >= 4,
  );
  return {
    fairServerUrl: e.FAIR_SERVER_URL.replace(/\/+$/, ''),
    fairEmail: e.FAIR_EMAIL,
    fairPassword: e.FAIR_PASSWORD,
    fairNode: e.FAIR_NODE,
    fairImage: e.FAIR_IMAGE,
    fairRuntime: e.FAIR_RUNTIME,
    fairPorts: e.FAIR_PORTS,
    inferenceUrl: e.INFERENCE_URL?.replace(/\/+$/, ''),
    startupTimeoutMs: e.STARTUP_TIMEOUT_S * 1000,
    inferTimeoutMs: e.INFER_TIMEOUT_S * 1000,
    idleShutdownMs: e.IDLE_SHUTDOWN_MIN * 60_000,
    queueConcurrency: e.QUEUE_CONCURRENCY,
    queueMax: e.QUEUE_MAX,
    userMaxPending: e.USER_MAX_PENDING,
    adminIds: e.ADMIN_IDS,
    discordToken: e.DISCORD_TOKEN,
    discordAppId: e.DISCORD_APP_ID,
    discordGuildId: e.DISCORD_GUILD_ID,
    discordApiUrl: e.DISCORD_API_URL.replace(/\/+$/, ''),
    slackBotToken: e.SLACK_BOT_TOKEN,
    slackSigningSecret: e.SLACK_SIGNING_SECRET,
    slackAppToken: e.SLACK_APP_TOKEN,
    slackPort: e.SLACK_PORT,
    slackApiUrl: e.SLACK_API_URL.endsWith('/') ? e.SLACK_API_URL : `${e.SLACK_API_URL}/`,
    metricsPort: e.METRICS_PORT,
    dataDir: e.DATA_DIR,
    instanceLeaseMs: e.INSTANCE_LEASE_S * 1000,
    logLevel: e.LOG_LEVEL,
    secrets,
  };
}

/** Whether this bot may start servers on Fair, or only uses INFERENCE_URL. */
export function canManageServer(config: Config): boolean {
  return config.fairEmail !== undefined && config.fairPassword !== undefined;
}

const NO_GPU = 'FAIR_EMAIL and FAIR_PASSWORD (to start a GPU server on Fair) or INFERENCE_URL (a diffusion server already running) must be set';
const NO_PLATFORM = 'DISCORD_TOKEN or SLACK_BOT_TOKEN must be set: the bot needs a chat platform to serve';

const hasGpu = (config: Config) => canManageServer(config) || config.inferenceUrl !== undefined;

/**
 * The CLI's imagine and gpu need a GPU server: one to start on Fair, or a running one.
 * Without either every job would fail ("no GPU server is configured"), so it is a
 * configuration error.
 */
export function requireGpu(config: Config): void {
  if (!hasGpu(config)) throw new ConfigError(NO_GPU);
}

/** The bot needs a GPU server and a chat platform; both missing are both reported. */
export function requireBotSetup(config: Config): void {
  const problems = [...(config.discordToken || config.slackBotToken ? [] : [NO_PLATFORM]), ...(hasGpu(config) ? [] : [NO_GPU])];
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
}
